"""Run chosen tests of a task in a working copy and read back one status per test.

The command prints swebench's log markers around per-test lines (`PASSED <id>`, `FAILED <id>`, `ERROR <id>`,
each behind the run's nonce, see below), the format of pytest's `-rA` summary, so swebench's own `parse_log_pytest` reads the logs of both frameworks:
pytest node ids (`tests/test_x.py::test_y`) and JUnit 4 ids (`com.example.FooTest#testBar`).

Status lines that code under test cannot forge by printing. Code under test can print `PASSED <id>` as well as
pytest can (from an `atexit` handler after the summary, with `os.write` to fd 1, from a Java static initializer
or shutdown hook), so only the lines our own reporter prints count: each run gets a fresh random nonce, the
reporter (a pytest plugin object that travels inside the command, or PerTestRunner for JUnit) prefixes every
status line with it (`<nonce> PASSED <id>`), and the reader keeps only the lines that carry it, strips it, and
hands exactly those to swebench's parser. Everything else stays in the log for people and never counts.

How the nonce travels, out of sight of the code under test: the command is `exec bash -c <script>` with the
nonce in a here-document, so the bash that runs the tests reads the nonce from stdin and has an argv without it (the sandboxes run each command as `bash -c <command>`, whose argv /proc shows to
every process; `exec` replaces it). That bash writes the nonce to a file in a fresh private temp dir; the
pytest entry point, or PerTestRunner's `main`, reads that file and deletes it before any module or class of the
working copy is loaded (the entry point imports pytest before it puts the working copy on sys.path, as
`python -m pytest` would have). So the nonce is in no argv, no environment and no file while tests run.

Residual risk: the nonce stays in the memory of the test process (the reporter's closure, PerTestRunner's
field) and of the bashes that started it (the sandbox's driver keeps the command's text). Code under test that goes looking for it (gc or frame introspection,
Java reflection, reading /proc/<pid>/mem where ptrace rules allow, or taking over the reporter's own file
descriptor with dup2) can still forge statuses. The nonce closes the plain trick of printing status lines;
in-process tampering is what repairrl.grading.infrastructure's tripwire and the sandbox bound.

Each test runs with a timeout (pytest-timeout's signal method for pytest, a watchdog in PerTestRunner for JUnit):
a test that runs out counts as FAILED, the other tests still run, and its id is read back from a
`<nonce> TIMEOUT <id>` line of the log (`timed_out_tests`), so code that loops forever costs one test's timeout
rather than the whole command's.

The command runner is injectable: by default a plain subprocess in the working copy; the sandbox backends
pass their own `run`, so the same command runs confined.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
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
# Both runners name a test the per-test timeout stopped on a line `<nonce> TIMEOUT <id>` (swebench's parser
# ignores it; the test's FAILED or ERROR line is there as well).
TIMEOUT_LINE = re.compile(r"^TIMEOUT (.+)$")
# The nonce travels in a here-document and names nothing: letters and digits only, long enough not to be guessed.
NONCE_PATTERN = re.compile(r"[0-9A-Za-z]{16,}")

CommandRunner = Callable[[str, float], CommandResult]


class MissingTestTimeoutPlugin(RuntimeError):
    """pytest-timeout, which enforces the per-test timeout, is not installed in the grader's Python."""


class UnsupportedTestFramework(ValueError):
    """The task's tests are not run by this module (swebench and gitbug-java tasks have their own drivers)."""


@dataclass(frozen=True)
class TestRun:
    statuses: dict[str, str]  # test id -> PASSED | FAILED | ERROR | SKIPPED | XFAIL; a test not run is absent
    log: str
    timed_out: bool
    duration_s: float
    exit_code: int | None = None
    timed_out_tests: tuple[str, ...] = ()  # tests stopped by the per-test timeout (also FAILED or ERROR)
    # The lines our reporter printed with the run's nonce, without it: all that grading reads of the log.
    status_lines: tuple[str, ...] = ()

    __test__ = False  # not a pytest test class, despite the name

    def passed(self, test_id: str) -> bool:
        return self.statuses.get(test_id) == "PASSED"


def new_nonce() -> str:
    """A fresh nonce for one test run: the tag of the status lines that count."""
    return secrets.token_hex(16)


def test_command(task: Task, test_ids: list[str], test_timeout_s: float | None = None, *, nonce: str) -> str:
    """A bash command, run from the working-copy root, that runs `test_ids` and prints their statuses, each on a
    line that starts with `nonce`; each test is stopped after `test_timeout_s` seconds (None: no per-test limit).

    The nonce is in the command's text but not in the argv of any process that runs tests (see the module
    docstring), so the command must run as `bash -c <command>` or the like, never be written where tests see it.
    """
    if not NONCE_PATTERN.fullmatch(nonce):
        raise ValueError(f"a nonce is 16 or more letters and digits, not {nonce!r}: use new_nonce()")
    if task.test_framework == "pytest":
        return _with_private_nonce(_pytest_script(test_ids, test_timeout_s), nonce)
    if task.test_framework == "junit4":
        return _with_private_nonce(_junit4_script(test_ids, test_timeout_s), nonce)
    raise UnsupportedTestFramework(
        f"{task.instance_id}: test framework {task.test_framework!r} is not run by repairrl.grading.test_runner;"
        " use the dataset's own driver (swebench eval script, gitbug-java)"
    )


test_command.__test__ = False  # type: ignore[attr-defined]


def _with_private_nonce(script: str, nonce: str) -> str:
    """`script` run by a bash that reads the nonce from a here-document: `exec` replaces the argv of the bash
    that got this command (which shows the here-document's text) before any test starts. The script finds the
    nonce in `$nonce` and in the file `$private_dir/nonce`, which the test runner deletes once it has read it."""
    prologue = (
        "IFS= read -r nonce || exit 98\n"
        "exec </dev/null\n"
        "private_dir=$(mktemp -d)\n"
        "trap 'rm -rf \"$private_dir\"' EXIT\n"
        '(umask 077 && printf \'%s\\n\' "$nonce" > "$private_dir/nonce") || exit 98'
    )
    inner = shlex.quote(f"{prologue}\n{script}")
    here_document = f"<<'REPAIRRL_NONCE'\n{nonce}\nREPAIRRL_NONCE"
    return f"exec bash --noprofile --norc -c {inner} repairrl-tests {here_document}"


# The pytest entry point travels inside the command, like the Java runner, and runs as a script from the private
# dir: `python -m pytest` with a plugin object that prints the nonce-tagged status lines. Its statuses are the -rA
# summary's (a skipped test is not listed, an xfailed one is XFAIL) so swebench reads them as it reads -rA, and it
# names the tests pytest-timeout stopped itself (pytest cuts the summary line's message to the terminal's width).
PYTEST_ENTRY_POINT = '''\
"""repairrl's pytest entry point: `python -m pytest`, plus status lines tagged with the run's nonce."""
import os
import sys


def _read_nonce():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nonce")
    with open(path, encoding="ascii") as file:
        nonce = file.read().strip()
    os.unlink(path)
    return nonce


def _status_reporter(tag, fd):
    """A pytest plugin: after the run, `<nonce> <STATUS> <id>` for each test as the -rA summary lists it, in its
    order (so a test's last line is its status), then `<nonce> TIMEOUT <id>` for each test pytest-timeout stopped.
    The nonce lives only in this closure and the lines go to a copy of the original stdout, written with the
    os.write of start-up."""
    write = os.write
    words = {"passed": "PASSED", "xfailed": "XFAIL", "xpassed": "XPASS", "error": "ERROR", "failed": "FAILED"}
    listed = {category: [] for category in words}
    timed_out = []
    configs = []

    class StatusReporter:
        def pytest_configure(self, config):
            configs.append(config)

        def pytest_collectreport(self, report):
            if report.failed:
                listed["error"].append(report.nodeid)

        def pytest_runtest_logreport(self, report):
            status = configs[0].hook.pytest_report_teststatus(report=report, config=configs[0])
            category = status[0] if status else ""
            # -rA lists an xfail outside the call as "XFAIL at setup of <id>", which no parser reads as the test.
            if category in listed and (category != "xfailed" or report.when == "call"):
                listed[category].append(report.nodeid)
            message = getattr(getattr(report.longrepr, "reprcrash", None), "message", "") or ""
            if report.failed and message.startswith("Failed: Timeout (>") and report.nodeid not in timed_out:
                timed_out.append(report.nodeid)

        def pytest_terminal_summary(self):
            lines = [words[category] + " " + nodeid for category in words for nodeid in listed[category]]
            lines += ["TIMEOUT " + nodeid for nodeid in timed_out]
            data = "".join(tag + line + "\\n" for line in lines).encode("utf-8", "replace")
            sys.stdout.flush()
            while data:
                data = data[write(fd, data):]

    return StatusReporter()


def _main():
    # Nothing of the working copy can run before the nonce's file is gone. pytest is imported before the working
    # copy goes on sys.path, so no module there can stand in for it.
    reporter = _status_reporter(_read_nonce() + " ", os.dup(1))
    import pytest

    sys.path[0] = os.getcwd()  # where `python -m pytest` has the working copy (not this script's dir)
    sys.argv[0] = os.path.join(os.path.dirname(pytest.__file__), "__main__.py")
    raise SystemExit(int(pytest.main(sys.argv[1:], plugins=[reporter])))


if __name__ == "__main__":
    _main()
'''
PYTEST_ENTRY_POINT_FILE = "run_pytest.py"


def _pytest_script(test_ids: list[str], test_timeout_s: float | None) -> str:
    # No bytecode and no cache directory: the working copy's `git status` must stay as the agent left it.
    pytest_args = ["-rA", "-p", "no:cacheprovider", *test_ids]
    if test_timeout_s is not None:
        if importlib.util.find_spec("pytest_timeout") is None:
            raise MissingTestTimeoutPlugin(
                "pytest-timeout is not installed: `pip install pytest-timeout` (a repairrl dependency), or grade "
                "with test_timeout_s=None to run without per-test timeouts"
            )
        # pytest autoloads pytest-timeout from its entry point. The signal method fails the test and goes on with
        # the next; the thread method would end the whole run. (pytest reads options after the test ids too.)
        pytest_args += [f"--timeout={test_timeout_s:g}", "--timeout-method=signal"]
    entry_point = f'"$private_dir/{PYTEST_ENTRY_POINT_FILE}"'
    return "\n".join(
        [
            f"cat > {entry_point} <<'REPAIRRL_PYTEST_ENTRY_POINT'",
            PYTEST_ENTRY_POINT.rstrip(),
            "REPAIRRL_PYTEST_ENTRY_POINT",
            f"echo {shlex.quote(START_TEST_OUTPUT)}",
            f"PYTHONDONTWRITEBYTECODE=1 {shlex.quote(sys.executable)} {entry_point} {shlex.join(pytest_args)}",
            "status=$?",
            f"echo {shlex.quote(END_TEST_OUTPUT)}",
            "exit $status",
        ]
    )


@cache
def _per_test_runner_source() -> str:
    return PER_TEST_RUNNER.read_text(encoding="utf-8")


def _junit4_script(test_ids: list[str], test_timeout_s: float | None) -> str:
    # The runner's source travels inside the command, so the command needs only java and the JUnit jars
    # wherever it runs (a sandbox may not see the package). Classes are compiled outside the working copy, with
    # no annotation processing: no code of the working copy runs before PerTestRunner has read the nonce.
    classpath = ":".join(JUNIT_CLASSPATH)
    ids = " ".join(shlex.quote(test_id) for test_id in test_ids)
    timeout_ms = 0 if test_timeout_s is None else max(1, round(test_timeout_s * 1000))
    return f"""\
cat > "$private_dir/PerTestRunner.java" <<'REPAIRRL_PER_TEST_RUNNER'
{_per_test_runner_source().rstrip()}
REPAIRRL_PER_TEST_RUNNER
find src/main/java src/test/java -name '*.java' > "$private_dir/sources.txt" 2>/dev/null
echo "$private_dir/PerTestRunner.java" >> "$private_dir/sources.txt"
echo {shlex.quote(START_TEST_OUTPUT)}
javac_jvm=$(for option in {JVM_OPTIONS}; do printf -- '-J%s ' "$option"; done)
if javac $javac_jvm -nowarn -proc:none -encoding UTF-8 -d "$private_dir/classes" -cp {classpath} @"$private_dir/sources.txt" 2>&1; then
  java {JVM_OPTIONS} -Drepairrl.testTimeoutMs={timeout_ms} -Drepairrl.nonceFile="$private_dir/nonce" -cp "$private_dir/classes:{classpath}" PerTestRunner {ids}
  status=$?
else
  echo "compilation failed: every requested test counts as failed"
  for test_id in {ids}; do printf '%s FAILED %s\\n' "$nonce" "$test_id"; done
  status=1
fi
echo {shlex.quote(END_TEST_OUTPUT)}
exit $status"""


def reported_lines(log: str, nonce: str) -> list[str]:
    """The lines of `log` our reporter tagged with `nonce`, without the tag, in order.

    The tag may follow other text on its line (a test that printed without a newline just before), never the
    other way round: what follows the nonce is the reporter's.
    """
    tag = nonce + " "
    found = []
    for line in log.splitlines():
        at = line.find(tag)
        if at != -1:
            found.append(line[at + len(tag) :])
    return found


def parse_test_log(log: str, nonce: str | None = None) -> dict[str, str]:
    """Test statuses read by swebench's `parse_log_pytest`: with `nonce`, from the lines tagged with it and
    nothing else; without one (a log that is not ours), from the text between swebench's markers (the whole log
    if the markers are missing), which code under test can forge, so never for grading."""
    from swebench.harness.log_parsers import parse_log_pytest

    if nonce is not None:
        log = "\n".join(reported_lines(log, nonce))
    else:
        start = log.find(START_TEST_OUTPUT)
        if start != -1:
            log = log[start + len(START_TEST_OUTPUT) :]
            end = log.find(END_TEST_OUTPUT)
            if end != -1:
                log = log[:end]
    # parse_log_pytest ignores its test_spec argument; the summary format is all it needs.
    return parse_log_pytest(log, None)


def timed_out_test_ids(log: str, nonce: str | None = None) -> tuple[str, ...]:
    """The tests the per-test timeout stopped, from either runner's output, in order, without repeats: with
    `nonce`, only from the lines tagged with it."""
    lines = reported_lines(log, nonce) if nonce is not None else log.splitlines()
    found: list[str] = []
    for line in lines:
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
    nonce: str | None = None,
) -> TestRun:
    """Run `test_ids` of `task` in `workdir` (or through `runner`, e.g. a sandbox's `run`): the whole command
    within `timeout_s`, each test within `test_timeout_s` (None: no per-test limit). Statuses are read only from
    the lines tagged with the run's nonce (`nonce`, or a fresh one: tests pass their own to fake a runner)."""
    runner = runner or subprocess_runner(workdir)
    if not test_ids:
        return TestRun(statuses={}, log="", timed_out=False, duration_s=0.0, exit_code=0)
    nonce = nonce or new_nonce()
    result = runner(test_command(task, test_ids, test_timeout_s, nonce=nonce), timeout_s)
    return TestRun(
        statuses=parse_test_log(result.output, nonce),
        timed_out_tests=timed_out_test_ids(result.output, nonce),
        log=result.output,
        timed_out=result.timed_out,
        duration_s=result.duration_s,
        exit_code=result.exit_code,
        status_lines=tuple(reported_lines(result.output, nonce)),
    )
