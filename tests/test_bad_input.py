"""Bad input to the stages: each probe gets a clear message, or a failure counted where it belongs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml
from repairrl.evaluate.predictions import prediction_from_trajectory
from repairrl.grading.run_evaluation import run_evaluation
from repairrl.records import write_jsonl
from repairrl.repos import main as cache_main
from repairrl.tasks import Task, write_tasks

from .conftest import REPO_ROOT, needs_bwrap


def unreachable_task(tmp_path: Path, number: int) -> Task:
    return Task(instance_id=f"gone-{number}", dataset="d", repo=f"owner/gone{number}",
                repo_url=f"file://{tmp_path}/nowhere-{number}", base_commit="0" * 40, problem_statement="p",
                gold_patch="", test_patch="", fail_to_pass=[], pass_to_pass=[])


def test_a_cache_job_where_every_repository_failed_fails(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, [unreachable_task(tmp_path, n) for n in range(2)])
    assert cache_main(["--tasks", str(tasks), "--cache-dir", str(tmp_path / "cache"), "--out",
                       str(tmp_path / "cache.jsonl"), "--timeout", "30"]) == 1
    assert "no repository of" in capsys.readouterr().err


def test_failed_episodes_are_graded_as_errors_not_empty_patches(tmp_path):
    """Tasks missing from the cache: every episode fails, and the grade says so (errors, with the reason)."""
    task = unreachable_task(tmp_path, 1)
    trajectory = {"instance_id": task.instance_id, "status": "failed", "diff": "",
                  "error": "RepoFetchError: gone-1: owner/gone1@000000000000 is not in the cache"}
    prediction = prediction_from_trajectory(trajectory, "base")
    assert prediction["error"].startswith("RepoFetchError")
    summary = run_evaluation([task], [prediction], tmp_path / "cache", tmp_path / "out")["base"]
    assert summary["error_ids"] == [task.instance_id] and summary["empty_patch_ids"] == []
    assert summary["grading_error_ids"] == [task.instance_id]
    assert "not in the cache" in summary["error_reasons"][task.instance_id]


def test_editing_a_local_dataset_file_refetches_it(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    rows = tmp_path / "rows.jsonl"
    rows.write_text("{}\n")
    config["datasets"] = {"local_eval": {"format": "swe-bench", "role": "eval", "source": {"path": str(rows)}},
                          "mini_train": config["datasets"]["mini_train"]}
    config["results_dir"] = str(tmp_path / "results")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    fetched = tmp_path / "results" / "embedded" / "data" / "local_eval"
    fetched.mkdir(parents=True)
    for name in ("tasks.jsonl", "skipped.jsonl"):  # a fetch that ran before the file was edited
        (fetched / name).write_text("")
        os.utime(fetched / name, (1_000_000_000, 1_000_000_000))
    snakemake = Path(sys.executable).with_name("snakemake")
    done = subprocess.run([str(snakemake), str(fetched / "tasks.jsonl"), "-n", "--configfile",
                           str(tmp_path / "config.yaml")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "rule fetch:" in done.stdout and "Updated input files" in done.stdout, done.stdout


def test_outputs_are_written_readable_not_0600(tmp_path):
    path = tmp_path / "out.jsonl"
    old = os.umask(0o022)
    try:
        write_jsonl(path, [{"a": 1}])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == {"a": 1}


def test_scratch_folders_of_killed_runs_are_removed_by_the_next_start(tmp_path):
    from repairrl.scratch import make_scratch

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f"repairrl-agent-{dead.pid}-abc"
    (orphan / "wc-1").mkdir(parents=True)
    live = tmp_path / f"repairrl-agent-{os.getppid()}-def"  # a running process's folder stays
    live.mkdir()
    fresh = make_scratch("repairrl-agent-", tmp_path)
    assert not orphan.exists() and live.exists()
    assert fresh.name.startswith(f"repairrl-agent-{os.getpid()}-")


@needs_bwrap
def test_a_killed_sandboxs_identity_folder_is_removed_by_the_next_sandbox(tmp_path):
    import tempfile

    from repairrl.sandbox.bwrap import BwrapSandbox

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = Path(tempfile.gettempdir()) / f"repairrl-sandbox-{dead.pid}-abc"
    orphan.mkdir()
    (orphan / "passwd").write_text("agent:x:1000:1000::/home/agent:/bin/bash\n")
    with BwrapSandbox(tmp_path) as sandbox:
        assert sandbox.run("echo ok").output == "ok\n"
    assert not orphan.exists()
