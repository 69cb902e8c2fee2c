"""Harness backends: grade a predictions file and leave swebench-format results in one layout, whatever ran them.

Every backend writes, under OUT:

    OUT/<model>/<instance_id>/report.json   swebench's get_eval_report output (only where the tests ran)
    OUT/<model>/<instance_id>/outcome.json  status and reason (repairrl.grading's GradingOutcome record)
    OUT/<model>.<run_id>.json               the run summary, with the keys of swebench's make_run_report

Backends:
    swebench   swebench's own harness (`python -m swebench.harness.run_evaluation`, Docker), one run per model
               (it keys predictions by instance id); its outputs are located by glob under the run's working
               directory and copied into OUT, and what it skips (empty patches) or fails on gets our outcome.json
    apptainer  for SLURM clusters without Docker: the row's eval script in the swebench instance image pulled
               by apptainer, the model patch applied first with the harness's commands and test infrastructure
               reset (repairrl.grading.container, the `resolved` reward's grader); graded by swebench's own
               `get_eval_report`
    local      repairrl.grading (the mini benchmark: pytest and JUnit 4 tasks in the sandbox)
    gitbug     GitBug-Java's own runner (repairrl.evaluate.gitbug)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from repairrl.grading import container, grade
from repairrl.grading.grade import GradingOutcome
from repairrl.grading.run_evaluation import (
    LOG_REPORT,
    make_run_summary,
    model_dir_name,
    validate_report,
    write_instance_outputs,
)
from repairrl.records import atomic_write, write_jsonl
from repairrl.sandbox.container import sif_name as sif_name_of_image
from repairrl.tasks import Task

BACKENDS = ("swebench", "apptainer", "local", "gitbug")
SWEBENCH_LOG_DIR = Path("logs") / "run_evaluation"  # swebench.harness.constants.RUN_EVALUATION_LOG_DIR
CONTAINER_WORKDIR = container.CONTAINER_WORKDIR
CONTAINER_MOUNT = container.CONTAINER_MOUNT


class HarnessError(RuntimeError):
    """A harness could not run at all (not one task's failure); the message says what to install or fix."""


# --- which backend grades a task ---


def default_backend(task: Task, container_backend: str = "swebench") -> str:
    """`local` for tasks repairrl runs itself, `gitbug` for GitBug-Java, else the container backend."""
    if task.test_framework in ("pytest", "junit4"):
        return "local"
    if task.test_framework == "gitbug-java":
        return "gitbug"
    return container_backend


# --- shared: summary and outputs ---


def write_summary(
    tasks: list[Task], predictions: Iterable[dict], out_dir: Path, run_id: str
) -> dict[str, dict]:
    """One run summary per model from the instance files under OUT (repairrl.grading's make_run_summary)."""
    by_model: dict[str, dict[str, dict]] = {}
    for prediction in predictions:
        by_model.setdefault(prediction["model_name_or_path"], {})[prediction["instance_id"]] = prediction
    summaries = {}
    for model_name, model_predictions in by_model.items():
        summary = make_run_summary(
            tasks, model_predictions, out_dir / model_dir_name(model_name), model_name, run_id
        )
        validate_report(summary, "run_summary")
        with atomic_write(out_dir / f"{model_dir_name(model_name)}.{run_id}.json") as handle:
            handle.write(json.dumps(summary, indent=4) + "\n")
        summaries[model_name] = summary
    return summaries


def is_graded(out_dir: Path, prediction: dict) -> bool:
    return (
        out_dir / model_dir_name(prediction["model_name_or_path"]) / prediction["instance_id"] / LOG_REPORT
    ).exists()


# --- swebench: swebench's own harness (Docker) ---


def swebench_rows(tasks: Iterable[Task]) -> list[dict]:
    """The tasks as swebench dataset rows, for `-d rows.jsonl` (the fetched table, not a second hub download)."""
    rows = []
    for task in tasks:
        # swebench 5.x builds nothing: an empty eval script would grade even the gold patch unresolved, silently.
        missing = [name for name in ("eval_script", "log_parser") if not getattr(task, name)]
        if missing:
            raise HarnessError(
                f"{task.instance_id}: the task has no {' and no '.join(missing)}, which swebench's harness needs; "
                "fetch the dataset again (repairrl.data.fetch records how each task is graded)"
            )
        rows.append(container.swebench_row(task))
    return rows


def swebench_command(
    dataset: str,
    predictions: str | os.PathLike,
    run_id: str,
    report_dir: str | os.PathLike,
    *,
    max_workers: int = 4,
    timeout_s: int = 1800,
    split: str = "test",
    instance_ids: list[str] | None = None,
    python: str = sys.executable,
) -> list[str]:
    """swebench 5.x's command line (5.x dropped --namespace and --cache_level)."""
    command = [
        python, "-m", "swebench.harness.run_evaluation",
        "-d", str(dataset),
        "-s", split,
        "-p", str(predictions),
        "-id", run_id,
        "--max_workers", str(max_workers),
        "-t", str(int(timeout_s)),
        "--report_dir", str(report_dir),
    ]  # fmt: skip
    if instance_ids:
        command += ["-i", *instance_ids]
    return command


def locate_swebench_reports(root: Path, run_id: str, model_name: str | None = None) -> dict[str, Path]:
    """instance id -> report.json under ROOT/logs/run_evaluation/<run>/<model>/<id>/, found by glob."""
    model_glob = model_dir_name(model_name) if model_name else "*"
    found = {}
    for path in sorted(Path(root).glob(f"**/{SWEBENCH_LOG_DIR}/{run_id}/{model_glob}/*/{LOG_REPORT}")):
        found[path.parent.name] = path
    return found


def locate_swebench_summary(roots: Iterable[Path], run_id: str, model_name: str) -> Path | None:
    """The summary `<model>.<run>.json` swebench wrote under one of ROOTS (its --report_dir or its cwd)."""
    name = f"{model_dir_name(model_name)}.{run_id}.json"
    for root in roots:
        matches = sorted(Path(root).glob(f"**/{name}"), key=lambda p: len(p.parts))
        if matches:
            return matches[0]
    return None


def unreported_outcome(task: Task, prediction: dict, instance_log: Path | None) -> GradingOutcome:
    """Our record of a prediction swebench wrote no report for: it skips empty patches, and a patch that does
    not apply, a timeout or a crash end in its log only. Recorded so that none of them goes missing."""
    patch = prediction["model_patch"]
    text = instance_log.read_text(encoding="utf-8", errors="replace") if instance_log else ""
    if grade.is_empty_patch(patch):
        status, reason = grade.EMPTY_PATCH, "empty patch (swebench's harness does not run it)"
    elif grade.APPLY_PATCH_FAIL in text:
        status, reason = grade.PATCH_APPLY_FAILED, "the model patch does not apply"
    elif "timed out" in text.lower():
        status, reason = grade.TIMEOUT, "tests timed out"
    else:
        status, reason = grade.ERROR, "swebench's harness wrote no report; see run_instance.log"
    return GradingOutcome(
        instance_id=task.instance_id, model_name_or_path=prediction["model_name_or_path"], status=status,
        resolved=False, patch_applied=False, reason=reason, report=grade.unrun_report(task, patch), log=text,
    )  # fmt: skip


def collect_swebench_run(
    work_dir: Path, run_id: str, predictions: list[dict], out_dir: Path, tasks: list[Task] | None = None
) -> dict[str, dict]:
    """Copy swebench's per-instance outputs into OUT; model name -> swebench's own summary.

    With TASKS, each prediction swebench wrote no report for gets our outcome.json (`unreported_outcome`)."""
    by_id = {task.instance_id: task for task in tasks or []}
    summaries = {}
    for model_name in sorted({p["model_name_or_path"] for p in predictions}):
        reports = locate_swebench_reports(work_dir, run_id, model_name)
        for instance_id, report in reports.items():
            target = out_dir / model_dir_name(model_name) / instance_id
            target.mkdir(parents=True, exist_ok=True)
            for name in ("report.json", "test_output.txt", "patch.diff", "run_instance.log"):
                if (report.parent / name).exists():
                    shutil.copyfile(report.parent / name, target / name)
        for prediction in predictions:
            instance_id = prediction["instance_id"]
            if (
                prediction["model_name_or_path"] != model_name
                or instance_id in reports
                or instance_id not in by_id
            ):
                continue
            instance_log = work_dir / SWEBENCH_LOG_DIR / run_id / model_dir_name(model_name) / instance_id
            instance_log = instance_log / "run_instance.log"
            outcome = unreported_outcome(
                by_id[instance_id], prediction, instance_log if instance_log.exists() else None
            )
            write_instance_outputs(
                out_dir / model_dir_name(model_name) / instance_id, outcome, prediction["model_patch"]
            )
        summary_path = locate_swebench_summary([work_dir / "reports", work_dir], run_id, model_name)
        if summary_path is None:
            raise HarnessError(
                f"swebench wrote no summary {model_dir_name(model_name)}.{run_id}.json under {work_dir}; "
                f"see the harness log in {work_dir}"
            )
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        shutil.copyfile(summary_path, out_dir / summary_path.name)
        summaries[model_name] = summary
    return summaries


def run_swebench_harness(
    tasks: list[Task],
    predictions: list[dict],
    out_dir: Path,
    run_id: str,
    *,
    work_dir: Path,
    dataset: str | None = None,
    max_workers: int = 4,
    timeout_s: int = 1800,
) -> dict[str, dict]:
    """Run swebench's harness in WORK_DIR (it writes logs/ relative to its cwd) and collect its outputs.

    swebench keys a predictions file by instance id (the last prediction of an instance wins), so each model's
    predictions go to a run of their own."""
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        dataset = str(work_dir / "dataset.jsonl")
        write_jsonl(dataset, swebench_rows(tasks))
    by_model: dict[str, list[dict]] = {}
    for prediction in predictions:
        by_model.setdefault(prediction["model_name_or_path"], []).append(prediction)
    for model_name, model_predictions in sorted(by_model.items()):
        predictions_path = work_dir / f"predictions.{model_dir_name(model_name)}.jsonl"
        write_jsonl(predictions_path, model_predictions)
        command = swebench_command(
            dataset,
            predictions_path,
            run_id,
            work_dir / "reports",
            max_workers=max_workers,
            timeout_s=timeout_s,
        )
        with open(work_dir / "harness.log", "a", encoding="utf-8") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            completed = subprocess.run(
                command, cwd=work_dir, stdout=log, stderr=subprocess.STDOUT, check=False
            )
        if completed.returncode != 0:
            raise HarnessError(
                f"swebench's harness exited with code {completed.returncode}; see {work_dir / 'harness.log'} "
                "(is Docker running and reachable? On a cluster without Docker use --backend apptainer)"
            )
    return collect_swebench_run(work_dir, run_id, predictions, out_dir, tasks)


# --- apptainer: the instance image without Docker ---


instance_image = container.instance_image


@dataclass(frozen=True)
class ApptainerConfig:
    executable: str = "apptainer"
    timeout_s: float = 1800.0
    extra_args: tuple[str, ...] = ()
    # Images converted once to SIF files (`apptainer pull <sif_dir>/<name>.sif docker://<image>`): compute nodes
    # often have no registry access, and converting per job costs minutes.
    sif_dir: Path | None = None


sif_name = sif_name_of_image


def apptainer_command(image: str, scratch: Path, config: ApptainerConfig = ApptainerConfig()) -> list[str]:
    """Run SCRATCH/run.sh in the image: writable overlay in memory, a clean environment, nothing of the host."""
    return container.apptainer_command(
        image, scratch, executable=config.executable, sif_dir=config.sif_dir, extra_args=config.extra_args
    )


def apptainer_script(base_commit: str = "", reset_paths: tuple[str, ...] = ()) -> str:
    """Apply the patch with the harness's commands, reset test infrastructure, run the eval script
    (repairrl.grading.container's script, the one the `resolved` reward runs in Docker)."""
    return container.container_script(base_commit, reset_paths)


def swebench_test_spec(task: Task):
    """swebench's TestSpec for the task, built by swebench's own make_test_spec (exit-code recording included)."""
    if not task.eval_script:
        raise HarnessError(
            f"{task.instance_id}: the task has no eval_script; the apptainer backend needs one"
        )
    return container.test_spec(task)


def grade_container_log(
    task: Task, prediction: dict, log_path: Path, timed_out: bool, duration_s: float
) -> GradingOutcome:
    """swebench's verdict on the log of one container run."""
    return container.grade_log(task, prediction["model_patch"], prediction["model_name_or_path"], log_path,
                               timed_out, duration_s)  # fmt: skip


def grade_in_apptainer(
    task: Task, prediction: dict, config: ApptainerConfig, work_root: Path | None = None
) -> GradingOutcome:
    return container.grade_in_image(
        task, prediction["model_patch"], model_name=prediction["model_name_or_path"], timeout_s=config.timeout_s,
        command_for=lambda image, scratch, name: apptainer_command(image, scratch, config), work_root=work_root,
    )  # fmt: skip


def run_per_instance(
    tasks: list[Task], predictions: list[dict], out_dir: Path, run_id: str, grade_one, workers: int = 1
) -> dict[str, dict]:
    """Grade each prediction not graded yet with `grade_one(task, prediction)`, then write the summaries."""
    from concurrent.futures import ThreadPoolExecutor

    by_id = {task.instance_id: task for task in tasks}
    pending = [
        p for p in predictions
        if p["instance_id"] in by_id and not grade.is_empty_patch(p["model_patch"]) and not is_graded(out_dir, p)
    ]  # fmt: skip

    def one(prediction: dict) -> None:
        outcome = grade_one(by_id[prediction["instance_id"]], prediction)
        instance_dir = out_dir / model_dir_name(prediction["model_name_or_path"]) / prediction["instance_id"]
        write_instance_outputs(instance_dir, outcome, prediction["model_patch"])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, pending))
    return write_summary(tasks, predictions, out_dir, run_id)


def run_apptainer_harness(
    tasks: list[Task], predictions: list[dict], out_dir: Path, run_id: str, *, workers: int = 1,
    config: ApptainerConfig = ApptainerConfig(), work_root: Path | None = None,
) -> dict[str, dict]:  # fmt: skip
    if shutil.which(config.executable) is None:
        raise HarnessError(f"{config.executable} is not on PATH; load the cluster's apptainer module")
    return run_per_instance(
        tasks, predictions, out_dir, run_id, lambda t, p: grade_in_apptainer(t, p, config, work_root), workers
    )


# --- local: repairrl.grading ---


def run_local_harness(
    tasks: list[Task], predictions: list[dict], out_dir: Path, run_id: str, *, cache_dir: Path,
    workers: int = 2, timeout_s: float = grade.DEFAULT_TEST_TIMEOUT_S, sandbox: str = "bwrap",
    test_timeout_s: float = grade.DEFAULT_PER_TEST_TIMEOUT_S,
) -> dict[str, dict]:  # fmt: skip
    from repairrl.grading.run_evaluation import run_evaluation

    run_evaluation(
        tasks,
        predictions,
        cache_dir,
        out_dir,
        workers=workers,
        run_id=run_id,
        timeout_s=timeout_s,
        test_timeout_s=test_timeout_s,
        backend=sandbox,
    )
    # Summaries from the files, also for a model none of whose predictions needed grading this time.
    return write_summary(tasks, predictions, out_dir, run_id)
