"""Grade a patch in the task's own image, the way swebench's harness does, with repairrl's test-infrastructure rule.

    fresh container of the task's image (SWE-bench: the repository at /testbed, its environment built)
    -> apply the model patch with the harness's commands, in the harness's order, the tree reset between attempts
    -> reset every test-infrastructure file the patch touches to the base commit (repairrl.grading.infrastructure;
       a patch that reaches into the test runner from source code is graded unresolved before any container runs)
    -> the row's eval script (it resets the test files and applies the test patch itself)
    -> swebench's `get_eval_report` on the log, with swebench's `make_test_spec` of the row: swebench's verdict

This is the `resolved` reward's grader for swebench-format tasks (an image and an eval script) when grading runs
in containers (`grade_with_tests(..., backend="docker")`), and the apptainer harness backend's
(repairrl.evaluate.harness) for evaluation: one script, one verdict, whichever runs it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from repairrl.grading import outcome
from repairrl.grading.infrastructure import classify_patch
from repairrl.grading.outcome import GradingOutcome
from repairrl.tasks import Task

CONTAINER_WORKDIR = "/testbed"  # swebench's CONTAINER_WORKDIR
CONTAINER_MOUNT = "/repairrl"  # where the patch and the scripts are bound, read-only
DEFAULT_MEMORY_MB = 8192
# Test suites start many processes (xdist, subprocess tests): a bound, not a squeeze.
DEFAULT_MAX_PROCESSES = 4096


def swebench_row(task: Task) -> dict:
    """The task as a swebench dataset row (what `make_test_spec` and `run_evaluation -d` read)."""
    from swebench.harness.constants import FAIL_ONLY_REPOS

    return {
        "instance_id": task.instance_id,
        "repo": task.repo,
        "base_commit": task.base_commit,
        "patch": task.gold_patch,
        "test_patch": task.test_patch,
        "problem_statement": task.problem_statement,
        "FAIL_TO_PASS": list(task.fail_to_pass),
        "PASS_TO_PASS": list(task.pass_to_pass),
        "version": task.version or "",
        "environment_setup_commit": task.environment_setup_commit or "",
        "image": task.image or instance_image(task.instance_id),
        "eval_script": task.eval_script,
        "log_parser": task.log_parser,
        "eval_type": task.extra.get("eval_type")
        or ("fail_only" if task.repo in FAIL_ONLY_REPOS else "pass_and_fail"),
    }


def instance_image(instance_id: str, tag: str = "latest") -> str:
    """swebench's published instance image name (Docker Hub forbids '__', swebench writes '_1776_')."""
    return f"swebench/sweb.eval.x86_64.{instance_id.replace('__', '_1776_').lower()}:{tag}"


def gradable_in_image(task: Task) -> bool:
    """Whether the task carries what grading in its image needs: an eval script and a log parser."""
    return bool(task.eval_script and task.log_parser)


def test_spec(task: Task):
    """swebench's TestSpec of the task, by swebench's own make_test_spec (exit-code recording included)."""
    from swebench.harness.utils import make_test_spec

    return make_test_spec(swebench_row(task))


test_spec.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


def container_script(base_commit: str = "", reset_paths: tuple[str, ...] | list[str] = ()) -> str:
    """Apply the patch (reset between attempts), reset RESET_PATHS to BASE_COMMIT, then run the eval script.

    The markers are swebench's: `get_logs_eval` finds a failed apply in the log and reports it as swebench does.
    """
    attempts = "\n".join(
        f"if [ $applied = 0 ]; then git checkout -- . ; git clean -fdq; "
        f"if {' '.join(command)} {CONTAINER_MOUNT}/patch.diff; then applied=1; fi; fi"
        for command in outcome.APPLY_COMMANDS
    )
    resets = []
    for path in reset_paths:
        quoted, spec = shlex.quote(path), shlex.quote(f"{base_commit}:{path}")
        # As grade.restore_paths on the host: back to the base commit, or gone if the base lacks it.
        resets.append(
            f"rm -rf -- {quoted}; if git cat-file -e {spec} 2>/dev/null; then "
            f"git checkout {shlex.quote(base_commit)} -- {quoted}; "
            f"else git rm -q --cached --ignore-unmatch -- {quoted} >/dev/null; fi"
        )
    reset_block = "\n".join(resets)
    return f"""#!/bin/bash
cd {CONTAINER_WORKDIR}
git config --global --add safe.directory {CONTAINER_WORKDIR} 2>/dev/null
applied=0
{attempts}
if [ $applied = 0 ] && git apply --check --reverse {CONTAINER_MOUNT}/patch.diff; then applied=1; fi
if [ $applied = 0 ]; then echo "{outcome.APPLY_PATCH_FAIL}"; exit 97; fi
echo "{outcome.APPLY_PATCH_PASS}"
{reset_block}
/bin/bash {CONTAINER_MOUNT}/eval.sh
"""


def docker_command(
    image: str,
    scratch: Path,
    name: str,
    *,
    docker: str = "docker",
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    cpus: float = 0.0,
) -> list[str]:
    """A fresh, removed-after container of IMAGE running SCRATCH/run.sh as root (as swebench's harness does, the
    image's files are root's), with no network and the sandbox's kind of limits."""
    args = [
        docker, "run", "--rm", "--name", name, "--init", "--network", "none", "--user", "0:0",
        "--pids-limit", str(max_processes), "--memory", f"{memory_mb}m", "--memory-swap", f"{memory_mb}m",
        "--security-opt", "no-new-privileges",
        "--volume", f"{scratch}:{CONTAINER_MOUNT}:ro", "--workdir", CONTAINER_WORKDIR,
        "--entrypoint", "/bin/bash",
    ]  # fmt: skip
    if cpus > 0:
        args += ["--cpus", f"{cpus:g}"]
    return [*args, image, f"{CONTAINER_MOUNT}/run.sh"]


def apptainer_command(
    image: str,
    scratch: Path,
    *,
    executable: str = "apptainer",
    sif_dir: str | os.PathLike | None = None,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    """Run SCRATCH/run.sh in the image (its pulled SIF under SIF_DIR where there is one): writable overlay in
    memory, a clean environment, nothing of the host."""
    from repairrl.sandbox.container import apptainer_image_ref

    return [
        executable, "exec",
        "--writable-tmpfs", "--cleanenv", "--containall",
        "--pwd", CONTAINER_WORKDIR,
        "--bind", f"{scratch}:{CONTAINER_MOUNT}",
        *extra_args,
        apptainer_image_ref(image, sif_dir), "/bin/bash", f"{CONTAINER_MOUNT}/run.sh",
    ]  # fmt: skip


def command_for_backend(backend: str):
    """The container command line of an image grader (grade.IMAGE_BACKENDS) as `command_for` takes it."""
    if backend == "apptainer":
        return lambda image, scratch, name: apptainer_command(image, scratch)
    if backend == "docker":
        return lambda image, scratch, name: docker_command(image, scratch, name)
    raise ValueError(f"no image grader {backend!r}; one of docker, apptainer")


def grade_log(
    task: Task,
    model_patch: str | None,
    model_name: str,
    log_path: Path,
    timed_out: bool,
    duration_s: float,
    **extra: Any,
) -> GradingOutcome:
    """swebench's verdict on the log of one container run."""
    from swebench.harness.grading import get_eval_report

    text = log_path.read_text(encoding="utf-8", errors="replace")
    common = {"instance_id": task.instance_id, "model_name_or_path": model_name,
              "duration_s": round(duration_s, 3), "log": text, **extra}  # fmt: skip
    if timed_out:
        return GradingOutcome(status=outcome.TIMEOUT, resolved=False, patch_applied=True, reason="tests timed out",
                              report=outcome.unrun_report(task, model_patch), **common)  # fmt: skip
    if outcome.APPLY_PATCH_FAIL in text:
        return GradingOutcome(status=outcome.PATCH_APPLY_FAILED, resolved=False, patch_applied=False,
                              reason="the model patch does not apply", report=outcome.unrun_report(task, model_patch),
                              **common)  # fmt: skip
    prediction = {
        "instance_id": task.instance_id,
        "model_name_or_path": model_name,
        "model_patch": model_patch,
    }
    report = get_eval_report(test_spec(task), prediction, str(log_path), include_tests_status=True)
    resolved = bool(report[task.instance_id]["resolved"])
    return GradingOutcome(status=outcome.RESOLVED if resolved else outcome.UNRESOLVED, resolved=resolved,
                          patch_applied=True, reason=None, report=report, **common)  # fmt: skip


def grade_in_image(
    task: Task,
    model_patch: str | None,
    *,
    model_name: str = "model",
    timeout_s: float = outcome.DEFAULT_TEST_TIMEOUT_S,
    command_for=None,
    work_root: str | os.PathLike | None = None,
) -> GradingOutcome:
    """Grade MODEL_PATCH in a fresh container of the task's image; never raises for this task's failure.

    `command_for(image, scratch, name)` gives the container's command line (default: `docker_command`); on a
    timeout the container named NAME is removed, which kills every process of the run.
    """
    started = time.monotonic()
    outcome.import_swebench()

    def unrun(status: str, reason: str, **extra: Any) -> GradingOutcome:
        return GradingOutcome(
            instance_id=task.instance_id, model_name_or_path=model_name, status=status, resolved=False,
            patch_applied=extra.pop("patch_applied", False), reason=reason,
            report=outcome.unrun_report(task, model_patch),
            duration_s=round(time.monotonic() - started, 3), log=reason + "\n", **extra,
        )  # fmt: skip

    if outcome.is_empty_patch(model_patch):
        return unrun(outcome.EMPTY_PATCH, "empty patch")
    unsafe_path = outcome.unsafe_patch_path(model_patch)
    if unsafe_path is not None:
        return unrun(outcome.PATCH_APPLY_FAILED, f"unsafe path {unsafe_path}")
    if not gradable_in_image(task):
        return unrun(outcome.ERROR, "the task has no eval script or log parser to grade it in its image")
    edits = classify_patch(model_patch, task)
    infra_edits = [str(edit) for edit in edits]
    findings = [edit for edit in edits if not edit.restorable]
    if findings:
        reason = "the patch reaches into the test runner from source code: " + "; ".join(map(str, findings))
        return unrun(outcome.UNRESOLVED, reason, test_infra_edits=infra_edits)
    reset_paths = [edit.path for edit in edits if edit.restorable]
    image = task.image or instance_image(task.instance_id)
    name = f"repairrl-grade-{os.getpid()}-{os.urandom(4).hex()}"
    command_for = command_for or command_for_backend("docker")
    scratch = Path(tempfile.mkdtemp(prefix="grade-image-", dir=work_root))
    try:
        (scratch / "patch.diff").write_text(model_patch, encoding="utf-8")
        (scratch / "eval.sh").write_text(test_spec(task).eval_script, encoding="utf-8")
        (scratch / "run.sh").write_text(container_script(task.base_commit, reset_paths), encoding="utf-8")
        scratch.chmod(0o755)  # read by the container's root, whoever owns the scratch
        log_path = scratch / "test_output.txt"
        command = command_for(image, scratch, name)
        timed_out = False
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired:
                timed_out = True
                if command[0].endswith("docker"):
                    subprocess.run(
                        [command[0], "rm", "--force", name], capture_output=True, check=False, timeout=60
                    )
        return grade_log(task, model_patch, model_name, log_path, timed_out, time.monotonic() - started,
                         test_infra_edits=infra_edits)  # fmt: skip
    except Exception as error:  # noqa: BLE001 - one task's crash is that task's recorded outcome
        return unrun(outcome.ERROR, f"{type(error).__name__}: {error}", test_infra_edits=infra_edits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
