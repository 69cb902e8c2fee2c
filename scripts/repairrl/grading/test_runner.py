"""Run chosen tests of a task in a working copy and read back one status per test.

The command prints swebench's log markers around per-test lines (`PASSED <id>`, `FAILED <id>`, `ERROR <id>`),
the format of pytest's `-rA` summary, so swebench's own `parse_log_pytest` reads the logs of both frameworks:
pytest node ids (`tests/test_x.py::test_y`) and JUnit 4 ids (`com.example.FooTest#testBar`).

Each test runs with a timeout (pytest-timeout's signal method for pytest, a watchdog in PerTestRunner for JUnit):
a test that runs out counts as FAILED, the other tests still run, and its id is read back from a `TIMEOUT <id>`
line of the log (`timed_out_tests`), so code that loops forever costs one test's timeout rather than the whole command's.

The command runner is injectable: by default a plain subprocess in the working copy; the sandbox backends
pass their own `run`, so the same command runs confined.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from repairrl.sandbox.base import CommandResult
from repairrl.tasks import Task

START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"

JUNIT_CLASSPATH = ("/usr/share/java/junit4.jar", "/usr/share/java/hamcrest-core.jar")
# The JVM sizes its reservations from the machine's RAM (a heap of 1/4 of it, 1 GB of class space, a GC thread per
# core), which overruns a sandbox's address-space limit (`ulimit -v`) at random. Small, fixed sizes fit any limit.
JVM_OPTIONS = "-Xmx512m -Xss1m -XX:CompressedClassSpaceSize=128m -XX:ReservedCodeCacheSize=64m -XX:+UseSerialGC"
PER_TEST_RUNNER = Path(__file__).resolve().parent / "java" / "PerTestRunner.java"
DEFAULT_PER_TEST_TIMEOUT_S = 30.0
# Both runners name a test the per-test timeout stopped on a line `TIMEOUT <id>` (swebench's parser ignores it;
# the test's FAILED or ERROR line is there as well).
TIMEOUT_LINE = re.compile(r"^TIMEOUT (.+)$")

CommandRunner = Callable[[str, float], CommandResult]


class MissingTestTimeoutPlugin(RuntimeError):
    """pytest-timeout, which enforces the per-test timeout, is not installed in the grader's Python."""


class UnsupportedTestFramework(ValueError):
    """The task's tests are not run by this module (swebench and gitbug-java tasks have their own drivers)."""


@dataclass(frozen=True)
class TestRun:
    statuses: dict[str, str]  # test id -> PASSED | FAILED | ERROR | SKIPPED; a test not run is absent
    log: str
    timed_out: bool
    duration_s: float
    exit_code: int | None = None
    timed_out_tests: tuple[str, ...] = ()  # tests stopped by the per-test timeout (also FAILED or ERROR)

    __test__ = False  # not a pytest test class, despite the name

    def passed(self, test_id: str) -> bool:
        return self.statuses.get(test_id) == "PASSED"


def test_command(task: Task, test_ids: list[str], test_timeout_s: float | None = None) -> str:
    """A bash command, run from the working-copy root, that runs `test_ids` and prints their statuses;
    each test is stopped after `test_timeout_s` seconds (None: no per-test limit)."""
    if task.test_framework == "pytest":
        return _pytest_command(test_ids, test_timeout_s)
    if task.test_framework == "junit4":
        return _junit4_command(test_ids, test_timeout_s)
    raise UnsupportedTestFramework(
        f"{task.instance_id}: test framework {task.test_framework!r} is not run by repairrl.grading.test_runner;"
        " use the dataset's own driver (swebench eval script, gitbug-java)"
    )


test_command.__test__ = False  # type: ignore[attr-defined]


# pytest cuts the summary line's message to the terminal's width, so the id of a test pytest-timeout stopped is
# printed by this plugin instead, in PerTestRunner's format. It travels inside the command, like the Java runner.
PYTEST_TIMEOUT_REPORTER = """\
_timed_out = []


def pytest_runtest_logreport(report):
    message = getattr(getattr(report.longrepr, "reprcrash", None), "message", "") or ""
    if report.failed and message.startswith("Failed: Timeout (>") and report.nodeid not in _timed_out:
        _timed_out.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    for nodeid in _timed_out:
        terminalreporter.write_line("TIMEOUT " + nodeid)
"""
PYTEST_TIMEOUT_REPORTER_MODULE = "repairrl_timeout_report"


def _pytest_command(test_ids: list[str], test_timeout_s: float | None) -> str:
    # No bytecode and no cache directory: the working copy's `git status` must stay as the agent left it.
    pytest = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *test_ids]
    lines = []
    if test_timeout_s is not None:
        if importlib.util.find_spec("pytest_timeout") is None:
            raise MissingTestTimeoutPlugin(
                "pytest-timeout is not installed: `pip install pytest-timeout` (a repairrl dependency), or grade "
                "with test_timeout_s=None to run without per-test timeouts"
            )
        # pytest autoloads pytest-timeout from its entry point (`-p pytest_timeout` would register it twice). The
        # signal method fails the test and goes on with the next; the thread method would end the whole run.
        # (pytest reads options after the test ids too.)
        pytest += [
            f"--timeout={test_timeout_s:g}",
            "--timeout-method=signal",
            "-p",
            PYTEST_TIMEOUT_REPORTER_MODULE,
        ]
        lines += [
            "plugin_dir=$(mktemp -d)",
            "trap 'rm -rf \"$plugin_dir\"' EXIT",
            f"cat > \"$plugin_dir/{PYTEST_TIMEOUT_REPORTER_MODULE}.py\" <<'REPAIRRL_TIMEOUT_REPORT'",
            PYTEST_TIMEOUT_REPORTER.rstrip(),
            "REPAIRRL_TIMEOUT_REPORT",
            'export PYTHONPATH="$plugin_dir${PYTHONPATH:+:$PYTHONPATH}"',
        ]
    return "\n".join(
        [
            *lines,
            f"echo {shlex.quote(START_TEST_OUTPUT)}",
            f"PYTHONDONTWRITEBYTECODE=1 {shlex.join(pytest)}",
            "status=$?",
            f"echo {shlex.quote(END_TEST_OUTPUT)}",
            "exit $status",
        ]
    )


@cache
def _per_test_runner_source() -> str:
    return PER_TEST_RUNNER.read_text(encoding="utf-8")


def _junit4_command(test_ids: list[str], test_timeout_s: float | None) -> str:
    # The runner's source travels inside the command, so the command needs only java and the JUnit jars
    # wherever it runs (a sandbox may not see the package). Classes are compiled outside the working copy.
    classpath = ":".join(JUNIT_CLASSPATH)
    ids = " ".join(shlex.quote(test_id) for test_id in test_ids)
    timeout_ms = 0 if test_timeout_s is None else max(1, round(test_timeout_s * 1000))
    return f"""\
build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT
cat > "$build_dir/PerTestRunner.java" <<'REPAIRRL_PER_TEST_RUNNER'
{_per_test_runner_source().rstrip()}
REPAIRRL_PER_TEST_RUNNER
find src/main/java src/test/java -name '*.java' > "$build_dir/sources.txt" 2>/dev/null
echo "$build_dir/PerTestRunner.java" >> "$build_dir/sources.txt"
echo {shlex.quote(START_TEST_OUTPUT)}
javac_jvm=$(for option in {JVM_OPTIONS}; do printf -- '-J%s ' "$option"; done)
if javac $javac_jvm -nowarn -encoding UTF-8 -d "$build_dir/classes" -cp {classpath} @"$build_dir/sources.txt" 2>&1; then
  java {JVM_OPTIONS} -Drepairrl.testTimeoutMs={timeout_ms} -cp "$build_dir/classes:{classpath}" PerTestRunner {ids}
  status=$?
else
  echo "compilation failed: every requested test counts as failed"
  for test_id in {ids}; do echo "FAILED $test_id"; done
  status=1
fi
echo {shlex.quote(END_TEST_OUTPUT)}
exit $status"""


def parse_test_log(log: str) -> dict[str, str]:
    """Test statuses from the text between swebench's markers (the whole log if the markers are missing)."""
    from swebench.harness.log_parsers import parse_log_pytest

    start = log.find(START_TEST_OUTPUT)
    if start != -1:
        log = log[start + len(START_TEST_OUTPUT) :]
        end = log.find(END_TEST_OUTPUT)
        if end != -1:
            log = log[:end]
    # parse_log_pytest ignores its test_spec argument; the summary format is all it needs.
    return parse_log_pytest(log, None)


def timed_out_test_ids(log: str) -> tuple[str, ...]:
    """The tests the per-test timeout stopped, from either runner's output, in order, without repeats."""
    found: list[str] = []
    for line in log.splitlines():
        match = TIMEOUT_LINE.match(line)
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return tuple(found)


def subprocess_runner(workdir: str | os.PathLike) -> CommandRunner:
    """Run commands with bash in `workdir`; on timeout the whole process group is killed."""

    def run(command: str, timeout_s: float) -> CommandResult:
        started = time.monotonic()
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process.pid)
            output, _ = process.communicate()
        return CommandResult(
            command=command,
            exit_code=None if timed_out else process.returncode,
            output=output.decode("utf-8", errors="replace"),
            duration_s=time.monotonic() - started,
            timed_out=timed_out,
        )

    return run


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_tests(
    workdir: str | os.PathLike,
    task: Task,
    test_ids: list[str],
    timeout_s: float,
    runner: CommandRunner | None = None,
    test_timeout_s: float | None = DEFAULT_PER_TEST_TIMEOUT_S,
) -> TestRun:
    """Run `test_ids` of `task` in `workdir` (or through `runner`, e.g. a sandbox's `run`): the whole command
    within `timeout_s`, each test within `test_timeout_s` (None: no per-test limit)."""
    runner = runner or subprocess_runner(workdir)
    if not test_ids:
        return TestRun(statuses={}, log="", timed_out=False, duration_s=0.0, exit_code=0)
    result = runner(test_command(task, test_ids, test_timeout_s), timeout_s)
    return TestRun(
        statuses=parse_test_log(result.output),
        timed_out_tests=timed_out_test_ids(result.output),
        log=result.output,
        timed_out=result.timed_out,
        duration_s=result.duration_s,
        exit_code=result.exit_code,
    )
