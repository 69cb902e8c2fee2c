"""Grade a model patch by running the task's tests on a fresh working copy, the way swebench's harness does.

    fresh working copy of the base commit (never the agent's own copy: it cannot see the gold or test patch)
    -> apply the model patch with the harness's commands, in the harness's order
    -> if the patch reaches into the test runner from source code, grade it unresolved (no tests run)
    -> reset every test-infrastructure file the model patch touches (repairrl.grading.infrastructure: conftest.py,
       pytest configuration, test folders, Java test sources and build files, ...) and every file the test patch
       touches to the base commit, then apply the test patch (so a model's edits to the tests never count)
    -> run FAIL_TO_PASS + PASS_TO_PASS in the sandbox with a per-test timeout, log with swebench's markers
    -> swebench's own `get_eval_report` reads the log's status lines, only those our test runner tagged with
       the run's nonce (repairrl.grading.test_runner): the report and `resolved` are swebench's verdict

`timeout_s` is the budget of the whole grading of one task; `test_timeout_s` bounds each test, so code that
loops forever costs that test, not the task. Every failure of one task (patch does not apply, tests time out,
the grader itself crashes) is a recorded outcome with its reason, never an exception out of `grade_with_tests`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from repairrl.grading import test_runner
from repairrl.grading.infrastructure import classify_patch, patch_paths

# Callers name the outcome vocabulary through this module too (grade.RESOLVED, grade.GradingOutcome).
from repairrl.grading.outcome import (
    APPLY_COMMANDS,
    APPLY_PATCH_FAIL,
    APPLY_PATCH_PASS,
    DEFAULT_TEST_TIMEOUT_S,
    EMPTY_PATCH,
    ERROR,
    PATCH_APPLY_FAILED,
    RESET_FAILED,
    RESOLVED,
    TEST_EXIT_CODE,
    TESTS_ERROR,
    TESTS_TIMEOUT,
    TIMEOUT,
    UNRESOLVED,
    GradingOutcome,
    import_swebench,
    is_empty_patch,
    is_unsafe_path,
    unrun_report,
    unsafe_patch_path,
)
from repairrl.grading.test_runner import CommandRunner
from repairrl.repos import GIT_ENV, fetch_base_commit, materialize_worktree
from repairrl.tasks import Task

# Git on the host never runs anything the graded tree could have planted (hooks, fsmonitor commands).
SAFE_GIT = ("git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
GIT_COMMAND_TIMEOUT_S = 120
DEFAULT_PER_TEST_TIMEOUT_S = test_runner.DEFAULT_PER_TEST_TIMEOUT_S
SANDBOX_BACKENDS = ("bwrap", "apptainer", "docker")
# Backends that grade a swebench-format task (an eval script and a log parser) in its own image, with its eval
# script, rather than with repairrl's test runner on a host checkout (repairrl.grading.container).
IMAGE_BACKENDS = ("docker", "apptainer")
UNSAFE_BACKEND = (
    "unsafe"  # run the tests as a plain subprocess on the host: trusted patches only (gold, tests)
)
# Tests print their summary last; the runner's output limit must not cut it off.
TEST_OUTPUT_LIMIT_BYTES = 8_000_000

# A factory that gives the test command runner for a working copy; the context closes the sandbox.
RunnerFactory = Callable[[Path], contextlib.AbstractContextManager[CommandRunner]]


class SandboxUnavailableError(RuntimeError):
    """No sandbox backend can run the tests; the message says how to get one or how to opt out."""


def _run(
    command: tuple[str, ...] | list[str], cwd: Path, timeout_s: float = GIT_COMMAND_TIMEOUT_S
) -> tuple[int, str]:
    """Run a host command; (exit code, output). A timeout counts as exit code 124, like timeout(1)."""
    env = {**os.environ, **GIT_ENV}
    try:
        completed = subprocess.run(
            list(command),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(command)}: timed out after {timeout_s:.0f} s\n"
    return completed.returncode, completed.stdout.decode("utf-8", errors="replace")


def _git_command(command: tuple[str, ...]) -> tuple[str, ...]:
    return SAFE_GIT + command[1:] if command[0] == "git" else command


def apply_model_patch(worktree: Path, patch_file: Path) -> tuple[str | None, str]:
    """Apply the patch with the harness's commands in order; (the command that worked or None, log text)."""
    log: list[str] = []
    for attempt, command in enumerate(APPLY_COMMANDS):
        if attempt:
            # A failed attempt (--reject above all) leaves partial changes; start each one from a pristine tree.
            _run((*SAFE_GIT, "checkout", "--", "."), worktree)
            _run((*SAFE_GIT, "clean", "-fdq"), worktree)
        code, output = _run((*_git_command(command), str(patch_file)), worktree)
        shown = " ".join(command)
        if code == 0:
            return shown, output
        log.append(f"Failed to apply patch: {shown} (exit code {code})\n{output}")
    # As the harness does: the chain can leave the patch fully applied while every command exited non-zero.
    code, output = _run((*SAFE_GIT, "apply", "--check", "--reverse", str(patch_file)), worktree)
    if code == 0:
        return "verified already applied (git apply --check --reverse)", "\n".join(log)
    return None, "\n".join(log)


def restore_paths(worktree: Path, base_commit: str, paths: Iterable[str]) -> list[str]:
    """Reset each of `paths` to `base_commit` (or remove it if the base lacks it); the paths reset, in order."""
    restored = []
    for path in paths:
        if is_unsafe_path(path):
            raise ValueError(f"cannot restore a path outside the working copy: {path}")
        target = worktree / path
        # A patch can turn a directory into a symlink (`tests -> /elsewhere`): remove the link itself, never
        # what it points to, so the reset cannot touch a file outside the working copy.
        for parent in reversed(target.relative_to(worktree).parents[:-1]):
            if (worktree / parent).is_symlink() or (worktree / parent).is_file():
                (worktree / parent).unlink()
        code, _ = _run((*SAFE_GIT, "cat-file", "-e", f"{base_commit}:{path}"), worktree)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        if code == 0:
            checkout_code, output = _run((*SAFE_GIT, "checkout", base_commit, "--", path), worktree)
            if checkout_code != 0:
                raise RuntimeError(f"could not restore {path} to the base commit: {output.strip()}")
        else:
            # Not in the base commit: also drop it from the index, where `git apply --3way` may have put it.
            _run((*SAFE_GIT, "rm", "-q", "--cached", "--ignore-unmatch", "--", path), worktree)
        if path not in restored:
            restored.append(path)
    return restored


def restore_test_files(worktree: Path, task: Task) -> list[str]:
    """Reset every file the test patch touches to the base commit (or remove it if the base lacks it)."""
    return restore_paths(worktree, task.base_commit, patch_paths(task.test_patch))


@contextlib.contextmanager
def sandbox_runner(workdir: Path, backend: str, timeout_s: float) -> Iterator[CommandRunner]:
    """The command runner of a sandbox on `workdir`; `unsafe` runs on the host without confinement."""
    if backend == UNSAFE_BACKEND:
        yield test_runner.subprocess_runner(workdir)
        return
    try:
        from repairrl.sandbox import make_sandbox
        from repairrl.sandbox.base import SandboxLimits
    except ImportError as error:
        raise SandboxUnavailableError(
            f"sandbox backend {backend!r} is not available ({error}); install the sandbox backends, or pass "
            f"backend '{UNSAFE_BACKEND}' to run tests unconfined (only for trusted patches)"
        ) from error
    limits = SandboxLimits(command_timeout_s=timeout_s, output_limit_bytes=TEST_OUTPUT_LIMIT_BYTES)
    with make_sandbox(backend, workdir, limits=limits) as sandbox:
        yield sandbox.run


def _default_runner_factory(backend: str, timeout_s: float) -> RunnerFactory:
    if backend != UNSAFE_BACKEND and backend not in SANDBOX_BACKENDS:
        raise ValueError(
            f"unknown sandbox backend {backend!r}; choose one of {[*SANDBOX_BACKENDS, UNSAFE_BACKEND]}"
        )
    return lambda workdir: sandbox_runner(workdir, backend, timeout_s)


def graded_log(apply_command: str, status_lines: Iterable[str], run_end: str) -> str:
    """The log swebench grades: the grader's own lines around the status lines our test runner tagged with the
    run's nonce (`TestRun.status_lines`, the nonce stripped), in swebench's format.

    Nothing else the test command printed is in it: code under test can print `PASSED <id>` as well as pytest
    can, so those lines stay in the outcome's log for people and never count. Not even the output of the
    grader's git commands is in it (it can echo the patch's text), since swebench falls back to reading the whole
    log when nothing between the markers parses.
    """
    lines = [f"{APPLY_PATCH_PASS} ({apply_command})", test_runner.START_TEST_OUTPUT, *status_lines]
    return "\n".join([*lines, test_runner.END_TEST_OUTPUT, run_end]) + "\n"


def eval_report(task: Task, model_patch: str | None, model_name: str, log_path: Path) -> dict[str, Any]:
    """swebench's `get_eval_report` on the log at `log_path` (in grading, `graded_log`'s): the report, and its
    `resolved`, are swebench's own verdict."""
    import_swebench()
    from swebench.harness.grading import get_eval_report
    from swebench.types import TestSpec

    test_spec = TestSpec(
        instance_id=task.instance_id,
        image=task.image or "",
        eval_script_list=[],
        repo=task.repo,
        version=task.version or "",
        FAIL_TO_PASS=list(task.fail_to_pass),
        PASS_TO_PASS=list(task.pass_to_pass),
        # Our test commands print pytest's -rA summary lines for both pytest and JUnit 4 ids.
        log_parser=task.log_parser or "parse_log_pytest",
        eval_type="pass_and_fail",
    )
    prediction = {
        "instance_id": task.instance_id,
        "model_name_or_path": model_name,
        "model_patch": model_patch,
    }
    return get_eval_report(test_spec, prediction, str(log_path), include_tests_status=True)


def grade_with_tests(
    task: Task,
    model_patch: str | None,
    cache_dir: str | os.PathLike,
    *,
    model_name: str = "model",
    timeout_s: float = DEFAULT_TEST_TIMEOUT_S,
    test_timeout_s: float | None = DEFAULT_PER_TEST_TIMEOUT_S,
    backend: str = "bwrap",
    runner_factory: RunnerFactory | None = None,
    work_root: str | os.PathLike | None = None,
) -> GradingOutcome:
    """Apply `model_patch` to a fresh working copy of `task`, run its tests, and return swebench's verdict.

    `timeout_s` is the budget of the whole grading (the test command gets what is left of it); `test_timeout_s`
    bounds each test (None: no per-test limit), and a test that runs out counts as failed while the others
    still run. `runner_factory(workdir)` gives the context of the command runner the tests run through; by
    default a sandbox of `backend` (`unsafe`: a host subprocess). With a backend of IMAGE_BACKENDS, a task that
    carries an eval script and a log parser (swebench's format) is graded in its own image instead
    (repairrl.grading.container.grade_in_image; `test_timeout_s` does not apply there: the eval script runs
    whole, as in swebench's harness). Never raises for a failure of this one task.
    """
    if backend in IMAGE_BACKENDS and runner_factory is None and task.eval_script and task.log_parser:
        from repairrl.grading.container import command_for_backend, grade_in_image

        return grade_in_image(
            task, model_patch, model_name=model_name, timeout_s=timeout_s,
            command_for=command_for_backend(backend), work_root=work_root,
        )  # fmt: skip
    started = time.monotonic()
    log: list[str] = []

    def outcome(status: str, report: dict, reason: str | None = None, **extra: Any) -> GradingOutcome:
        return GradingOutcome(
            instance_id=task.instance_id,
            model_name_or_path=model_name,
            status=status,
            resolved=status == RESOLVED,
            patch_applied=extra.pop("patch_applied", False),
            reason=reason,
            report=report,
            duration_s=round(time.monotonic() - started, 3),
            log="\n".join(log) + "\n",
            **extra,
        )

    if is_empty_patch(model_patch):
        # The harness does not run empty patches at all; neither do we.
        log.append("empty patch: nothing to grade")
        return outcome(EMPTY_PATCH, unrun_report(task, model_patch), reason="empty patch")
    unsafe_path = unsafe_patch_path(model_patch)
    if unsafe_path is not None:
        log.append(f"{APPLY_PATCH_FAIL}:\npatch writes outside the working copy or into .git: {unsafe_path}")
        return outcome(
            PATCH_APPLY_FAILED, unrun_report(task, model_patch), reason=f"unsafe path {unsafe_path}"
        )

    scratch = Path(tempfile.mkdtemp(prefix=f"grade-{task.instance_id}-", dir=work_root))
    infra_edits: list[str] = []
    try:
        fetch_base_commit(Path(cache_dir), task)
        worktree = materialize_worktree(Path(cache_dir), task, scratch / "repo")
        model_patch_file = scratch / "model.diff"
        model_patch_file.write_text(model_patch, encoding="utf-8")

        apply_command, apply_log = apply_model_patch(worktree, model_patch_file)
        if apply_command is None:
            log.append(f"{APPLY_PATCH_FAIL}:\n{apply_log}")
            return outcome(
                PATCH_APPLY_FAILED,
                unrun_report(task, model_patch),
                reason="the model patch does not apply with any of the harness's commands",
            )
        log.append(f"{APPLY_PATCH_PASS} ({apply_command}):\n{apply_log}")

        edits = classify_patch(model_patch, task)
        infra_edits = [str(edit) for edit in edits]
        findings = [edit for edit in edits if not edit.restorable]
        if findings:
            # Restoring files cannot undo code under test that hooks the test runner: the patch fails outright.
            reason = "the patch reaches into the test runner from source code: " + "; ".join(
                str(edit) for edit in findings
            )
            log.append(f"Not running the tests: {reason}")
            return outcome(
                UNRESOLVED,
                unrun_report(task, model_patch, patch_applied=True),
                reason=reason,
                patch_applied=True,
                apply_command=apply_command,
                test_infra_edits=infra_edits,
            )
        infra_paths = [edit.path for edit in edits if edit.restorable]
        if infra_paths:
            restore_paths(worktree, task.base_commit, infra_paths)
            log.append(f"Reset test infrastructure edited by the model patch: {' '.join(infra_paths)}")
        restored = restore_test_files(worktree, task)
        log.append(f"Reset test files to the base commit: {' '.join(restored) or '(none)'}")
        test_patch_file = scratch / "test.diff"
        test_patch_file.write_text(task.test_patch, encoding="utf-8")
        code, output = _run((*SAFE_GIT, "apply", "--verbose", str(test_patch_file)), worktree)
        if code != 0:
            log.append(
                f"{RESET_FAILED}: the test patch does not apply after resetting the test files\n{output}"
            )
            return outcome(
                ERROR,
                unrun_report(task, model_patch),
                reason="the test patch does not apply after resetting the test files",
                patch_applied=True,
                apply_command=apply_command,
                test_infra_edits=infra_edits,
            )
        log.append(f"Applied the test patch:\n{output}")

        # The test command gets what is left of the task's budget (at least a second, to report a timeout).
        run_timeout_s = max(1.0, timeout_s - (time.monotonic() - started))
        factory = runner_factory or _default_runner_factory(backend, run_timeout_s)
        with factory(worktree) as runner:
            run = test_runner.run_tests(
                worktree,
                task,
                [*task.fail_to_pass, *task.pass_to_pass],
                timeout_s=run_timeout_s,
                runner=runner,
                test_timeout_s=test_timeout_s,
            )
        log.append(run.log.rstrip("\n"))
        if run.timed_out:
            run_end = f"{TESTS_TIMEOUT} after {timeout_s:g} s"
        else:
            run_end = f"{TEST_EXIT_CODE}: {run.exit_code}"
        log.append(run_end)
        log_path = scratch / "test_output.txt"
        log_path.write_text(graded_log(apply_command, run.status_lines, run_end), encoding="utf-8")
        report = eval_report(task, model_patch, model_name, log_path)
        resolved = bool(report[task.instance_id]["resolved"])
        status = TIMEOUT if run.timed_out else RESOLVED if resolved else UNRESOLVED
        return outcome(
            status,
            report,
            reason=f"tests timed out after {timeout_s:g} s" if run.timed_out else None,
            patch_applied=True,
            apply_command=apply_command,
            test_statuses=run.statuses,
            test_duration_s=round(run.duration_s, 3),
            test_infra_edits=infra_edits,
            timed_out_tests=list(run.timed_out_tests),
        )
    except Exception as error:  # noqa: BLE001 - one task's crash is that task's recorded outcome
        log.append(f"{TESTS_ERROR}: grading crashed: {error!r}\n{traceback.format_exc()}")
        return outcome(
            ERROR,
            unrun_report(task, model_patch),
            reason=f"{type(error).__name__}: {error}",
            test_infra_edits=infra_edits,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def grade_many(
    tasks_and_patches: Iterable[tuple[Task, str | None]],
    cache_dir: str | os.PathLike,
    *,
    workers: int = 2,
    on_outcome: Callable[[GradingOutcome], None] | None = None,
    test_timeout_s: float | None = DEFAULT_PER_TEST_TIMEOUT_S,
    **grade_kwargs: Any,
) -> list[GradingOutcome]:
    """Grade many (task, patch) pairs with `workers` threads; outcomes in input order.

    The work is in subprocesses (git, the tests), so threads suffice. Each task has its own budget (`timeout_s`)
    and each test its own limit (`test_timeout_s`), and `grade_with_tests` records a hang or crash as that
    task's outcome, so one bad task never stops the others. `on_outcome` sees each outcome as it finishes (to write it to disk at once).
    """
    pairs = list(tasks_and_patches)
    outcomes: list[GradingOutcome | None] = [None] * len(pairs)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(
                grade_with_tests, task, patch, cache_dir, test_timeout_s=test_timeout_s, **grade_kwargs
            ): index
            for index, (task, patch) in enumerate(pairs)
        }
        for future in as_completed(futures):
            index = futures[future]
            result = future.result()
            outcomes[index] = result
            if on_outcome is not None:
                on_outcome(result)
    return [o for o in outcomes if o is not None]
