"""The bundled mini benchmark: SWE-bench rows, reproducible repositories, and tasks that really test their fix."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from repairrl.data.mini_benchmark import (
    MINI_SOURCE_DIR,
    MiniTaskError,
    build_benchmark,
    discover_task_sources,
    load_tasks,
)
from repairrl.grading import test_runner
from repairrl.sandbox.base import CommandResult
from repairrl.tasks import Task

INSTANCE_IDS = sorted(p.name for p in MINI_SOURCE_DIR.iterdir() if p.is_dir())
SWEBENCH_COLUMNS = {
    "instance_id",
    "repo",
    "base_commit",
    "problem_statement",
    "patch",
    "test_patch",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "version",
    "created_at",
    "hints_text",
    "environment_setup_commit",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini")
    build_benchmark(out)
    return out


@pytest.fixture(scope="session")
def rows(built) -> list[dict]:
    return [json.loads(line) for line in (built / "tasks.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def tasks(built) -> dict[str, Task]:
    return {task.instance_id: task for task in load_tasks(built)}


def git(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=True)
    return result.stdout


def checkout_base(task: Task, dest: Path) -> None:
    """A working copy of the base commit alone, fetched by hash the way the repository cache does."""
    git("init", "-q", str(dest))
    git("fetch", "-q", "--depth", "1", task.repo_url, task.base_commit, cwd=dest)
    git("checkout", "-q", "--detach", "FETCH_HEAD", cwd=dest)


def patched_paths(*patches: str) -> set[str]:
    return {
        line.split(" b/")[-1]
        for patch in patches
        for line in patch.splitlines()
        if line.startswith("diff --git ")
    }


def test_rows_have_the_swebench_format(rows):
    assert [row["instance_id"] for row in rows] == INSTANCE_IDS
    for row in rows:
        assert SWEBENCH_COLUMNS | {"language", "test_framework", "split"} == set(row)
        # SWE-bench Verified ships the test lists as JSON-encoded strings.
        assert isinstance(row["FAIL_TO_PASS"], str) and json.loads(row["FAIL_TO_PASS"])
        assert isinstance(row["PASS_TO_PASS"], str) and json.loads(row["PASS_TO_PASS"])
        assert row["patch"].startswith("diff --git ") and row["test_patch"].startswith("diff --git ")
        assert len(row["base_commit"]) == 40
        assert row["version"] == "0.1"
        assert row["test_framework"] == {"python": "pytest", "java": "junit4"}[row["language"]]


def test_benchmark_covers_both_languages_and_splits(rows):
    by_language = {lang: [r for r in rows if r["language"] == lang] for lang in ("python", "java")}
    assert len(by_language["python"]) >= 12 and len(by_language["java"]) >= 4
    for language_rows in by_language.values():
        assert {row["split"] for row in language_rows} == {"train", "eval"}
    multi_file = [r for r in rows if r["patch"].count("diff --git ") > 1]
    assert len(multi_file) >= 3


def test_two_builds_give_identical_tasks(built, tmp_path):
    build_benchmark(tmp_path)
    assert (tmp_path / "tasks.jsonl").read_bytes() == (built / "tasks.jsonl").read_bytes()


def test_rebuild_replaces_output_and_leaves_no_staging(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(MINI_SOURCE_DIR / "mini__pager-1", source / "mini__pager-1")
    out = tmp_path / "out"
    build_benchmark(out, source)
    build_benchmark(out, source)
    assert sorted(p.name for p in out.iterdir()) == ["repos", "tasks.jsonl"]
    assert [p.name for p in (out / "repos").iterdir()] == ["mini__pager.git"]


@pytest.mark.parametrize("instance_id", INSTANCE_IDS)
def test_published_repo_holds_a_future_fix_commit_after_the_base(tasks, built, instance_id):
    task = tasks[instance_id]
    bare = built / "repos" / f"{task.repo_key}.git"
    assert git("config", "uploadpack.allowAnySHA1InWant", cwd=bare).strip() == "true"
    future = git("rev-parse", "main", cwd=bare).strip()
    assert future != task.base_commit
    assert git("rev-parse", "main^", cwd=bare).strip() == task.base_commit
    changed = set(git("diff", "--name-only", task.base_commit, future, cwd=bare).split())
    assert changed == patched_paths(task.gold_patch, task.test_patch)


@pytest.mark.parametrize("instance_id", INSTANCE_IDS)
def test_fail_to_pass_tests_fail_at_base_and_pass_with_the_gold_patch(tasks, tmp_path, instance_id):
    task = tasks[instance_id]
    workdir = tmp_path / "work"
    checkout_base(task, workdir)
    future = git("ls-remote", task.repo_url, "refs/heads/main").split()[0]
    fetched = subprocess.run(["git", "cat-file", "-e", future], cwd=workdir, capture_output=True, check=False)
    assert fetched.returncode != 0, "the future fix commit must not reach a working copy of the base"
    # The base tree does not contain the fix: the gold patch applies forwards, not in reverse.
    git("apply", "--check", "-", cwd=workdir, stdin=task.gold_patch)
    reverse = subprocess.run(
        ["git", "apply", "--check", "-R", "-"],
        cwd=workdir,
        input=task.gold_patch,
        capture_output=True,
        text=True,
        check=False,
    )
    assert reverse.returncode != 0

    test_ids = task.fail_to_pass + task.pass_to_pass
    git("apply", "-", cwd=workdir, stdin=task.test_patch)
    before = test_runner.run_tests(workdir, task, test_ids, timeout_s=120)
    assert not before.timed_out, before.log
    failing = [t for t in task.fail_to_pass if before.statuses.get(t) in ("FAILED", "ERROR")]
    assert failing == task.fail_to_pass, before.log
    assert all(before.passed(t) for t in task.pass_to_pass), before.log

    git("apply", "-", cwd=workdir, stdin=task.gold_patch)
    after = test_runner.run_tests(workdir, task, test_ids, timeout_s=120)
    assert all(after.passed(t) for t in test_ids), after.log
    # Running tests leaves nothing behind in the working copy (no bytecode, caches or class files).
    status = git("status", "--porcelain", "--untracked-files=all", "--ignored", cwd=workdir)
    new_files = {line[3:] for line in status.splitlines() if line[:2] in ("??", "!!")}
    assert new_files <= patched_paths(task.gold_patch, task.test_patch)


def test_parse_test_log_reads_statuses_between_the_markers():
    log = f"""PASSED tests/test_outside.py::test_ignored
{test_runner.START_TEST_OUTPUT}
tests/test_a.py::test_one PASSED [ 50%]
=========================== short test summary info ============================
PASSED tests/test_a.py::test_one
FAILED tests/test_a.py::test_two - AssertionError: assert 1 == 2
ERROR tests/test_b.py::test_three - ImportError
PASSED com.example.FooTest#testBar
{test_runner.END_TEST_OUTPUT}
FAILED tests/test_outside.py::test_after
"""
    assert test_runner.parse_test_log(log) == {
        "tests/test_a.py::test_one": "PASSED",
        "tests/test_a.py::test_two": "FAILED",
        "tests/test_b.py::test_three": "ERROR",
        "com.example.FooTest#testBar": "PASSED",
    }


def _task(framework: str) -> Task:
    return Task(
        instance_id="local__x-1",
        dataset="local",
        repo="local/x",
        repo_url="file:///nonexistent",
        base_commit="0" * 40,
        problem_statement="-",
        gold_patch="",
        test_patch="",
        fail_to_pass=[],
        pass_to_pass=[],
        language="java" if framework == "junit4" else "python",
        test_framework=framework,
    )


def test_java_compile_error_marks_every_requested_test_failed(tmp_path):
    source = tmp_path / "src/main/java/com/example/Broken.java"
    source.parent.mkdir(parents=True)
    source.write_text("package com.example;\npublic class Broken { int x = ; }\n")
    test = tmp_path / "src/test/java/com/example/BrokenTest.java"
    test.parent.mkdir(parents=True)
    test.write_text("package com.example;\npublic class BrokenTest {}\n")
    ids = ["com.example.BrokenTest#one", "com.example.BrokenTest#two"]
    run = test_runner.run_tests(tmp_path, _task("junit4"), ids, timeout_s=120)
    assert run.statuses == dict.fromkeys(ids, "FAILED"), run.log
    assert "compilation failed" in run.log
    assert not list(tmp_path.rglob("*.class"))


def test_run_tests_uses_the_injected_runner():
    """Only status lines tagged with the run's nonce count; an untagged one (code under test can print it) does not."""
    commands = []
    nonce = test_runner.new_nonce()

    def fake_runner(command: str, timeout_s: float) -> CommandResult:
        commands.append((command, timeout_s))
        output = (
            f"{test_runner.START_TEST_OUTPUT}\n{nonce} PASSED tests/t.py::a\nFAILED tests/t.py::a\n"
            f"{test_runner.END_TEST_OUTPUT}\n"
        )
        return CommandResult(command=command, exit_code=0, output=output, duration_s=0.5)

    run = test_runner.run_tests(
        "/nonexistent", _task("pytest"), ["tests/t.py::a"], 7, runner=fake_runner, nonce=nonce
    )
    assert run.statuses == {"tests/t.py::a": "PASSED"}
    assert run.duration_s == 0.5 and commands[0][1] == 7
    assert "-rA -p no:cacheprovider tests/t.py::a" in commands[0][0]


def test_subprocess_runner_kills_the_process_group_on_timeout(tmp_path):
    run = test_runner.subprocess_runner(tmp_path)
    result = run("sleep 30 & sleep 30; echo never", 0.5)
    assert result.timed_out and result.exit_code is None
    assert result.duration_s < 10
    assert "never" not in result.output


def test_malformed_task_source_names_the_task(tmp_path):
    source = tmp_path / "mini__pager-1"
    shutil.copytree(MINI_SOURCE_DIR / "mini__pager-1", source)
    spec = (source / "task.yaml").read_text()
    (source / "task.yaml").write_text(spec.replace("FAIL_TO_PASS:", "FAILING:"))
    with pytest.raises(MiniTaskError, match=r"mini__pager-1: .*FAIL_TO_PASS"):
        discover_task_sources(tmp_path)


def test_fix_that_changes_nothing_is_rejected(tmp_path):
    source = tmp_path / "source" / "mini__pager-1"
    shutil.copytree(MINI_SOURCE_DIR / "mini__pager-1", source)
    for fixed in (source / "fix").rglob("*.py"):
        shutil.copy(source / "base" / fixed.relative_to(source / "fix"), fixed)
    with pytest.raises(MiniTaskError, match=r"mini__pager-1: fix/ changes nothing"):
        build_benchmark(tmp_path / "out", tmp_path / "source")
    assert not (tmp_path / "out" / "tasks.jsonl").exists()
