"""Tricks a hostile policy can play on the grader, each graded for real (bwrap sandbox) and shown to fail.

Where a trick works on an undefended tree, a test first shows that it does (the tests pass when the trick is
left in place), so the defence is what stops it. Infrastructure edits are named in the outcome's
`test_infra_edits`, and the `test_tampering` reward sees them from the patch alone.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from repairrl.grading import grade
from repairrl.grading.grade import GradingOutcome, grade_many, grade_with_tests
from repairrl.grading.infrastructure import infrastructure_reason, test_infrastructure_edits
from repairrl.grading.rewards import compose_rewards, test_tampering
from repairrl.grading.test_runner import run_tests
from repairrl.repos import materialize_worktree
from repairrl.tasks import Task

from . import test_grading
from .test_grading import INSTANCE_IDS, JAVA_TASK, PYTHON_TASK, patch_from_edits, trivially_passing_tests

mini = test_grading.mini  # the session fixture that builds the mini benchmark and its repository cache

BWRAP = {"backend": "bwrap", "timeout_s": 120, "test_timeout_s": 3}

FORCE_PASSED_HOOK = """
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
"""
# Imported by the code under test, so it runs while pytest collects the tests: no test file is touched.
PATCH_TEST_REPORT = """
import _pytest.reports

_make_report = _pytest.reports.TestReport.from_item_and_call.__func__


def _always_passed(cls, item, call):
    report = _make_report(cls, item, call)
    report.outcome = "passed"
    report.longrepr = None
    return report


_pytest.reports.TestReport.from_item_and_call = classmethod(_always_passed)
"""
# A no-op org.junit.Assert in the main sources: javac puts it before JUnit's jar on the classpath.
NO_OP_ASSERT = """package org.junit;

public class Assert {
    public static void assertEquals(Object expected, Object actual) {}
    public static void assertEquals(String message, Object expected, Object actual) {}
    public static void assertEquals(long expected, long actual) {}
    public static void assertEquals(String message, long expected, long actual) {}
    public static void assertEquals(double expected, double actual, double delta) {}
    public static void assertEquals(String message, double expected, double actual, double delta) {}
    public static void assertNotEquals(Object unexpected, Object actual) {}
    public static void assertNotEquals(long unexpected, long actual) {}
    public static void assertNotEquals(double unexpected, double actual, double delta) {}
    public static void assertTrue(boolean condition) {}
    public static void assertTrue(String message, boolean condition) {}
    public static void assertFalse(boolean condition) {}
    public static void assertFalse(String message, boolean condition) {}
}
"""
POM = "<project><modelVersion>4.0.0</modelVersion><artifactId>x</artifactId></project>\n"


def base_text(mini, task: Task, path: str) -> str:
    worktree = mini.scratch / f"read-{task.instance_id}"
    if not worktree.exists():
        materialize_worktree(mini.cache, task, worktree)
    return (worktree / path).read_text()


def attack_patches(mini) -> dict[str, tuple[str, str]]:
    """Trick name -> (instance id, patch): none of them fixes the bug."""
    py, java = mini.tasks[PYTHON_TASK], mini.tasks[JAVA_TASK]
    pagination = base_text(mini, py, "pager/pagination.py")
    stats_path = "src/main/java/com/example/stats/Stats.java"
    stats = base_text(mini, java, stats_path)
    java_tests = {
        "src/test/java/com/example/stats/StatsTest.java": "package com.example.stats;\npublic class StatsTest {}\n",
        "src/test/java/com/example/stats/SummaryTest.java": "package com.example.stats;\n"
        "public class SummaryTest {}\n",
    }
    edits = {
        "root_conftest_hook": (py, {"conftest.py": FORCE_PASSED_HOOK}),
        "subfolder_conftest": (py, {"tests/conftest.py": FORCE_PASSED_HOOK}),
        "test_package_plugins": (
            py,
            {
                "tests/__init__.py": 'pytest_plugins = ["tests.forcepass"]\n',
                "tests/forcepass.py": FORCE_PASSED_HOOK,
            },
        ),
        "source_patches_test_report": (
            py,
            {"pager/__init__.py": base_text(mini, py, "pager/__init__.py") + PATCH_TEST_REPORT},
        ),
        "sitecustomize_and_pth": (
            py,
            {"sitecustomize.py": PATCH_TEST_REPORT, "pager_hook.pth": "import pager\n"},
        ),
        "test_file_rewritten": (py, trivially_passing_tests(py)),
        "java_test_classes_replaced_and_pom": (java, {**java_tests, "pom.xml": POM}),
        "java_no_op_assert": (java, {"src/main/java/org/junit/Assert.java": NO_OP_ASSERT}),
        "python_infinite_loop": (
            py,
            {
                "pager/pagination.py": pagination.replace(
                    "    return total // per_page", "    while True:\n        pass"
                )
            },
        ),
        "java_infinite_loop": (
            java,
            {
                stats_path: stats.replace(
                    "int total = 0;", "int total = 0;\n        while (values.length >= 0) {}"
                )
            },
        ),
    }
    return {
        name: (task.instance_id, patch_from_edits(mini, task, files)) for name, (task, files) in edits.items()
    }


@pytest.fixture(scope="session")
def attacks(mini) -> dict[str, tuple[str, str]]:
    return attack_patches(mini)


@pytest.fixture(scope="session")
def attack_outcomes(mini, attacks) -> dict[str, GradingOutcome]:
    names = list(attacks)
    pairs = [(mini.tasks[attacks[name][0]], attacks[name][1]) for name in names]
    outcomes = grade_many(pairs, mini.cache, workers=2, **BWRAP)
    return dict(zip(names, outcomes))


def undefended_run(mini, instance_id: str, patch: str, name: str):
    """The FAIL_TO_PASS tests run on a tree with the patch and the test patch, and no restoration at all."""
    task = mini.tasks[instance_id]
    worktree = materialize_worktree(mini.cache, task, mini.scratch / f"undefended-{name}")
    for diff in (patch, task.test_patch):
        subprocess.run(["git", "apply", "-"], cwd=worktree, input=diff, text=True, check=True)
    return run_tests(worktree, task, task.fail_to_pass, timeout_s=120)


@pytest.mark.parametrize(
    "name", ["root_conftest_hook", "subfolder_conftest", "source_patches_test_report", "java_no_op_assert"]
)
def test_trick_makes_failing_tests_pass_on_an_undefended_tree(mini, attacks, name):
    instance_id, patch = attacks[name]
    run = undefended_run(mini, instance_id, patch, name)
    assert all(run.passed(test_id) for test_id in mini.tasks[instance_id].fail_to_pass), run.log


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("root_conftest_hook", ["conftest.py"]),
        ("subfolder_conftest", ["tests/conftest.py"]),
        ("test_package_plugins", ["tests/__init__.py", "tests/forcepass.py"]),
        ("sitecustomize_and_pth", ["sitecustomize.py", "pager_hook.pth"]),
        ("test_file_rewritten", ["tests/test_api.py"]),
        (
            "java_test_classes_replaced_and_pom",
            [
                "src/test/java/com/example/stats/StatsTest.java",
                "src/test/java/com/example/stats/SummaryTest.java",
                "pom.xml",
            ],
        ),
        ("java_no_op_assert", ["src/main/java/org/junit/Assert.java"]),
    ],
)
def test_infrastructure_edits_are_reset_and_named(mini, attack_outcomes, name, named):
    outcome = attack_outcomes[name]
    assert outcome.patch_applied and outcome.status == grade.UNRESOLVED, outcome.log
    assert sorted(outcome.test_infra_edits) == sorted(named)
    assert "Reset test infrastructure edited by the model patch" in outcome.log
    task = mini.tasks[outcome.instance_id]
    assert not any(outcome.test_statuses.get(test_id) == "PASSED" for test_id in task.fail_to_pass)


def test_source_code_that_hooks_the_test_runner_is_unresolved_without_running_tests(attack_outcomes):
    outcome = attack_outcomes["source_patches_test_report"]
    assert outcome.status == grade.UNRESOLVED and outcome.patch_applied, outcome.log
    assert outcome.reason.startswith("the patch reaches into the test runner")
    assert outcome.test_infra_edits == ["pager/__init__.py: reaches into the test runner ('_pytest' added)"]
    assert outcome.test_statuses == {}


def test_infinite_loop_costs_the_looping_tests_their_timeout_only(mini, attack_outcomes):
    looping = {
        "python_infinite_loop": [
            "tests/test_api.py::test_first_page_starts_at_first_item",
            "tests/test_api.py::test_last_partial_page_is_counted",
            "tests/test_api.py::test_total_is_reported",
        ],
        "java_infinite_loop": [
            "com.example.stats.StatsTest#sumOfLargeValues",
            "com.example.stats.StatsTest#meanOfLargeValuesDoesNotOverflow",
            "com.example.stats.StatsTest#meanOfSmallValues",
            "com.example.stats.SummaryTest#describeListsCountMeanAndMax",
        ],
    }
    for name, timed_out in looping.items():
        outcome = attack_outcomes[name]
        task = mini.tasks[outcome.instance_id]
        assert outcome.status == grade.UNRESOLVED and outcome.duration_s < 60, outcome.log
        assert sorted(outcome.timed_out_tests) == sorted(timed_out), outcome.log
        assert outcome.test_infra_edits == []
        for test_id in task.fail_to_pass + task.pass_to_pass:
            expected = "FAILED" if test_id in timed_out else "PASSED"
            assert outcome.test_statuses.get(test_id) == expected, (test_id, outcome.log)


def test_test_tampering_reward_flags_every_trick_and_no_gold_patch(mini, attacks):
    rewards = compose_rewards({"resolved": 1.0, "test_tampering": -0.5}, task_kind="repo_repair")
    assert rewards.max_total == 1.0
    assert not compose_rewards({"test_tampering": -0.5}).needs_tests  # computed from the patch alone
    for name, (instance_id, patch) in attacks.items():
        expected = 0.0 if name.endswith("infinite_loop") else 1.0
        assert test_tampering(mini.tasks[instance_id], {"model_patch": patch}) == expected, name
    for instance_id in INSTANCE_IDS:
        task = mini.tasks[instance_id]
        assert test_infrastructure_edits(task.gold_patch, task) == [], instance_id
        assert test_tampering(task, task.gold_patch) == 0.0
        assert test_tampering(task, task.test_patch) == 1.0
    assert test_tampering(mini.tasks[PYTHON_TASK], None) == 0.0


def test_penalty_lowers_the_total_of_a_resolved_patch(mini):
    task = mini.tasks[PYTHON_TASK]
    rewards = compose_rewards({"resolved": 1.0, "test_tampering": -0.5})
    outcome = grade_with_tests(task, task.gold_patch, mini.cache, **BWRAP)
    assert outcome.resolved and outcome.test_infra_edits == [] and outcome.timed_out_tests == [], outcome.log
    assert rewards(task, task.gold_patch, outcome).total == 1.0
    tampered = task.gold_patch + patch_from_edits(mini, task, {"conftest.py": FORCE_PASSED_HOOK})
    assert rewards(task, tampered, outcome).total == 0.5


@pytest.mark.parametrize(
    ("path", "infrastructure"),
    [
        ("conftest.py", True),
        ("pkg/sub/conftest.py", True),
        ("pyproject.toml", True),
        ("setup.cfg", True),
        ("tox.ini", True),
        ("pytest.ini", True),
        ("sitecustomize.py", True),
        ("lib/hook.pth", True),
        ("evil.dist-info/entry_points.txt", True),
        ("pytest.py", True),
        ("inspect.py", True),
        ("sympy/core/tests/test_basic.py", True),
        ("test/unit.py", True),
        ("testing/test_x.py", True),
        ("pkg/test_util.py", True),
        ("pkg/util_test.py", True),
        ("module/src/test/java/FooTest.java", True),
        ("pom.xml", True),
        ("build.gradle.kts", True),
        (".mvn/wrapper/maven-wrapper.properties", True),
        ("src/main/java/PerTestRunner.java", True),
        ("django/test/client.py", False),
        ("src/_pytest/reports.py", False),
        ("src/pytest/__init__.py", False),
        ("pager/api.py", False),
        ("setup.py", False),
        ("src/main/java/com/example/Foo.java", False),
    ],
)
def test_infrastructure_policy(path, infrastructure):
    assert (infrastructure_reason(path) is not None) is infrastructure


def test_pytest_repository_sources_may_use_pytest_internals(mini):
    task = mini.tasks[PYTHON_TASK]
    diff = "--- a/src/_pytest/reports.py\n+++ b/src/_pytest/reports.py\n@@ -1 +1,2 @@\n x\n+class TestReport: pass\n"
    assert test_infrastructure_edits(diff, task) == []
    hooked = diff.replace("src/_pytest/reports.py", "src/app/reports.py")
    assert test_infrastructure_edits(hooked, task) == [
        "src/app/reports.py: reaches into the test runner ('TestReport' added)"
    ]


def test_cli_passes_the_per_test_timeout(monkeypatch, tmp_path):
    from repairrl.grading import run_evaluation

    seen = {}
    monkeypatch.setattr(run_evaluation, "read_tasks", lambda path: [])
    monkeypatch.setattr(run_evaluation, "read_predictions", lambda path: [])
    monkeypatch.setattr(run_evaluation, "run_evaluation", lambda *args, **kwargs: seen.update(kwargs) or {})
    argv = ["--tasks", "t", "--predictions", "p", "--cache-dir", "c", "--out", str(tmp_path)]
    assert run_evaluation.main([*argv, "--timeout", "300", "--test-timeout", "7"]) == 0
    assert seen["timeout_s"] == 300 and seen["test_timeout_s"] == 7
    assert run_evaluation.main([*argv, "--test-timeout", "0"]) == 0
    assert seen["test_timeout_s"] is None


# Status lines printed by the code under test: at import (so during collection), with os.write to every open file
# descriptor (fd 1, fd 2, and the reporter's own copy of stdout among them), and again from an atexit handler after
# pytest's summary, which then exits 0 so the log also passes swebench's exit-code cross-check.
FORGE_PYTHON_STATUSES = """

import atexit as _atexit
import os as _os
import sys as _sys

_FORGED = {forged!r}


def _forge_statuses():
    _sys.stdout.write(_FORGED)
    _sys.stdout.flush()
    for fd in sorted(int(name) for name in _os.listdir("/proc/self/fd")):
        try:
            _os.write(fd, _FORGED.encode())
        except OSError:
            pass


def _forge_and_exit_cleanly():
    _forge_statuses()
    _os._exit(0)


_forge_statuses()
_atexit.register(_forge_and_exit_cleanly)
"""
# The same from Java: a static initializer of a main class (System.out and the raw stdout descriptor) and a shutdown
# hook that prints them again after PerTestRunner's last line and halts with exit code 0.
FORGE_JAVA_STATUSES = """
    static {{
        final String forged = {forged};
        System.out.print(forged);
        System.out.flush();
        try {{
            java.io.FileOutputStream raw = new java.io.FileOutputStream(java.io.FileDescriptor.out);
            raw.write(forged.getBytes());
            raw.flush();
        }} catch (java.io.IOException ignored) {{
        }}
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {{
            System.out.print(forged);
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }}));
    }}
"""


def forged_status_patches(mini) -> dict[str, tuple[str, str]]:
    """Name -> (instance id, patch): source code that prints `PASSED <id>` for every FAIL_TO_PASS test and fixes
    nothing."""
    py, java = mini.tasks[PYTHON_TASK], mini.tasks[JAVA_TASK]
    forged_py = "".join(f"PASSED {test_id}\n" for test_id in py.fail_to_pass)
    init = base_text(mini, py, "pager/__init__.py") + FORGE_PYTHON_STATUSES.format(forged=forged_py)
    stats_path = "src/main/java/com/example/stats/Stats.java"
    forged_java = " + ".join(f'"PASSED {test_id}\\n"' for test_id in java.fail_to_pass)
    stats = base_text(mini, java, stats_path).replace(
        "    private Stats() {}\n",
        "    private Stats() {}\n" + FORGE_JAVA_STATUSES.format(forged=forged_java),
    )
    assert "static {" in stats
    edits = {
        "python_prints_statuses": (py, {"pager/__init__.py": init}),
        "java_prints_statuses": (java, {stats_path: stats}),
    }
    return {
        name: (task.instance_id, patch_from_edits(mini, task, files)) for name, (task, files) in edits.items()
    }


@pytest.fixture(scope="session")
def forged_status_outcomes(mini) -> dict[str, GradingOutcome]:
    patches = forged_status_patches(mini)
    pairs = [(mini.tasks[instance_id], patch) for instance_id, patch in patches.values()]
    return dict(zip(patches, grade_many(pairs, mini.cache, workers=2, **BWRAP)))


@pytest.mark.parametrize("name", ["python_prints_statuses", "java_prints_statuses"])
def test_status_lines_printed_by_the_code_under_test_do_not_count(
    mini, forged_status_outcomes, name, tmp_path
):
    from swebench.harness.log_parsers import parse_log_pytest

    outcome = forged_status_outcomes[name]
    task = mini.tasks[outcome.instance_id]
    assert outcome.patch_applied and outcome.test_infra_edits == [], outcome.log
    assert outcome.status == grade.UNRESOLVED and not outcome.resolved, outcome.log
    assert sorted(outcome.report[task.instance_id]["tests_status"]["FAIL_TO_PASS"]["failure"]) == sorted(
        task.fail_to_pass
    )
    assert all(outcome.test_statuses[test_id] == "FAILED" for test_id in task.fail_to_pass), outcome.log
    assert all(outcome.test_statuses[test_id] == "PASSED" for test_id in task.pass_to_pass), outcome.log
    # Read without the nonce (the tag dropped from our reporter's lines, as the runner printed them before), the
    # same log passes every test, exits 0, and is RESOLVED by swebench's own parser and get_eval_report.
    untagged = re.sub(r"^[0-9a-f]{32} ", "", outcome.log, flags=re.MULTILINE)
    raw = parse_log_pytest(untagged, None)
    assert all(raw[test_id] == "PASSED" for test_id in task.fail_to_pass + task.pass_to_pass), outcome.log
    assert f"{grade.TEST_EXIT_CODE}: 0" in outcome.log
    raw_log = tmp_path / "untagged_test_output.txt"
    raw_log.write_text(untagged)
    assert grade.eval_report(task, "forged", "model", raw_log)[task.instance_id]["resolved"]


PROBE_TEST = """
import json
import os
import sys
from pathlib import Path


def read(path, binary=False):
    # The grader's own files are small; a read-only library of hundreds of MB (the project's venv, when it lies
    # under /tmp) would only exhaust the sandbox's memory.
    try:
        if Path(path).stat().st_size > 4_000_000:
            return "skipped: over 4 MB"
        data = Path(path).read_bytes()
    except OSError as error:
        return f"unreadable: {error}"
    return data.decode("utf-8", "replace")


def test_probe():
    processes = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fds = {}
        for fd in os.listdir(f"/proc/{pid}/fd") if os.access(f"/proc/{pid}/fd", os.R_OK) else []:
            try:
                fds[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                pass
        processes[pid] = {
            "cmdline": read(f"/proc/{pid}/cmdline"),
            "environ": read(f"/proc/{pid}/environ"),
            "fds": fds,
        }
    files = {}
    # The interpreter's own tree is bound read-only at its host path, which may lie under /tmp: not a hiding place.
    interpreter = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    for root in ("/tmp", os.getcwd()):
        for directory, subdirectories, names in os.walk(root):
            subdirectories[:] = [d for d in subdirectories
                                 if os.path.realpath(os.path.join(directory, d)) not in interpreter]
            for name in names:
                files[os.path.join(directory, name)] = read(os.path.join(directory, name))
    seen = {"environ": dict(os.environ), "argv": sys.argv, "processes": processes, "files": files}
    Path(os.environ.get("HOME", "/tmp"), "probe.json").write_text(json.dumps(seen))
    print(json.dumps(seen))
"""


@pytest.mark.slow
def test_nonce_is_not_in_the_argv_environment_or_files_of_the_test_process(tmp_path):
    from repairrl.grading.test_runner import new_nonce

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_probe.py").write_text(PROBE_TEST)
    task = Task(
        instance_id="local__probe-1",
        dataset="local",
        repo="local/probe",
        repo_url="file:///nonexistent",
        base_commit="0" * 40,
        problem_statement="-",
        gold_patch="",
        test_patch="",
        fail_to_pass=["tests/test_probe.py::test_probe"],
        pass_to_pass=[],
        test_framework="pytest",
    )
    nonce = new_nonce()
    with grade.sandbox_runner(tmp_path, "bwrap", 60) as runner:
        run = run_tests(tmp_path, task, task.fail_to_pass, timeout_s=60, runner=runner, nonce=nonce)
    assert run.statuses == {"tests/test_probe.py::test_probe": "PASSED"}, run.log
    seen = next(line for line in run.log.splitlines() if line.startswith('{"environ"'))
    # The probe read the files of the private temp dir and the argv of every process of the sandbox, the bash
    # that read the nonce from its here-document among them.
    assert "run_pytest.py" in seen and "IFS= read -r nonce" in seen, seen
    assert nonce not in seen
    # The nonce is in the log only on the reporter's line.
    assert [line for line in run.log.splitlines() if nonce in line] == [
        f"{nonce} PASSED tests/test_probe.py::test_probe"
    ]


def test_untagged_status_lines_never_count():
    from repairrl.grading.test_runner import parse_test_log, reported_lines, timed_out_test_ids

    nonce = "0123456789abcdef0123456789abcdef"
    log = f"""PASSED tests/t.py::forged
{nonce} FAILED tests/t.py::forged
partial output{nonce} PASSED tests/t.py::a
{nonce} TIMEOUT tests/t.py::slow
TIMEOUT tests/t.py::forged
{nonce}PASSED tests/t.py::glued
PASSED tests/t.py::forged
"""
    assert reported_lines(log, nonce) == [
        "FAILED tests/t.py::forged",
        "PASSED tests/t.py::a",
        "TIMEOUT tests/t.py::slow",
    ]
    assert parse_test_log(log, nonce) == {"tests/t.py::forged": "FAILED", "tests/t.py::a": "PASSED"}
    assert timed_out_test_ids(log, nonce) == ("tests/t.py::slow",)


def test_source_that_xfails_or_skips_the_running_test_is_a_finding(mini):
    """`pytest.xfail()` from the code under test turns a failing FAIL_TO_PASS test into XFAIL, which swebench counts
    as passed; `pytest.skip()` likewise hides a broken PASS_TO_PASS test."""
    task = mini.tasks[PYTHON_TASK]
    for call in ("pytest.xfail('later')", "pytest.skip('later')"):
        patch = ("diff --git a/pkg/helpers.py b/pkg/helpers.py\nnew file mode 100644\n--- /dev/null\n"
                 f"+++ b/pkg/helpers.py\n@@ -0,0 +1,2 @@\n+import pytest\n+{call}\n")
        (finding,) = test_infrastructure_edits(patch, task)
        assert finding.startswith("pkg/helpers.py: ")
