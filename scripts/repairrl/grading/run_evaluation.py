"""Grade a predictions file against tasks and write swebench-format results, resumably.

    python -m repairrl.grading --tasks tasks.jsonl --predictions preds.jsonl --cache-dir DIR --out DIR

Predictions are swebench's (`instance_id`, `model_name_or_path`, `model_patch`; JSONL, or a JSON list or
mapping). For each prediction, OUT/<model>/<instance_id>/ receives, as swebench's harness writes them:

    patch.diff         the model patch
    test_output.txt    the log, with swebench's markers
    outcome.json       repairrl's GradingOutcome (status, reason, timings), without the log
    report.json        get_eval_report's output, written last, and only where swebench's harness writes one:
                       when the tests ran to the end (not for an empty patch, a patch that does not apply,
                       a timeout or a grader crash; those are in the summary's empty_patch_ids or error_ids)

and OUT/<model>.<run_id>.json is the run summary in the shape of swebench's `make_run_report`, which reads
the same directory to the same verdicts. Resumable as swebench is: an instance with a report.json is not
graded again; the others are retried.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repairrl.grading import grade
from repairrl.grading.grade import GradingOutcome
from repairrl.records import atomic_write, load_schema, read_jsonl
from repairrl.tasks import Task, read_tasks

LOG_REPORT = "report.json"
LOG_OUTCOME = "outcome.json"
LOG_TEST_OUTPUT = "test_output.txt"
LOG_PATCH = "patch.diff"
# The outcomes swebench's harness writes a report.json for; for the others it raises EvaluationError (or
# skips an empty patch), and its run summary counts them as errors (or empty patches).
REPORTED_STATUSES = (grade.RESOLVED, grade.UNRESOLVED)


class PredictionsError(ValueError):
    """The predictions file is malformed; the message names the file and the entry."""


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """swebench predictions from JSONL, a JSON list, or a JSON mapping of instance id -> prediction."""
    path = Path(path)
    if path.suffix == ".jsonl":
        predictions = read_jsonl(path)
    else:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        predictions = list(loaded.values()) if isinstance(loaded, dict) else loaded
    for number, prediction in enumerate(predictions, start=1):
        missing = [k for k in ("instance_id", "model_name_or_path", "model_patch") if k not in prediction]
        if missing:
            raise PredictionsError(
                f"{path}: prediction {number} lacks {', '.join(missing)} (swebench's format)"
            )
    return predictions


def model_dir_name(model_name_or_path: str) -> str:
    return model_name_or_path.replace("/", "__")


def _write_json(path: Path, value: Any) -> None:
    with atomic_write(path) as handle:
        handle.write(json.dumps(value, indent=4, sort_keys=False) + "\n")


def validate_report(report: dict, definition: str = "instance_report") -> None:
    """Check a report.json (or, with definition="run_summary", a summary) against grading_report's schema."""
    import jsonschema

    schema = load_schema("grading_report")
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})
    errors = sorted(validator.iter_errors(report), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        where = ".".join(map(str, errors[0].absolute_path)) or "(top level)"
        raise ValueError(f"{definition} does not match its schema at '{where}': {errors[0].message}")


def write_instance_outputs(instance_dir: Path, outcome: GradingOutcome, model_patch: str | None) -> None:
    instance_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(instance_dir / LOG_PATCH) as handle:
        handle.write(model_patch or "")
    with atomic_write(instance_dir / LOG_TEST_OUTPUT) as handle:
        handle.write(outcome.log)
    _write_json(instance_dir / LOG_OUTCOME, outcome.to_record())
    if outcome.status in REPORTED_STATUSES:
        validate_report(outcome.report)
        _write_json(instance_dir / LOG_REPORT, outcome.report)


def _status_of(instance_dir: Path, instance_id: str) -> tuple[str, str | None, dict]:
    """(status, reason, outcome record) of an instance from its files; 'incomplete' when it has not been graded."""
    outcome_path, report_path = instance_dir / LOG_OUTCOME, instance_dir / LOG_REPORT
    if outcome_path.exists():
        try:
            record = json.loads(outcome_path.read_text(encoding="utf-8"))
            return record["status"], record.get("reason"), record
        except (json.JSONDecodeError, KeyError):
            return grade.ERROR, f"{outcome_path} is not a readable outcome", {}
    if report_path.exists():  # a report without our outcome, e.g. written by swebench's own harness
        try:
            resolved = json.loads(report_path.read_text(encoding="utf-8"))[instance_id]["resolved"]
            return (grade.RESOLVED if resolved else grade.UNRESOLVED), None, {}
        except (json.JSONDecodeError, KeyError):
            return grade.ERROR, f"{report_path} is not a readable report", {}
    return "incomplete", None, {}


def make_run_summary(
    tasks: list[Task], predictions: dict[str, dict], model_dir: Path, model_name: str, run_id: str
) -> dict:
    """The run summary with the keys of swebench's `make_run_report` (schema_version 2)."""
    ids: dict[str, set[str]] = {
        name: set()
        for name in ("completed", "incomplete", "empty_patch", "resolved", "unresolved", "error", "grading_error",
                     "test_timeout", "test_infra_edit")
    }
    test_infra_edits: dict[str, list[str]] = {}
    error_reasons: dict[str, str] = {}
    for task in tasks:
        instance_id = task.instance_id
        if instance_id not in predictions:
            ids["incomplete"].add(instance_id)
            continue
        if grade.is_empty_patch(predictions[instance_id].get("model_patch")) and not predictions[instance_id].get("error"):
            ids["empty_patch"].add(instance_id)
            continue
        status, reason, outcome = _status_of(model_dir / instance_id, instance_id)
        # Grades that are not plain verdicts, counted apart so that none passes for a model's failure.
        if status in (grade.ERROR, "incomplete"):
            ids["grading_error"].add(instance_id)
        if status == grade.TIMEOUT or outcome.get("timed_out_tests"):
            ids["test_timeout"].add(instance_id)
        if outcome.get("test_infra_edits"):
            ids["test_infra_edit"].add(instance_id)
            test_infra_edits[instance_id] = list(outcome["test_infra_edits"])
        if (model_dir / instance_id / LOG_REPORT).exists():
            ids["completed"].add(instance_id)
        if status == grade.RESOLVED:
            ids["resolved"].add(instance_id)
        elif status == grade.UNRESOLVED:
            ids["unresolved"].add(instance_id)
        else:
            ids["error"].add(instance_id)
            error_reasons[instance_id] = reason or ("not graded" if status == "incomplete" else status)
    task_ids = {task.instance_id for task in tasks}
    return {
        "model_name_or_path": model_name,
        "run_id": run_id,
        "total_instances": len(tasks),
        "submitted_instances": len(set(predictions) & task_ids),
        "completed_instances": len(ids["completed"]),
        "resolved_instances": len(ids["resolved"]),
        "unresolved_instances": len(ids["unresolved"]),
        "infra_failure_instances": 0,
        "ambiguous_failure_instances": 0,
        "empty_patch_instances": len(ids["empty_patch"]),
        "error_instances": len(ids["error"]),
        "completed_ids": sorted(ids["completed"]),
        "incomplete_ids": sorted(ids["incomplete"]),
        "empty_patch_ids": sorted(ids["empty_patch"]),
        "submitted_ids": sorted(predictions),
        "resolved_ids": sorted(ids["resolved"]),
        "unresolved_ids": sorted(ids["unresolved"]),
        "infra_failure_ids": [],
        "ambiguous_failure_ids": [],
        # swebench's failure_reasons are its infrastructure-failure classes (none here); error_reasons are ours.
        "failure_reasons": {},
        "error_ids": sorted(ids["error"]),
        "error_reasons": dict(sorted(error_reasons.items())),
        # repairrl's own keys (swebench's reporting ignores them).
        "grading_error_ids": sorted(ids["grading_error"]),
        "test_timeout_ids": sorted(ids["test_timeout"]),
        "test_infra_edit_ids": sorted(ids["test_infra_edit"]),
        "test_infra_edits": dict(sorted(test_infra_edits.items())),
        "schema_version": 2,
    }


def episode_failure_outcome(task: Task, prediction: dict, model_name: str) -> GradingOutcome:
    """The outcome of a prediction whose episode failed (it says so in `error`): an error, never an empty patch."""
    reason = f"the episode failed: {prediction['error']}"
    return GradingOutcome(
        instance_id=task.instance_id, model_name_or_path=model_name, status=grade.ERROR, resolved=False,
        patch_applied=False, reason=reason, report=grade.unrun_report(task, prediction.get("model_patch")),
        log=reason + "\n",
    )


def run_evaluation(
    tasks: list[Task],
    predictions: Iterable[dict],
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    workers: int = 2,
    run_id: str = "repairrl",
    **grade_kwargs: Any,
) -> dict[str, dict]:
    """Grade every prediction not graded yet; write per-instance files and one summary per model.

    Returns model name -> summary. `grade_kwargs` go to `grade_with_tests` (timeout_s, test_timeout_s,
    backend, ...).
    """
    out_dir = Path(out_dir)
    by_id = {task.instance_id: task for task in tasks}
    by_model: dict[str, dict[str, dict]] = {}
    for prediction in predictions:
        if prediction["instance_id"] not in by_id:
            print(f"skipping prediction for unknown instance {prediction['instance_id']}", file=sys.stderr)
            continue
        by_model.setdefault(prediction["model_name_or_path"], {})[prediction["instance_id"]] = prediction

    for model_name, model_predictions in by_model.items():
        model_dir = out_dir / model_dir_name(model_name)
        # Resumable: an instance with a report.json is done.
        pending = [
            p for p in model_predictions.values() if not (model_dir / p["instance_id"] / LOG_REPORT).exists()
        ]
        if not pending:
            continue

        def write(
            outcome: GradingOutcome, model_dir: Path = model_dir, predictions: dict = model_predictions
        ) -> None:
            write_instance_outputs(
                model_dir / outcome.instance_id, outcome, predictions[outcome.instance_id]["model_patch"]
            )

        for prediction in [p for p in pending if p.get("error")]:
            write(episode_failure_outcome(by_id[prediction["instance_id"]], prediction, model_name))
        pairs = [(by_id[p["instance_id"]], p["model_patch"]) for p in pending if not p.get("error")]
        grade.grade_many(
            pairs, cache_dir, workers=workers, on_outcome=write, model_name=model_name, **grade_kwargs
        )

    summaries = {}
    for model_name, model_predictions in by_model.items():
        model_dir = out_dir / model_dir_name(model_name)
        summary = make_run_summary(tasks, model_predictions, model_dir, model_name, run_id)
        validate_report(summary, "run_summary")
        _write_json(out_dir / f"{model_dir_name(model_name)}.{run_id}.json", summary)
        summaries[model_name] = summary
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repairrl.grading", description="Grade predictions by running each task's tests."
    )
    parser.add_argument("--tasks", required=True, type=Path, help="tasks.jsonl in repairrl's task schema")
    parser.add_argument(
        "--predictions", required=True, type=Path, help="swebench predictions (.jsonl or .json)"
    )
    parser.add_argument("--cache-dir", required=True, type=Path, help="the repository cache")
    parser.add_argument(
        "--out", required=True, type=Path, help="writes OUT/<model>/<instance_id>/report.json"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--timeout",
        type=float,
        default=grade.DEFAULT_TEST_TIMEOUT_S,
        help="seconds to grade one instance (applying the patches, compiling, every test)",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=grade.DEFAULT_PER_TEST_TIMEOUT_S,
        help="seconds per test: a test that runs longer fails and the others still run (0: no limit)",
    )
    parser.add_argument(
        "--sandbox",
        default="bwrap",
        choices=[*grade.SANDBOX_BACKENDS, grade.UNSAFE_BACKEND],
        help=f"where the tests run; '{grade.UNSAFE_BACKEND}' runs them on the host (trusted patches only)",
    )
    parser.add_argument("--run-id", default="repairrl", help="names the summary OUT/<model>.<run_id>.json")
    args = parser.parse_args(argv)
    summaries = run_evaluation(
        read_tasks(args.tasks),
        read_predictions(args.predictions),
        args.cache_dir,
        args.out,
        workers=args.workers,
        run_id=args.run_id,
        timeout_s=args.timeout,
        test_timeout_s=args.test_timeout or None,
        backend=args.sandbox,
    )
    for model_name, summary in summaries.items():
        print(
            f"{model_name}: {summary['resolved_instances']}/{summary['submitted_instances']} resolved, "
            f"{summary['unresolved_instances']} unresolved, {summary['empty_patch_instances']} empty, "
            f"{summary['error_instances']} errors"
        )
        for instance_id, reason in summary["error_reasons"].items():
            print(f"  {instance_id}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
