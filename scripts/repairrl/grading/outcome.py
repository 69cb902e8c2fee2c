"""What a grading produces, whichever grader ran it (host checkout, task image, gitbug-java, swebench's harness).

The outcome record and its statuses, swebench's log markers and patch-apply commands, the patch checks done before
anything runs, and the report of an instance whose tests never ran. repairrl.grading.grade and
repairrl.grading.container both build on these, so neither imports the other for them.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from repairrl.grading.infrastructure import patch_paths
from repairrl.tasks import Task

# swebench.harness.constants, copied so that importing this module stays cheap; a test checks they agree.
APPLY_PATCH_FAIL = ">>>>> Patch Apply Failed"
APPLY_PATCH_PASS = ">>>>> Applied Patch"
RESET_FAILED = ">>>>> Reset Failed"
TESTS_ERROR = ">>>>> Tests Errored"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"
TEST_EXIT_CODE = ">>>>> Test Exit Code"

# swebench.harness.run_evaluation.GIT_APPLY_CMDS (5.0.2), each followed by the patch file: the first that
# exits 0 wins, and the tree is reset between attempts, so a patch the official harness accepts is accepted here.
APPLY_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("git", "apply", "--verbose"),
    ("git", "apply", "--verbose", "--3way"),
    ("git", "apply", "--verbose", "--reject"),
    ("patch", "--batch", "--forward", "--fuzz=5", "-p1", "-i"),
)
DEFAULT_TEST_TIMEOUT_S = 600.0  # the budget of grading one task (git, compilation and every test)

# Outcome statuses; the run summary sorts instances by them.
RESOLVED = "resolved"
UNRESOLVED = "unresolved"
EMPTY_PATCH = "empty_patch"
PATCH_APPLY_FAILED = "patch_apply_failed"
TIMEOUT = "timeout"
ERROR = "error"
STATUSES = (RESOLVED, UNRESOLVED, EMPTY_PATCH, PATCH_APPLY_FAILED, TIMEOUT, ERROR)


@dataclass(frozen=True)
class GradingOutcome:
    instance_id: str
    model_name_or_path: str
    status: str  # one of STATUSES
    resolved: bool
    patch_applied: bool
    reason: str | None  # why the instance is not resolved, when it is not a plain test failure
    report: dict[str, Any]  # swebench's get_eval_report output: {instance_id: {..., tests_status: {...}}}
    test_statuses: dict[str, str] = field(default_factory=dict)
    apply_command: str | None = None
    duration_s: float = 0.0
    test_duration_s: float = 0.0
    # Test infrastructure the model patch touched (repairrl.grading.infrastructure): each path reset to the base
    # commit, then `path: finding` for each source file that reaches into the test runner (graded unresolved).
    test_infra_edits: list[str] = field(default_factory=list)
    timed_out_tests: list[str] = field(default_factory=list)  # tests stopped by the per-test timeout
    log: str = field(default="", repr=False)

    def to_record(self, include_log: bool = False) -> dict:
        record = dataclasses.asdict(self)
        if not include_log:
            record.pop("log")
        return record


def is_empty_patch(model_patch: str | None) -> bool:
    return model_patch is None or not model_patch.strip()


def is_unsafe_path(path: str) -> bool:
    """Whether a patch path leaves the working copy or enters its .git directory."""
    parts = PurePosixPath(path).parts
    return path.startswith("/") or ".." in parts or any(part.lower() == ".git" for part in parts)


def unsafe_patch_path(patch: str) -> str | None:
    """A path of the patch that leaves the working copy or enters its .git directory, if there is one.

    `git apply` refuses these itself, but `patch -p1` (the last fallback) would write a `.git/config` whose
    settings the host's git commands then obey.
    """
    return next((path for path in patch_paths(patch) if is_unsafe_path(path)), None)


# A group's patches are graded by parallel threads, and threads that import swebench's circular modules at the
# same moment deadlock (importlib's _DeadlockError): the first import happens under this lock.
_SWEBENCH_IMPORT = threading.Lock()


def import_swebench() -> None:
    with _SWEBENCH_IMPORT:
        import swebench.harness.grading
        import swebench.harness.utils  # noqa: F401


def unrun_report(task: Task, model_patch: str | None, patch_applied: bool = False) -> dict[str, Any]:
    """The report of an instance whose tests never ran: every FAIL_TO_PASS and PASS_TO_PASS test failed."""
    import_swebench()
    from swebench.harness.grading import get_eval_tests_report

    tests_status = get_eval_tests_report(
        {}, {"FAIL_TO_PASS": task.fail_to_pass, "PASS_TO_PASS": task.pass_to_pass}
    )
    return {
        task.instance_id: {
            "patch_is_None": model_patch is None,
            "patch_exists": model_patch is not None,
            "patch_successfully_applied": patch_applied,
            "resolved": False,
            "infra_failure": False,
            "tests_status": tests_status,
        }
    }
