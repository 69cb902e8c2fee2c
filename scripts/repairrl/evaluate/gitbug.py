"""GitBug-Java driver: grade a patch with the benchmark's own CLI (gitbugactions/gitbug-java, python-fire).

    gitbug-java checkout BID WORKDIR [--fixed]
        clones the gitbugactions fork, checks out the buggy commit, applies the non-code patch (when the bug
        patch is not empty) and the test patch, swaps the repository's workflows for the bug's replication
        workflow and writes WORKDIR/gitbug.json (the bug's row)
    apply the model patch (the harness's commands, as for every other benchmark)
    gitbug-java run WORKDIR [--act_cache_dir=DIR] [--timeout=MINUTES]
        replays the workflow offline with act; `--timeout` bounds each workflow in minutes (0: no bound)

`run` writes WORKDIR/.gitbug-java/test-results.json: the counts `expected_tests` (the tests of gitbug.json's fixed
run group that were not skipped), `executed_tests`, `skipped_tests`, `passing_tests`, `failing_tests`; the lists
`unexpected_tests` and `missing_tests` (`classname#name`, filled only when the executed count differs from the
expected one), `failed_tests` ([{classname, name}]) and `run_outputs` ([{workflow_name, stdout, stderr}]). It
exits 0 exactly when a workflow ran, no test failed and as many ran as expected: that is the verdict.

The CLI finds its bug data and act binary next to its own script, so the working directory does not matter; the
commands still run in its checkout (the config's `gitbug_java.root`), whose `gitbug-java` script they prefer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from repairrl.grading import grade
from repairrl.grading.grade import GradingOutcome
from repairrl.tasks import Task

BUG_INFO_FILE = "gitbug.json"
RESULTS_DIR = ".gitbug-java"
RESULTS_FILE = f"{RESULTS_DIR}/test-results.json"
# Files only the tool writes: a patch that edits them could forge the expected tests or the results.
TOOL_PATHS = (BUG_INFO_FILE, RESULTS_DIR)
RESULT_COUNT_FIELDS = ("expected_tests", "executed_tests", "skipped_tests", "passing_tests", "failing_tests")
# Build-tool lines that say the project did not compile, so that no test could run: the patch's fault.
BUILD_FAILURE_MARKERS = (
    "COMPILATION ERROR",
    "Compilation failure",
    "Compilation failed",
    "compileJava FAILED",
)
RUN_OUTPUT_LOG_CHARS = 100_000  # per stream of each workflow; act's logs of a Maven build run to megabytes
PIN_IDENTITY = (
    "-c",
    "user.name=repairrl",
    "-c",
    "user.email=repairrl@localhost",
    "-c",
    "commit.gpgsign=false",
)


class GitBugJavaError(RuntimeError):
    """GitBug-Java is not set up, or a command of it failed; the message says which and where its log is."""


@dataclass(frozen=True)
class GitBugJavaConfig:
    root: Path  # the gitbug-java checkout (after `gitbug-java setup`)
    executable: str = "gitbug-java"
    act_cache_dir: Path | None = None  # None: the tool's own default, <root>/act-cache
    timeout_s: float = 3600.0  # the bound of the replayed workflow, passed to the tool in whole minutes
    checkout_timeout_s: float = 1800.0
    # Beyond timeout_s, for what `run` does around the workflow (building the bug's Docker image, cleaning up).
    run_overhead_s: float = 600.0


@dataclass(frozen=True)
class GitBugRunResult:
    """WORKDIR/.gitbug-java/test-results.json, test ids as `classname#name`, and the exit code of `run`."""

    expected_tests: int
    executed_tests: int
    skipped_tests: int
    passing_tests: int
    failing_tests: int
    failed_tests: list[str]
    missing_tests: list[str]
    unexpected_tests: list[str]
    run_outputs: list[dict]
    exit_code: int | None

    @property
    def all_passed(self) -> bool:
        """The tool's own verdict, from the file: a workflow ran, nothing failed, every expected test ran."""
        return bool(self.run_outputs) and not self.failed_tests and self.executed_tests == self.expected_tests


def _executable(config: GitBugJavaConfig) -> str:
    local = Path(config.root) / config.executable
    return str(local) if local.is_file() else config.executable


def timeout_minutes(timeout_s: float) -> int:
    """`run --timeout` counts minutes and 0 means none, so round up and never pass 0."""
    return max(1, math.ceil(timeout_s / 60))


def checkout_command(config: GitBugJavaConfig, bid: str, workdir: Path) -> list[str]:
    return [_executable(config), "checkout", bid, str(workdir)]


def run_command(config: GitBugJavaConfig, workdir: Path) -> list[str]:
    command = [_executable(config), "run", str(workdir)]
    if config.act_cache_dir is not None:
        command.append(f"--act_cache_dir={config.act_cache_dir}")
    return command + [f"--timeout={timeout_minutes(config.timeout_s)}"]


def _test_ids(value: object, field: str) -> list[str]:
    if not isinstance(value, list):
        raise GitBugJavaError(f"{RESULTS_FILE}: '{field}' is not a list")
    ids = []
    for item in value:
        if isinstance(item, dict) and "classname" in item and "name" in item:
            ids.append(f"{item['classname']}#{item['name']}")
        elif isinstance(item, str):
            ids.append(item)
        else:
            raise GitBugJavaError(f"{RESULTS_FILE}: '{field}' holds {item!r}, not a test")
    return ids


def parse_run_output(workdir: Path, exit_code: int | None) -> GitBugRunResult:
    """Read WORKDIR/.gitbug-java/test-results.json; a missing or malformed file raises GitBugJavaError."""
    path = Path(workdir) / RESULTS_FILE
    if not path.is_file():
        raise GitBugJavaError(
            f"gitbug-java run (exit {exit_code}) wrote no {RESULTS_FILE}; its output is in the log"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GitBugJavaError(f"{RESULTS_FILE} is not readable JSON: {error}") from error
    if not isinstance(data, dict):
        raise GitBugJavaError(f"{RESULTS_FILE} holds {type(data).__name__}, not an object")
    missing = [field for field in RESULT_COUNT_FIELDS + ("failed_tests",) if field not in data]
    if missing:
        raise GitBugJavaError(
            f"{RESULTS_FILE} lacks {', '.join(missing)}; is this the gitbug-java the driver expects?"
        )
    counts = {}
    for field in RESULT_COUNT_FIELDS:
        if not isinstance(data[field], int) or isinstance(data[field], bool):
            raise GitBugJavaError(f"{RESULTS_FILE}: '{field}' is {data[field]!r}, not a count")
        counts[field] = data[field]
    run_outputs = data.get("run_outputs", [])
    if not isinstance(run_outputs, list):
        raise GitBugJavaError(f"{RESULTS_FILE}: 'run_outputs' is not a list")
    return GitBugRunResult(
        **counts,
        failed_tests=_test_ids(data["failed_tests"], "failed_tests"),
        missing_tests=_test_ids(data.get("missing_tests", []), "missing_tests"),
        unexpected_tests=_test_ids(data.get("unexpected_tests", []), "unexpected_tests"),
        run_outputs=[output for output in run_outputs if isinstance(output, dict)],
        exit_code=exit_code,
    )


def per_test_statuses(task: Task, result: GitBugRunResult) -> dict[str, str]:
    """PASSED or FAILED for each listed test and each failure. A listed test the run did not vouch for (missing,
    or nothing ran at all) counts as failed."""
    failed = set(result.failed_tests) | set(result.missing_tests)
    statuses = {}
    for test in [*task.fail_to_pass, *task.pass_to_pass]:
        statuses[test] = "FAILED" if test in failed or result.executed_tests == 0 else "PASSED"
    statuses.update({test: "FAILED" for test in result.failed_tests})
    return statuses


def instance_report(
    task: Task, model_patch: str, result: GitBugRunResult, resolved: bool | None = None
) -> dict:
    """swebench's report shape, the per-test statuses from the run, `resolved` the verdict of the grading."""
    statuses = per_test_statuses(task, result)

    def split(tests: list[str]) -> dict:
        return {
            "success": [t for t in tests if statuses[t] == "PASSED"],
            "failure": [t for t in tests if statuses[t] != "PASSED"],
        }

    return {
        task.instance_id: {
            "patch_is_None": model_patch is None,
            "patch_exists": model_patch is not None,
            "patch_successfully_applied": True,
            "resolved": result.all_passed and result.exit_code == 0 if resolved is None else resolved,
            "infra_failure": False,
            "tests_status": {
                "FAIL_TO_PASS": split(task.fail_to_pass),
                "PASS_TO_PASS": split(task.pass_to_pass),
                "FAIL_TO_FAIL": {"success": [], "failure": []},
                "PASS_TO_FAIL": {"success": [], "failure": []},
            },
        }
    }


def verdict(result: GitBugRunResult) -> tuple[str, str | None]:
    """(status, reason) of a run that wrote its results; anything the tool's verdict cannot vouch for is an error."""
    code = result.exit_code
    if code not in (0, 1):
        return grade.ERROR, f"gitbug-java run exited {code} (neither its pass (0) nor its fail (1) verdict)"
    if not result.run_outputs:
        return grade.ERROR, "gitbug-java ran no workflow (is the bug's replication workflow in the checkout?)"
    if (code == 0) != result.all_passed:
        return grade.ERROR, (
            f"gitbug-java run exited {code} but its results say {result.failing_tests} failed and "
            f"{result.executed_tests} of {result.expected_tests} expected tests ran"
        )
    if code == 0:
        return grade.RESOLVED, None
    if result.executed_tests == 0 and not result.failed_tests:
        output = "\n".join(
            str(o.get(stream) or "") for o in result.run_outputs for stream in ("stdout", "stderr")
        )
        if any(marker in output for marker in BUILD_FAILURE_MARKERS):
            return grade.UNRESOLVED, "the project does not compile with the patch; no test ran"
        return grade.ERROR, (
            f"gitbug-java ran no test of the {result.expected_tests} expected and reported no build failure; "
            "the workflow's output is in the log"
        )
    if result.failed_tests:
        return grade.UNRESOLVED, None
    return grade.UNRESOLVED, f"{result.expected_tests - result.executed_tests} expected tests did not run"


def _run(command: list[str], cwd: Path, timeout_s: float, log: list[str]) -> int | None:
    """Run a command in its own process group, output to the log; None if it timed out (the group is killed:
    `run` leaves act and its containers behind otherwise)."""
    log.append(f"$ {' '.join(command)}")
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        log.append(output.decode("utf-8", errors="replace"))
        log.append(f"timed out after {timeout_s:.0f} s")
        return None
    log.append(output.decode("utf-8", errors="replace"))
    return process.returncode


def pin_checkout(workdir: Path, log: list[str]) -> str:
    """Commit what `checkout` left uncommitted (test patch, non-code patch, gitbug.json, the workflow swap), so
    the harness's apply attempts, which reset the tree between tries, return to the checkout and not to the
    bare buggy commit; the pinned commit's hash."""
    for command in (
        ("add", "-A"),
        (*PIN_IDENTITY, "commit", "-q", "--no-verify", "-m", "gitbug-java checkout"),
    ):
        code = _run([*grade.SAFE_GIT, *command], workdir, grade.GIT_COMMAND_TIMEOUT_S, log)
        if code != 0:
            raise GitBugJavaError(
                f"could not commit the checkout in {workdir} (git {command[-1]} exited {code})"
            )
    completed = subprocess.run(
        [*grade.SAFE_GIT, "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


def _run_outputs_log(result: GitBugRunResult) -> str:
    parts = []
    for output in result.run_outputs:
        for stream in ("stdout", "stderr"):
            text = str(output.get(stream) or "")
            if len(text) > RUN_OUTPUT_LOG_CHARS:
                text = (
                    f"[... {len(text) - RUN_OUTPUT_LOG_CHARS} characters left out ...]\n"
                    + text[-RUN_OUTPUT_LOG_CHARS:]
                )
            parts.append(f"--- workflow {output.get('workflow_name')} {stream} ---\n{text}")
    return "\n".join(parts)


def grade_gitbug(
    task: Task, prediction: dict, config: GitBugJavaConfig, work_root: str | os.PathLike | None = None
) -> GradingOutcome:
    """Check out the bug, apply the patch, run its workflow; a failure of this task is its recorded outcome."""
    started = time.monotonic()
    patch = prediction["model_patch"]
    log: list[str] = []

    def outcome(
        status: str, reason: str | None, report: dict | None = None, applied: bool = False, **fields
    ) -> GradingOutcome:
        return GradingOutcome(
            instance_id=task.instance_id, model_name_or_path=prediction["model_name_or_path"], status=status,
            resolved=status == grade.RESOLVED, patch_applied=applied, reason=reason,
            report=report or grade.unrun_report(task, patch, applied), duration_s=round(time.monotonic() - started, 3),
            log="\n".join(log) + "\n", **fields,
        )  # fmt: skip

    if grade.is_empty_patch(patch):
        return outcome(grade.EMPTY_PATCH, "empty patch")
    paths = grade.patch_paths(patch)
    unsafe = grade.unsafe_patch_path(patch)
    if unsafe is not None:
        return outcome(grade.PATCH_APPLY_FAILED, f"unsafe path {unsafe}")
    tool_file = next((p for p in paths if p.split("/")[0] in TOOL_PATHS), None)
    if tool_file is not None:
        return outcome(
            grade.PATCH_APPLY_FAILED, f"the patch edits {tool_file}, which only gitbug-java writes"
        )
    scratch = Path(tempfile.mkdtemp(prefix=f"gitbug-{task.instance_id}-", dir=work_root))
    try:
        workdir = scratch / "bug"
        code = _run(
            checkout_command(config, task.instance_id, workdir),
            Path(config.root),
            config.checkout_timeout_s,
            log,
        )
        if code != 0:
            return outcome(
                grade.ERROR, f"gitbug-java checkout {task.instance_id} failed (exit {code}); see the log"
            )
        if not (workdir / BUG_INFO_FILE).is_file():
            return outcome(
                grade.ERROR, f"gitbug-java checkout wrote no {BUG_INFO_FILE} into the working copy"
            )
        pinned = pin_checkout(workdir, log)
        patch_file = scratch / "model.diff"
        patch_file.write_text(patch, encoding="utf-8")
        applied, apply_log = grade.apply_model_patch(workdir, patch_file)
        log.append(apply_log)
        if applied is None:
            log.append(grade.APPLY_PATCH_FAIL)
            return outcome(grade.PATCH_APPLY_FAILED, "the model patch does not apply")
        log.append(f"{grade.APPLY_PATCH_PASS} ({applied})")
        # The benchmark's tests are the checkout's, test patch included: as SWE-bench's harness does, the model's
        # edits to them are undone.
        test_files = set(grade.patch_paths(task.test_patch)) if task.test_patch else set()
        restored = grade.restore_paths(workdir, pinned, [p for p in paths if p in test_files])
        shutil.rmtree(workdir / RESULTS_DIR, ignore_errors=True)
        run_started = time.monotonic()
        code = _run(
            run_command(config, workdir), Path(config.root), config.timeout_s + config.run_overhead_s, log
        )
        run_s = round(time.monotonic() - run_started, 3)
        if code is None:
            return outcome(
                grade.TIMEOUT, f"gitbug-java run took over {config.timeout_s + config.run_overhead_s:.0f} s",
                applied=True, apply_command=applied, test_infra_edits=restored, test_duration_s=run_s,
            )  # fmt: skip
        result = parse_run_output(workdir, code)
        log.append(_run_outputs_log(result))
        status, reason = verdict(result)
        report = instance_report(task, patch, result, resolved=status == grade.RESOLVED)
        if status == grade.ERROR:
            report[task.instance_id]["infra_failure"] = True
        return outcome(
            status, reason, report, applied=True, apply_command=applied, test_infra_edits=restored,
            test_statuses=per_test_statuses(task, result), test_duration_s=run_s,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - one task's crash is that task's recorded outcome
        return outcome(grade.ERROR, f"{type(error).__name__}: {error}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_gitbug_harness(
    tasks: list[Task], predictions: list[dict], out_dir: Path, run_id: str, *, config: GitBugJavaConfig,
    workers: int = 1, work_root: Path | None = None,
) -> dict[str, dict]:  # fmt: skip
    from repairrl.evaluate.harness import run_per_instance

    if not (Path(config.root) / "data" / "bugs").is_dir():
        raise GitBugJavaError(
            f"{config.root} is not a set-up gitbug-java checkout (no data/bugs/); clone "
            "gitbugactions/gitbug-java, run `gitbug-java setup` there, and set gitbug_java.root to it"
        )
    executable = _executable(config)
    if shutil.which(executable) is None:
        raise GitBugJavaError(
            f"cannot run {executable!r}: neither {Path(config.root) / config.executable} nor a `{config.executable}` "
            "on PATH is executable; install gitbug-java's Python environment (poetry install) in that checkout"
        )
    return run_per_instance(
        tasks, predictions, out_dir, run_id, lambda t, p: grade_gitbug(t, p, config, work_root), workers
    )
