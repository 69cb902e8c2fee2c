"""GitBug-Java: genuine bug rows through the loader, and the driver against a stand-in of the real CLI.

The rows under fixtures/gitbug_java/bugs/ are lines of gitbugactions/gitbug-java's data/bugs/*.json (see
PROVENANCE.md there). The stand-in fixtures/gitbug_java/gitbug-java takes the real CLI's commands and arguments
and writes its result file; it runs a tiny test script instead of replaying a GitHub workflow.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from repairrl.data.gitbug_java import GitBugJavaRowError, fork_clone_url, gitbug_java_task
from repairrl.data.loaders import DatasetSpec
from repairrl.evaluate import gitbug
from repairrl.tasks import Task

FIXTURES = Path(__file__).parent / "fixtures" / "gitbug_java"
STAND_IN = FIXTURES / "gitbug-java"
SPEC = DatasetSpec(name="gitbug_java", format="gitbug-java")
# The real CLI's methods (gitbugactions/gitbug-java fe986fb7, script `gitbug-java`, class GitBugJavaCli).
REAL_CLI_PARAMETERS = {
    "checkout": ("bid", "workdir", "fixed"),
    "run": ("workdir", "act_cache_dir", "timeout"),
}


def fixture_row(bid: str) -> dict:
    return json.loads((FIXTURES / "bugs" / f"{bid}.json").read_text(encoding="utf-8"))


def load(bid: str) -> Task:
    task = gitbug_java_task(fixture_row(bid), SPEC, f"fixture {bid}")
    Task.from_record(task.to_record())  # the task schema accepts it
    return task


# --- genuine rows through the loader ---


@pytest.mark.parametrize(
    ("bid", "failing", "passing", "has_test_patch"),
    [
        # FAIL_PASS: actions_runs[1] is null; the failing test is in run group 0. 47 tests, 3 skipped.
        (
            "xtremexp-UT4X-Converter-e719841eb260",
            ["org.xtx.ut4converter.t3d.T3DZoneInfoTest#testZoneInfoConversionUT2004ToUT4"],
            43,
            False,
        ),
        (
            "cloudsimplus-cloudsimplus-61c8b942d1ec",
            ["org.cloudsimplus.integrationtests.VmCreationFailureIntegrationTest#integrationTest"],
            403,
            False,
        ),
        # PASS_PASS: the test patch's test fails in run group 1.
        (
            "davidmoten-word-wrap-e59eedf0bac7",
            ["org.davidmoten.text.utils.WordWrapTest#testStatelessness"],
            90,
            True,
        ),
        # PASS_PASS with a non-code patch; 62 tests, 7 skipped.
        (
            "adoble-adr-j-7fe616c55a5b",
            ["org.doble.adr.CommandNewTest#testOtherFilesInADRDirectory()"],
            54,
            True,
        ),
    ],
)
def test_genuine_rows_take_tests_from_the_run_group_the_tool_uses(bid, failing, passing, has_test_patch):
    task = load(bid)
    assert task.instance_id == bid
    assert task.fail_to_pass == failing
    assert len(task.pass_to_pass) == passing and not set(failing) & set(task.pass_to_pass)
    assert bool(task.test_patch) is has_test_patch
    row = fixture_row(bid)
    assert task.base_commit == row["previous_commit_hash"] and task.gold_patch == row["bug_patch"]
    assert task.extra["fixed_commit"] == row["commit_hash"]


def test_tests_sum_to_what_gitbug_java_run_expects():
    """`run` expects every test of run group 2 that was not skipped; F2P and P2P are exactly those."""
    for path in sorted((FIXTURES / "bugs").glob("*.json")):
        row = fixture_row(path.stem)
        expected = [t for t in row["actions_runs"][2][0]["tests"] if t["results"][0]["result"] != "Skipped"]
        task = load(path.stem)
        assert len(task.fail_to_pass) + len(task.pass_to_pass) == len(expected), path.stem


def test_clone_url_is_rewritten_to_the_gitbugactions_fork():
    assert (
        load("xtremexp-UT4X-Converter-e719841eb260").repo_url
        == "https://github.com/gitbugactions/UT4X-Converter.git"
    )
    assert load("adoble-adr-j-7fe616c55a5b").repo_url == "https://github.com/gitbugactions/adr-j.git"
    assert fork_clone_url("/tmp/local/repo") == "/tmp/local/repo"


def test_problem_statement_lists_only_the_failing_tests():
    for path in sorted((FIXTURES / "bugs").glob("*.json")):
        task = load(path.stem)
        listed = [line for line in task.problem_statement.splitlines() if line.startswith("- ")]
        assert [line[2:].split(": ")[0] for line in listed] == task.fail_to_pass, path.stem
        assert not any(test in task.problem_statement for test in task.pass_to_pass[:50])
    statement = load("davidmoten-word-wrap-e59eedf0bac7").problem_statement
    assert "expected:<hello[ super- ]cool> but was:<hello[ super-]cool>" in statement
    # No message recorded: the exception type stands in for it.
    assert "AssertionFailedError" in load("xtremexp-UT4X-Converter-e719841eb260").problem_statement


def test_a_row_whose_failing_group_is_null_is_refused():
    row = fixture_row("davidmoten-word-wrap-e59eedf0bac7")
    row["actions_runs"][1] = None
    with pytest.raises(GitBugJavaRowError, match="strategy PASS_PASS reads run group 1"):
        gitbug_java_task(row, SPEC, "row")


def test_a_row_without_a_failing_test_is_refused():
    row = fixture_row("xtremexp-UT4X-Converter-e719841eb260")
    row["actions_runs"][0] = row["actions_runs"][2]
    with pytest.raises(GitBugJavaRowError, match="shows no bug"):
        gitbug_java_task(row, SPEC, "row")


def test_nested_runs_stored_as_json_text_are_read():
    row = fixture_row("xtremexp-UT4X-Converter-e719841eb260")
    row["actions_runs"] = json.dumps(row["actions_runs"])
    assert len(gitbug_java_task(row, SPEC, "row").fail_to_pass) == 1


# --- the command line against the real CLI ---


def stand_in_module():
    loader = importlib.machinery.SourceFileLoader("gitbug_java_stand_in", str(STAND_IN))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_stand_in_takes_the_real_cli_parameters():
    commands = stand_in_module().COMMANDS
    for command, parameters in REAL_CLI_PARAMETERS.items():
        assert tuple(name for name, _ in commands[command]) == parameters


def test_command_lines_match_the_real_cli(tmp_path):
    config = gitbug.GitBugJavaConfig(root=tmp_path, act_cache_dir=tmp_path / "act-cache", timeout_s=601)
    assert gitbug.checkout_command(config, "owner-project-abc", tmp_path / "w") == [
        "gitbug-java", "checkout", "owner-project-abc", str(tmp_path / "w"),
    ]  # fmt: skip
    (tmp_path / "gitbug-java").write_text("#!/bin/sh\n")  # the checkout's own script wins over PATH
    command = gitbug.run_command(config, tmp_path / "w")
    assert command == [
        str(tmp_path / "gitbug-java"), "run", str(tmp_path / "w"),
        f"--act_cache_dir={tmp_path / 'act-cache'}", "--timeout=11",  # minutes, rounded up
    ]  # fmt: skip
    parsed_command, values = stand_in_module().parse_arguments(command[1:])
    assert parsed_command == "run"
    assert values == {
        "workdir": str(tmp_path / "w"),
        "act_cache_dir": str(tmp_path / "act-cache"),
        "timeout": 11,
    }
    default = gitbug.run_command(
        gitbug.GitBugJavaConfig(root=tmp_path / "none", timeout_s=30), tmp_path / "w"
    )
    assert default == [
        "gitbug-java",
        "run",
        str(tmp_path / "w"),
        "--timeout=1",
    ]  # never 0: that is no timeout


def test_the_old_output_flag_is_refused_like_python_fire_does(tmp_path):
    completed = subprocess.run(
        [str(STAND_IN), "run", str(tmp_path), "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2 and "Could not consume arg: --output" in completed.stderr


# --- the driver against the stand-in ---

PID = "example-calc"
BUGGY_CALC = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
FIXED_CALC = BUGGY_CALC.replace("return a - b\n\n", "return a + b\n\n", 1)
RUN_TESTS = textwrap.dedent(
    """\
    import calc

    CHECKS = {
        "org.example.CalcTest#testSub": lambda: calc.sub(5, 3) == 2,
    }
    for name, check in CHECKS.items():
        try:
            ok = check()
        except Exception:
            ok = False
        print(("PASS " if ok else "FAIL ") + name)
    """
)
TESTED = RUN_TESTS.replace(
    '    "org.example.CalcTest#testSub"',
    '    "org.example.CalcTest#testAdd": lambda: calc.add(2, 3) == 5,\n    "org.example.CalcTest#testSub"',
)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def diff(repo: Path, path: str, new_text: str) -> str:
    (repo / path).write_text(new_text)
    patch = git(repo, "diff", "--", path)
    git(repo, "checkout", "--", path)
    return patch


def recorded_run(*tests: tuple[str, str]) -> list[dict]:
    return [{"failed": False, "tests": [
        {"classname": "org.example.CalcTest", "name": name, "results": [{"result": result, "message": "", "type": ""}]}
        for name, result in tests
    ]}]  # fmt: skip


@pytest.fixture
def gitbug_root(tmp_path):
    """A gitbug-java checkout holding one bug of a local repository, and the stand-in CLI."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text("name: ci\n")
    (repo / "calc.py").write_text(BUGGY_CALC)
    (repo / "run_tests.py").write_text(RUN_TESTS)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "buggy")
    buggy = git(repo, "rev-parse", "HEAD").strip()
    bug_patch, test_patch = diff(repo, "calc.py", FIXED_CALC), diff(repo, "run_tests.py", TESTED)
    (repo / "calc.py").write_text(FIXED_CALC)
    (repo / "run_tests.py").write_text(TESTED)
    git(repo, "commit", "-q", "-am", "fix add")
    fixed = git(repo, "rev-parse", "HEAD").strip()
    row = {
        "repository": "example/calc", "language": "java", "clone_url": str(repo), "commit_hash": fixed,
        "previous_commit_hash": buggy, "commit_timestamp": "2024-01-01T00:00:00Z", "bug_patch": bug_patch,
        "test_patch": test_patch, "non_code_patch": "", "strategy": "PASS_PASS",
        "actions_runs": [
            recorded_run(("testSub", "Passed")),
            recorded_run(("testAdd", "Failure"), ("testSub", "Passed")),
            recorded_run(("testAdd", "Passed"), ("testSub", "Passed"), ("testIgnored", "Skipped")),
        ],
    }  # fmt: skip
    root = tmp_path / "gitbug-java"
    (root / "data" / "bugs").mkdir(parents=True)
    (root / "data" / "bugs" / f"{PID}.json").write_text(json.dumps(row) + "\n")
    (root / "data" / PID / fixed / "workflow").mkdir(parents=True)
    (root / "data" / PID / fixed / "workflow" / "ci-crawler.yml").write_text("name: replication\n")
    shutil.copy(STAND_IN, root / "gitbug-java")
    return {"root": root, "row": row, "task": gitbug_java_task(row, SPEC, "synthetic row")}


def grade_patch(setup: dict, patch: str, tmp_path: Path, **config):
    config = gitbug.GitBugJavaConfig(root=setup["root"], timeout_s=60, **config)
    prediction = {"instance_id": setup["task"].instance_id, "model_name_or_path": "m", "model_patch": patch}
    return gitbug.grade_gitbug(setup["task"], prediction, config, work_root=tmp_path)


def test_synthetic_row_loads_with_the_test_patch_test_as_fail_to_pass(gitbug_root):
    task = gitbug_root["task"]
    assert task.fail_to_pass == ["org.example.CalcTest#testAdd"]
    assert task.pass_to_pass == ["org.example.CalcTest#testSub"]


def test_gold_patch_is_resolved(gitbug_root, tmp_path):
    outcome = grade_patch(gitbug_root, gitbug_root["task"].gold_patch, tmp_path)
    assert outcome.status == "resolved" and outcome.reason is None, outcome.log
    status = outcome.report[gitbug_root["task"].instance_id]["tests_status"]
    assert status["FAIL_TO_PASS"] == {"success": ["org.example.CalcTest#testAdd"], "failure": []}
    assert outcome.test_statuses == {
        "org.example.CalcTest#testAdd": "PASSED",
        "org.example.CalcTest#testSub": "PASSED",
    }
    assert "$ " + str(gitbug_root["root"] / "gitbug-java") + " run" in outcome.log


def test_wrong_patch_is_unresolved(gitbug_root, tmp_path):
    wrong = gitbug_root["task"].gold_patch.replace("+    return a + b", "+    return a * b")
    outcome = grade_patch(gitbug_root, wrong, tmp_path)
    assert outcome.status == "unresolved" and outcome.patch_applied, outcome.log
    assert outcome.test_statuses["org.example.CalcTest#testAdd"] == "FAILED"
    report = outcome.report[gitbug_root["task"].instance_id]
    assert report["resolved"] is False and report["tests_status"]["PASS_TO_PASS"]["success"] == [
        "org.example.CalcTest#testSub"
    ]


def test_a_fuzzy_patch_keeps_the_test_patch_and_gitbug_json(gitbug_root, tmp_path):
    """Only `patch --fuzz` applies this one; the harness's resets between attempts must not undo the checkout."""
    fuzzy = gitbug_root["task"].gold_patch.replace(" def add(a, b):", " def add(a,b):")
    outcome = grade_patch(gitbug_root, fuzzy, tmp_path)
    assert outcome.apply_command.startswith("patch"), outcome.log
    assert outcome.status == "resolved", outcome.log


def test_model_edits_to_the_test_patch_files_are_undone(gitbug_root, tmp_path):
    cheat = gitbug_root["task"].gold_patch.replace("+    return a + b", "+    return a * b") + diff(
        Path(gitbug_root["row"]["clone_url"]),
        "run_tests.py",
        RUN_TESTS.replace("calc.sub(5, 3) == 2", "True"),
    )
    outcome = grade_patch(gitbug_root, cheat, tmp_path)
    assert outcome.test_infra_edits == ["run_tests.py"]
    assert outcome.status == "unresolved", outcome.log


def test_a_patch_to_the_tools_own_files_is_refused(gitbug_root, tmp_path):
    patch = "diff --git a/gitbug.json b/gitbug.json\n--- a/gitbug.json\n+++ b/gitbug.json\n@@ -1 +1 @@\n-{}\n+{}\n"
    outcome = grade_patch(gitbug_root, patch, tmp_path)
    assert outcome.status == "patch_apply_failed" and "gitbug.json" in outcome.reason


def test_a_crash_of_run_is_an_error_with_a_reason(gitbug_root, tmp_path, monkeypatch):
    monkeypatch.setenv("GITBUG_JAVA_STANDIN_CRASH", "1")
    outcome = grade_patch(gitbug_root, gitbug_root["task"].gold_patch, tmp_path)
    assert outcome.status == "error" and "wrote no .gitbug-java/test-results.json" in outcome.reason
    assert "RuntimeError" in outcome.log


def test_a_run_where_no_test_ran_is_an_error_unless_the_build_failed(gitbug_root, tmp_path, monkeypatch):
    monkeypatch.setenv("GITBUG_JAVA_STANDIN_TESTS", "echo nothing to see")
    outcome = grade_patch(gitbug_root, gitbug_root["task"].gold_patch, tmp_path)
    assert outcome.status == "error" and "ran no test of the 2 expected" in outcome.reason
    monkeypatch.setenv("GITBUG_JAVA_STANDIN_TESTS", "echo '[ERROR] COMPILATION ERROR :'; exit 1")
    outcome = grade_patch(gitbug_root, gitbug_root["task"].gold_patch, tmp_path)
    assert outcome.status == "unresolved" and "does not compile" in outcome.reason


def test_a_failed_checkout_is_an_error_with_a_reason(gitbug_root, tmp_path):
    task = gitbug_root["task"]
    other = Task.from_record({**task.to_record(), "instance_id": "example-calc-000000000000"})
    prediction = {"instance_id": other.instance_id, "model_name_or_path": "m", "model_patch": task.gold_patch}
    outcome = gitbug.grade_gitbug(
        other, prediction, gitbug.GitBugJavaConfig(root=gitbug_root["root"]), tmp_path
    )
    assert (
        outcome.status == "error"
        and "gitbug-java checkout example-calc-000000000000 failed" in outcome.reason
    )


def test_harness_runs_the_cli_found_on_path(gitbug_root, tmp_path, monkeypatch):
    checkout = tmp_path / "elsewhere"
    (checkout / "data" / "bugs").mkdir(parents=True)
    config = gitbug.GitBugJavaConfig(root=checkout, timeout_s=60)
    task = gitbug_root["task"]
    predictions = [
        {"instance_id": task.instance_id, "model_name_or_path": "m", "model_patch": task.gold_patch}
    ]
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(gitbug.GitBugJavaError, match="on PATH"):
        gitbug.run_gitbug_harness([task], predictions, tmp_path / "out", "r", config=config)
    monkeypatch.setenv("PATH", f"{gitbug_root['root']}{os.pathsep}{path}")
    summaries = gitbug.run_gitbug_harness([task], predictions, tmp_path / "out", "r", config=config)
    assert summaries["m"]["resolved_instances"] == 1


def test_genuine_rows_load_through_the_fetch_path_as_they_are(tmp_path):
    """The upstream data/bugs files (one JSON line each) read by our own reader: null and string messages mixed
    across files broke the `datasets` JSON builder."""
    from repairrl.data.loaders import load_tasks

    merged = tmp_path / "bugs.json"
    merged.write_text("".join(p.read_text() for p in sorted((FIXTURES / "bugs").glob("*.json"))))
    spec = DatasetSpec(name="gitbug_java", format="gitbug-java", path=str(merged))
    tasks = load_tasks(spec).tasks
    assert [len(t.fail_to_pass) for t in tasks] == [1, 1, 1, 1]
    assert all(t.repo_url.startswith("https://github.com/gitbugactions/") for t in tasks)
