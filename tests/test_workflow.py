"""The embedded default DAG, run for real: the proof behind README's main command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from repairrl.records import read_jsonl

from .conftest import REPO_ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
STUDY = "config/experiments/qwen3-14b-gspo.yaml"


def snakemake(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [*SNAKEMAKE, *args], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return completed


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config.update(results_dir=f"{root}/results", logs_dir=f"{root}/logs")
    config["cache"].update(dir=f"{root}/cache", workers=2)
    # The embedded default with half its sampling and half its SFT steps, to keep the test suite under 30 minutes
    # on 2 cores; every rule and every model still runs, GRPO as in the default (README's numbers are from the
    # full default).
    config["sft"]["samples"] = 1
    config["sft"]["train"].update(max_steps=4, save_steps=2)
    config["grpo"]["train"].update(max_steps=2, save_steps=1)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = ["--configfile", str(root / "config.yaml")]
    completed = snakemake("--profile", "profiles/local", "--cores", "2", *overrides, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return {"root": root, "results": root / "results" / "embedded", "overrides": overrides}


@pytest.mark.slow
def test_embedded_dag_builds_model_tasks_and_cache(embedded_run):
    results = embedded_run["results"]
    manifest = json.loads((results / "models" / "base" / "model.json").read_text())
    assert manifest["kind"] == "embedded" and manifest["parameters"] > 100_000_000
    assert (results / "models" / "base" / "hf" / "config.json").is_file()

    counts = {}
    for dataset in ("mini_train", "mini_eval_python", "mini_eval_java"):
        tasks = read_jsonl(results / "data" / dataset / "tasks.jsonl")
        statuses = read_jsonl(results / "data" / dataset / "cache.jsonl")
        assert tasks and len(statuses) == len(tasks)
        assert {s["status"] for s in statuses} == {"ok"}, statuses
        counts[dataset] = len(tasks)
        assert {t["split"] for t in tasks} == {"train" if dataset == "mini_train" else "eval"}
    assert counts["mini_train"] + counts["mini_eval_python"] + counts["mini_eval_java"] >= 16
    java = read_jsonl(results / "data" / "mini_eval_java" / "tasks.jsonl")
    assert {t["language"] for t in java} == {"java"}
    # Each benchmark has its own log and benchmark record.
    assert (embedded_run["root"] / "logs" / "embedded" / "fetch" / "mini_train.log").is_file()
    assert (results / "benchmarks" / "cache" / "mini_train.tsv").is_file()


@pytest.mark.slow
def test_embedded_dag_trains_evaluates_and_reports_every_model(embedded_run):
    results = embedded_run["results"]
    stats = json.loads((results / "sft" / "dataset_stats.json").read_text())
    assert stats["episodes"] == 10  # one sample of each of the 10 training tasks (the test halves the sampling)
    assert stats["kept"] == 10 and stats["kept_by_source"]["expert_demo"] + stats["kept_by_source"]["rollout"] == 10
    for model in ("sft", "grpo"):
        assert json.loads((results / "models" / model / "model.json").read_text())["kind"] == "local"
    grpo = json.loads((results / "models" / "grpo" / "train_summary.json").read_text())
    assert grpo["global_step"] == 2 and grpo["algorithm"] == "gspo"
    assert len((results / "models" / "grpo" / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2
    rows = json.loads((results / "report" / "results.json").read_text())
    assert {(r["benchmark"], r["model"]) for r in rows} == {
        (benchmark, model) for benchmark in ("mini_eval_python", "mini_eval_java") for model in ("base", "sft", "grpo")
    }
    report = (results / "report" / "report.md").read_text()
    assert "| benchmark | base | sft | grpo |" in report and "expert demonstrations" in report
    for plot in ("resolve_rate", "episode_rates", "tool_use", "turns_tokens", "sft_curves", "grpo_curves"):
        assert (results / "report" / f"{plot}.png").stat().st_size > 1000
    compute = (results / "report" / "compute.csv").read_text()
    assert "gpu_hours" in compute.splitlines()[0]
    # A local CPU run had no GPUs: every rule's GPU-hours are 0.
    gpu_column = compute.splitlines()[0].split(",").index("gpu_hours")
    assert all(float(line.split(",")[gpu_column]) == 0 for line in compute.splitlines()[1:] if line)
    # SFT and GRPO logged to wandb offline, in the study's folder.
    assert len(list((results / "wandb").glob("offline-run-*"))) >= 2


@pytest.mark.slow
def test_second_run_does_nothing(embedded_run):
    completed = snakemake("-n", "--profile", "profiles/local", *embedded_run["overrides"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Nothing to be done" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_deleting_the_evaluations_redoes_them_and_the_report(embedded_run):
    evaluations = embedded_run["results"] / "eval"
    moved = evaluations.with_name("eval.moved")
    evaluations.rename(moved)
    try:
        completed = snakemake("-n", "--profile", "profiles/local", *embedded_run["overrides"])
    finally:
        moved.rename(evaluations)
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    counts = job_counts(output)
    planned = (counts.get("grade"), counts.get("evaluate_predictions"), counts.get("report"))
    assert planned == (6, 6, 1), (counts, output[-3000:])


@pytest.mark.slow
def test_deleting_one_output_reruns_only_its_dependents(embedded_run):
    (embedded_run["results"] / "data" / "mini_eval_java" / "tasks.jsonl").unlink()
    completed = snakemake("-n", "--profile", "profiles/local", *embedded_run["overrides"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    # That dataset's table and cache, its evaluation of every model, and the report: nothing of the training data
    # (no rollouts, SFT or GRPO) and nothing of the other benchmark.
    models = 3  # base, sft, grpo
    assert job_counts(output) == {
        "fetch": 1, "cache": 1, "evaluate_shard": models, "evaluate_predictions": models, "grade": models,
        "report": 1, "all": 1,
    }, output[-3000:]
    assert "dataset=mini_eval_java" in output
    assert "dataset=mini_train" not in output and "dataset=mini_eval_python" not in output


# The detection task at its smallest: every rule of its DAG runs, on a few samples, with one training step. (The
# file-level repair task runs end to end through the SLURM test cluster: tests/test_slurm_cluster.py.)
SMALLEST_DETECTION_RUN = {
    "task": "detection",
    "datasets": {"mini_detection_train": {"filters": {"split": "train", "limit": 4}},
                 "mini_detection_eval": {"filters": {"split": "eval", "limit": 4}}},
    "agent": {"max_new_tokens": 48, "workers": 2},
    "sft": {"samples": 1, "train": {"max_steps": 1, "save_steps": 1, "max_length": 768}},
    "grpo": {"train": {"max_steps": 1, "save_steps": 1, "num_generations": 2, "tasks_per_step": 1,
                       "max_completion_length": 96}},
}


def merged(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        both_dicts = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both_dicts else value
    return result


@pytest.mark.slow
def test_detection_task_runs_end_to_end_beside_the_main_task(embedded_run):
    """`--config task=detection` on the embedded default: its own DAG, the study's base model, a section per task."""
    root = embedded_run["root"]
    config = merged(yaml.safe_load((root / "config.yaml").read_text()), SMALLEST_DETECTION_RUN)
    (root / "detection.yaml").write_text(yaml.safe_dump(config))
    completed = snakemake("--profile", "profiles/local", "--cores", "2", "--configfile", str(root / "detection.yaml"),
                          "--config", "task=detection")
    assert completed.returncode == 0, completed.stderr[-4000:]
    ran = job_counts(completed.stdout + completed.stderr)
    assert "prepare_model" not in ran, "the study's base model is shared by its tasks"
    assert "cache" not in ran and "mini_benchmark" not in ran, "detection samples carry their code"
    assert ran["sft"] == ran["grpo"] == ran["report"] == 1 and ran["evaluate_shard"] == 3
    results = embedded_run["results"] / "detection"
    report = (results / "report" / "report.md").read_text()
    assert "## Vulnerability detection (one turn)" in report
    assert "## Repository repair (the agent in a sandbox)" in report, "the main task's section is there too"
    rows = json.loads((results / "report" / "results.json").read_text())
    assert [(r["model"], r["n"]) for r in rows] == [("base", 4), ("sft", 4), ("grpo", 4)]
    assert (results / "report" / "detection_accuracy.png").stat().st_size > 1000
    summary = json.loads((results / "models" / "grpo" / "train_summary.json").read_text())
    assert summary["task"] == "detection" and summary["global_step"] == 1


def test_dry_run_of_the_14b_study_plans_fetch_and_cache_of_all_three_datasets():
    completed = snakemake("-n", "--profile", "profiles/slurm", "--configfile", STUDY)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    counts = job_counts(output)
    assert counts["fetch"] == 3 and counts["cache"] == 3, counts
    for dataset in ("swe_gym", "swe_bench_verified", "gitbug_java"):
        assert f"dataset={dataset}" in output
    assert "mini_benchmark" not in counts  # the study replaces the default config, it does not merge into it


def test_dry_run_of_the_14b_study_runs_every_agent_in_the_tasks_image():
    completed = snakemake("-n", "-p", "--profile", "profiles/slurm", "--configfile", STUDY)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    agent_commands = [line for line in output.splitlines() if "--sandbox " in line]
    assert agent_commands and all("--sandbox apptainer" in line for line in agent_commands), agent_commands[:3]


def test_dry_run_trains_from_the_base_model_the_config_names(tmp_path):
    """A config of the required keys (the schema fills in the rest) whose one model is not called `base`."""
    embedded = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config = {
        "experiment": "smol-study", "results_dir": str(tmp_path / "results"), "logs_dir": str(tmp_path / "logs"),
        "models": {"smol": {"source": "embedded"}},
        "datasets": {name: embedded["datasets"][name] for name in ("mini_train", "mini_eval_python")},
        "cache": {"dir": str(tmp_path / "cache")}, "rewards": embedded["rewards"],
        "sft": {"enabled": True, "expert_demos": True}, "grpo": {"enabled": True, "init": "base"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    completed = snakemake("-n", "-p", "--configfile", str(tmp_path / "config.yaml"))
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    base = f"{tmp_path}/results/smol-study/models/smol"
    commands = {rule: [line for line in output.splitlines() if f"repairrl.{module} " in line]
                for rule, module in (("sft", "sft.train"), ("grpo", "grpo.train"), ("rollouts", "evaluate shard"),
                                     ("report", "report"))}
    assert f"--model {base} " in commands["sft"][0] and f"--model {base} " in commands["grpo"][0]
    teacher = [line for line in commands["rollouts"] if "--model-name teacher" in line]
    assert teacher and f"--model {base} " in teacher[0], "the teacher defaults to the base model"
    assert "--base-model smol " in commands["report"][0]
    # evaluation.models defaults to the base model and the two trained ones.
    assert {re.search(r"--model-name (\S+)", line).group(1) for line in commands["rollouts"]} == {
        "teacher", "smol", "sft", "grpo"}


def test_dry_run_with_criterion_resolved_grades_the_sft_rollouts_before_selecting_them(tmp_path):
    completed = snakemake("-n", "-p", "--until", "sft_dataset", "--config", f"results_dir={tmp_path}/results",
                          f"logs_dir={tmp_path}/logs", "sft={criterion: resolved}")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    counts = job_counts(output)
    assert counts["sft_grade"] == 1 and counts["sft_dataset"] == 1 and "grade" not in counts, counts
    grading = f"{tmp_path}/results/embedded/sft/grading"
    grade = next(line for line in output.splitlines() if "repairrl.evaluate harness" in line and grading in line)
    # Every sample of every task is a prediction of its own, graded by the evaluation's grading command.
    assert "--model-name teacher --samples 2 " in grade and f"--predictions {grading}/predictions.jsonl" in grade
    select = next(line for line in output.splitlines() if "repairrl.sft.dataset" in line)
    assert f"--criterion resolved --grades {grading}/teacher.sample0.eval.json {grading}/teacher.sample1.eval.json" \
        in select


def test_slurm_profile_sets_partition_and_account_from_the_environment_for_every_rule():
    """profiles/slurm is the one place: every job gets the account and the CPU or GPU partition of the environment."""
    env = {"REPAIRRL_SLURM_PARTITION": "main", "REPAIRRL_SLURM_GPU_PARTITION": "gpu", "REPAIRRL_SLURM_ACCOUNT": "lab"}
    completed = snakemake("-n", "-F", "--profile", "profiles/slurm", env=env)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", output, re.MULTILINE)
    partitions = {}
    for rule, resources in jobs:
        values = dict(item.split("=", 1) for item in resources.split(", "))
        assert values["slurm_account"] == "lab", rule
        partitions[rule] = (values["slurm_partition"], "gpu" in values)
    assert {rule for rule, (partition, gpu) in partitions.items() if partition != ("gpu" if gpu else "main")} == set()
    assert {rule for rule, (_, gpu) in partitions.items() if gpu} == {"sft_rollouts", "sft", "grpo", "evaluate_shard"}
    rules_text = "".join(path.read_text() for path in (REPO_ROOT / "workflow").rglob("*.smk"))
    assert "slurm_partition" not in rules_text and "slurm_account" not in rules_text, "the profile is the one place"


def test_bare_profile_name_works_after_setup(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    setup = subprocess.run(["bash", "scripts/setup.sh"], check=False, cwd=REPO_ROOT, env={**os.environ, **env},
                           capture_output=True, text=True, timeout=900)
    assert setup.returncode == 0, setup.stderr[-3000:]
    linked = tmp_path / "config" / "snakemake" / "slurm"
    assert linked.resolve() == REPO_ROOT / "profiles" / "slurm"
    completed = snakemake("-n", "--profile", "slurm", "--configfile", STUDY, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Using profile slurm for setting default command line arguments" in completed.stderr
    assert job_counts(completed.stdout + completed.stderr).get("fetch") == 3
