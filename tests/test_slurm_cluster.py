"""A real SLURM cluster on this machine (tests/slurm/local_cluster.sh): what the slurm profile asks for is what
the scheduler allocates, every job runs through sbatch, and cancelled or failed jobs are retried or recomputed.

The cluster is one node that advertises as many CPUs, as much memory and as many (fake) GPUs as the largest
allocation in profiles/slurm, so the profile is submitted unchanged; profiles/slurm-local only switches the
status checks to squeue (there is no accounting database) and shortens the waits. What each job asked for is
read back from the scheduler with `scontrol show job`, which keeps finished jobs for MinJobAge (600 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from repairrl.records import read_jsonl

from .conftest import REPO_ROOT

CLUSTER_SCRIPT = REPO_ROOT / "tests" / "slurm" / "local_cluster.sh"
SLURM_PROFILE = REPO_ROOT / "profiles" / "slurm"
LOCAL_PROFILE = REPO_ROOT / "profiles" / "slurm-local"
BOTH_PROFILES = ["--profile", str(SLURM_PROFILE), "--profile", str(LOCAL_PROFILE)]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# A hung slurm executor ignores SIGTERM but stops on SIGINT (and then cancels its jobs).
RUN_TIMEOUT_S = 150


def profile_allocations(profile_dir: Path = SLURM_PROFILE) -> tuple[dict, dict]:
    """(default-resources, set-resources) of a profile, as the YAML says them."""
    profile = yaml.safe_load((profile_dir / "config.yaml").read_text())
    return profile.get("default-resources") or {}, profile.get("set-resources") or {}


def expected_allocation(rule: str) -> dict:
    """What profiles/slurm maps a rule to: its set-resources over the profile's default-resources."""
    defaults, per_rule = profile_allocations()
    resources = {**defaults, **per_rule.get(rule, {})}
    return {
        "gpus": int(resources.get("gpu", 0)),
        "cpus": int(resources.get("cpus_per_task", 1)),
        "mem_mb": int(resources["mem_mb"]),
        "time_min": int(resources["runtime"]),
    }


def workflow_rules() -> set[str]:
    return {
        match.group(1)
        for path in (REPO_ROOT / "workflow").rglob("*.smk")
        for match in re.finditer(r"^rule (\w+):", path.read_text(), re.MULTILINE)
    }


def test_slurm_profile_allocates_every_rule_and_only_rules():
    """A rule missing from set-resources runs on the cluster with the 1-CPU, 4 GB default; an entry for no
    rule is a rename that was not followed."""
    _, per_rule = profile_allocations()
    rules = workflow_rules() - {"all"}
    unallocated, unknown = sorted(rules - set(per_rule)), sorted(set(per_rule) - rules)
    assert not unallocated, f"rules without an allocation in profiles/slurm/config.yaml: {unallocated}"
    assert not unknown, f"profiles/slurm/config.yaml allocates rules that do not exist: {unknown}"


def node_size_for_profile() -> dict[str, str]:
    """Environment for local_cluster.sh: a node large enough for every allocation of profiles/slurm."""
    defaults, per_rule = profile_allocations()
    allocations = [defaults, *per_rule.values()]
    return {
        "LOCAL_SLURM_CPUS": str(max(int(a.get("cpus_per_task", 1)) for a in allocations)),
        "LOCAL_SLURM_MEM_MB": str(max(int(a.get("mem_mb", 1000)) for a in allocations)),
        # At least 2 for the tiny workflow's GPU rule.
        "LOCAL_SLURM_GPUS": str(max(2, *(int(a.get("gpu", 0)) for a in allocations))),
    }


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (it installs slurm-wlm and starts its daemons)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("slurm-wlm is not installed and there is no apt-get to install it")
    started = subprocess.run(
        [str(CLUSTER_SCRIPT), "start"],
        check=False,
        env={**os.environ, **node_size_for_profile()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert started.returncode == 0, f"local cluster did not start:\n{started.stderr[-4000:]}"
        yield
    finally:
        subprocess.run(
            [str(CLUSTER_SCRIPT), "stop"], check=False, capture_output=True, text=True, timeout=120
        )


@dataclass
class SchedulerJob:
    """One job as the SLURM controller recorded it."""

    job_id: int
    rule: str
    state: str
    partition: str
    gpus: int
    cpus: int
    mem_mb: int
    time_min: int

    @property
    def allocation(self) -> dict:
        return {"gpus": self.gpus, "cpus": self.cpus, "mem_mb": self.mem_mb, "time_min": self.time_min}


def _parse_scontrol_line(line: str) -> dict[str, str]:
    fields = re.split(r"\s+(?=[A-Za-z][\w/:]*=)", line.strip())
    return dict(field.split("=", 1) for field in fields if "=" in field)


def _memory_mb(value: str) -> int:
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", value).groups()
    return round(float(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit])


def _minutes(value: str) -> int:
    """SLURM time limit ([days-]hours:minutes:seconds) in minutes."""
    days, _, clock = value.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def scheduler_jobs(workdir: Path) -> list[SchedulerJob]:
    """Jobs submitted from `workdir` (the executor passes it as sbatch -D), oldest first."""
    shown = subprocess.run(
        ["scontrol", "--oneliner", "show", "job"], capture_output=True, text=True, check=True
    )
    jobs = []
    for line in shown.stdout.splitlines():
        record = _parse_scontrol_line(line)
        if record.get("WorkDir") != str(workdir):
            continue
        # The slurm executor comments each job with "rule_<name>" or "rule_<name>_wildcards_<values>".
        rule = record.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]
        gpus = re.search(r"gpu[:=](\d+)", record.get("TresPerJob", ""))
        jobs.append(
            SchedulerJob(
                job_id=int(record["JobId"]),
                rule=rule,
                state=record["JobState"],
                partition=record["Partition"],
                gpus=int(gpus.group(1)) if gpus else 0,
                cpus=int(record["CPUs/Task"]),
                mem_mb=_memory_mb(record["MinMemoryNode"]),
                time_min=_minutes(record["TimeLimit"]),
            )
        )
    return sorted(jobs, key=lambda job: job.job_id)


def start_snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    # Jobs inherit the submitting shell's environment (sbatch --export=ALL) and call `python -m repairrl...`:
    # run as a user does, with the virtual environment activated.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.Popen(
        [*SNAKEMAKE, *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PATH": path, **(env or {})},
        start_new_session=True,
    )


def finish_snakemake(
    process: subprocess.Popen, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Wait for a run; a run past `timeout` is interrupted (SIGINT, which cancels its SLURM jobs) and fails."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = interrupt(process)
        pytest.fail(f"snakemake did not finish within {timeout}s:\n{output[-6000:]}")
    except BaseException:
        # The test itself was interrupted or failed: do not leave a run (and its jobs) behind.
        interrupt(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


def interrupt(process: subprocess.Popen) -> str:
    """Stop a run the way that works (SIGINT: it cancels its SLURM jobs), then SIGKILL; its output so far."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output


def run_snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: float = RUN_TIMEOUT_S):
    return finish_snakemake(start_snakemake(workdir, *args, env=env), timeout=timeout)


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"snakemake exited before {what}:\n{process.stdout.read()[-6000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


TWO_RULES = """
rule all:
    input: "summary.txt"

rule train:
    output: "devices.txt"
    resources: gpu=2, cpus_per_task=1, mem_mb=700, runtime=5
    shell: "echo $CUDA_VISIBLE_DEVICES > {output}"

rule summarize:
    input: "devices.txt"
    output: "summary.txt"
    resources: cpus_per_task=2, mem_mb=1500, runtime=75
    shell: "cp {input} {output}"
"""


@pytest.mark.slurm
def test_every_job_runs_through_sbatch_with_the_rules_allocation(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TWO_RULES)
    completed = run_snakemake(tmp_path, "--executor", "slurm", "--profile", str(LOCAL_PROFILE))
    assert completed.returncode == 0, completed.stdout[-6000:]

    jobs = scheduler_jobs(tmp_path)
    assert [(job.rule, job.state) for job in jobs] == [("train", "COMPLETED"), ("summarize", "COMPLETED")]
    assert jobs[0].allocation == {"gpus": 2, "cpus": 1, "mem_mb": 700, "time_min": 5}
    assert jobs[1].allocation == {"gpus": 0, "cpus": 2, "mem_mb": 1500, "time_min": 75}
    # SLURM bound two of its GPUs to the job, and the job's snakemake saw them.
    assert (tmp_path / "summary.txt").read_text().strip() == "0,1"


# Holds its output half-written until the test creates release.flag (a retry finds it and goes straight on).
SLOW_RULE = """
rule all:
    input: "slow.txt"

rule slow:
    output: "slow.txt"
    resources: cpus_per_task=1, mem_mb=500, runtime=5
    shell: "echo partial > {output}; while [ ! -e release.flag ]; do sleep 0.5; done; echo done >> {output}"
"""


def cancel_when_running(process: subprocess.Popen, workdir: Path, rule: str) -> SchedulerJob:
    """Wait until the rule's job has started writing its output, then scancel it."""
    try:
        running = wait_for(
            lambda: (
                (workdir / f"{rule}.txt").exists()
                and [job for job in scheduler_jobs(workdir) if job.rule == rule and job.state == "RUNNING"]
            ),
            timeout=90,
            what=f"a running {rule} job",
            process=process,
        )[0]
        subprocess.run(["scancel", str(running.job_id)], check=True)
        wait_for(
            lambda: any(
                job.job_id == running.job_id and job.state == "CANCELLED" for job in scheduler_jobs(workdir)
            ),
            timeout=30,
            what="the cancellation",
        )
    except BaseException:
        interrupt(process)
        raise
    return running


@pytest.mark.slurm
def test_cancelled_job_is_retried_and_the_workflow_completes(cluster, tmp_path):
    retries = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text()).get("retries", 0)
    assert retries >= 1, "profiles/slurm should retry jobs that the cluster cancels or preempts"
    (tmp_path / "Snakefile").write_text(SLOW_RULE)
    process = start_snakemake(tmp_path, *BOTH_PROFILES)
    cancelled = cancel_when_running(process, tmp_path, "slow")
    (tmp_path / "release.flag").touch()
    completed = finish_snakemake(process)

    assert completed.returncode == 0, completed.stdout[-6000:]
    assert [(job.rule, job.state) for job in scheduler_jobs(tmp_path)] == [
        ("slow", "CANCELLED"),
        ("slow", "COMPLETED"),
    ]
    assert scheduler_jobs(tmp_path)[0].job_id == cancelled.job_id
    # The retry started from scratch: the cancelled attempt's half-written output did not survive as a result.
    assert (tmp_path / "slow.txt").read_text() == "partial\ndone\n"


# Two ways a job fails half-way through writing its output: its command exits non-zero, or SLURM cancels it.
TWO_FAILURES = """
rule all:
    input: "exit_status.txt", "cancelled.txt"

rule exit_status:
    output: "exit_status.txt"
    resources: cpus_per_task=1, mem_mb=500, runtime=5
    shell: "echo partial > {output}; test -e release.flag; echo done >> {output}"

rule cancelled:
    output: "cancelled.txt"
    resources: cpus_per_task=1, mem_mb=500, runtime=5
    shell: "echo partial > {output}; while [ ! -e release.flag ]; do sleep 0.5; done; echo done >> {output}"
"""


@pytest.mark.slurm
def test_partial_outputs_of_failed_jobs_are_not_taken_for_results(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TWO_FAILURES)
    no_retries = [*BOTH_PROFILES, "--retries", "0", "--keep-going"]
    process = start_snakemake(tmp_path, *no_retries)
    cancel_when_running(process, tmp_path, "cancelled")
    failed = finish_snakemake(process)
    assert failed.returncode != 0, failed.stdout[-6000:]
    states = {job.rule: job.state for job in scheduler_jobs(tmp_path)}
    assert states == {"exit_status": "FAILED", "cancelled": "CANCELLED"}
    # Snakemake removes a failed job's outputs; a cancelled job's may survive, but only as its partial text.
    assert not (tmp_path / "exit_status.txt").exists()
    assert (
        not (tmp_path / "cancelled.txt").exists() or (tmp_path / "cancelled.txt").read_text() == "partial\n"
    )

    # Whatever the failed jobs left behind, the next run computes both outputs again instead of accepting them.
    (tmp_path / "release.flag").touch()
    rerun = run_snakemake(tmp_path, *no_retries)
    assert rerun.returncode == 0, rerun.stdout[-6000:]
    reruns = [(job.rule, job.state) for job in scheduler_jobs(tmp_path)[2:]]
    assert sorted(reruns) == [("cancelled", "COMPLETED"), ("exit_status", "COMPLETED")]
    for name in ("exit_status.txt", "cancelled.txt"):
        assert (tmp_path / name).read_text() == "partial\ndone\n"


# Every rule of the embedded default still runs, each on the least work that exercises it: two training tasks,
# one task per benchmark, one SFT and one GRPO step, episodes of one short tool call.
SMALLEST_EMBEDDED_RUN = {
    "datasets": {
        "mini_train": {"filters": {"split": "train", "limit": 2}},
        "mini_eval_python": {"filters": {"split": "eval", "language": "python", "limit": 1}},
        "mini_eval_java": {"filters": {"split": "eval", "language": "java", "limit": 1}},
    },
    "agent": {"max_tool_calls": 1, "max_new_tokens": 16, "max_tokens": 2048, "workers": 2},
    # Criterion resolved: the SFT rollouts are graded (rule sft_grade) like the evaluations.
    "sft": {"samples": 1, "criterion": "resolved", "train": {"max_steps": 1, "save_steps": 1, "max_length": 512}},
    # The SFT model is trained (GRPO starts from it) but not evaluated: the evaluation rules run for base and grpo.
    "evaluation": {"models": ["base", "grpo"]},
    "grpo": {
        "train": {"max_steps": 1, "save_steps": 1, "num_generations": 2, "tasks_per_step": 1,
                  "max_completion_length": 128, "episode_max_tool_calls": 1},
    },
}


def merged(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def run_embedded_dag(
    tmp_path: Path, *targets: str, timeout: float, overrides: dict | None = None
) -> list[SchedulerJob]:
    """Run the embedded default config through profiles/slurm (+ the local override); the jobs it submitted."""
    if not (REPO_ROOT / "workflow" / "Snakefile").is_file():
        pytest.skip("workflow/Snakefile does not exist yet")
    config = merged(yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text()), overrides or {})
    config.update(results_dir=f"{tmp_path}/results", logs_dir=f"{tmp_path}/logs")
    config["cache"].update(dir=f"{tmp_path}/cache", workers=2)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    partitions = {"REPAIRRL_SLURM_PARTITION": "main", "REPAIRRL_SLURM_GPU_PARTITION": "gpu"}
    # Jobs run with the repository as working directory (the executor's sbatch -D), like other runs from
    # there: this run's jobs are the ones submitted after it started.
    earlier = len(scheduler_jobs(REPO_ROOT))
    completed = run_snakemake(
        REPO_ROOT,
        *BOTH_PROFILES,
        "--configfile",
        str(tmp_path / "config.yaml"),
        *targets,
        env=partitions,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-6000:]

    jobs = scheduler_jobs(REPO_ROOT)[earlier:]
    assert jobs, completed.stdout[-6000:]
    assert {job.state for job in jobs} == {"COMPLETED"}, [(job.rule, job.state) for job in jobs]
    # Every job Snakemake ran outside the local process went through sbatch (rule `all` is local).
    submitted = {match.group(1) for match in re.finditer(r"^rule (\w+):$", completed.stdout, re.MULTILINE)}
    assert {job.rule for job in jobs} == submitted
    for job in jobs:
        assert job.allocation == expected_allocation(job.rule), job.rule
        assert job.partition == ("gpu" if job.gpus else "main"), job.rule
    return jobs


@pytest.mark.slurm
def test_data_stage_asks_the_cluster_for_the_profiles_allocations(cluster, tmp_path):
    jobs = run_embedded_dag(tmp_path, "--until", "prepare_model", "cache", timeout=300)
    assert {"prepare_model", "fetch", "cache"} <= {job.rule for job in jobs}


@pytest.mark.slurm
@pytest.mark.slow
def test_every_rule_of_the_embedded_dag_runs_on_the_cluster_with_its_allocation(cluster, tmp_path):
    # The file-level repair task: its DAG has every rule (the repository cache and test grading included) and
    # its single-turn episodes are the cheapest way through all of them; the agent's DAG runs in test_workflow.
    jobs = run_embedded_dag(tmp_path, timeout=1500, overrides={**SMALLEST_EMBEDDED_RUN, "task": "file_repair"})
    rules_run = {job.rule for job in jobs}
    profile = yaml.safe_load((REPO_ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert rules_run == set(profile["set-resources"]), "every rule of the DAG goes through sbatch once at least"
    gpus = {job.rule: job.gpus for job in jobs}
    assert (gpus["sft_rollouts"], gpus["sft"], gpus["grpo"], gpus["evaluate_shard"]) == (1, 2, 3, 1)
    results = tmp_path / "results" / "embedded" / "file_repair"
    report = (results / "report" / "report.md").read_text()
    assert "## File-level repair (search/replace edits, one turn)" in report
    assert "| benchmark | base | grpo |" in report and "edits applied" in report
    from repairrl.tasks import read_tasks

    train = read_tasks(results / "data" / "mini_train" / "tasks.jsonl")
    assert len(train) == 2 and all(task.changes_one_existing_file() for task in train), "file-level training data"
    for model in ("base", "grpo"):
        model_dir = results / "eval" / "mini_eval_python" / model
        journal = read_jsonl(model_dir / "journal" / "trajectories-0.jsonl")
        assert [(r["task_kind"], r["tokens"]["turns"], r["tool_calls"]) for r in journal] == [("file_repair", 1, [])]
        assert (model_dir / "grading" / f"{model}.eval.json").is_file(), "graded with the tests, like the agent"
    summary = json.loads((results / "models" / "grpo" / "train_summary.json").read_text())
    assert summary["task"] == "file_repair" and summary["global_step"] == 1
