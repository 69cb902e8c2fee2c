"""swebench predictions from agent trajectories, one shard of a benchmark at a time, resumably.

    python -m repairrl.evaluate predictions --tasks tasks.jsonl --trajectories traj.jsonl [more.jsonl ...] \
        --model-name NAME --out predictions.jsonl [--shard I --num-shards N]

A prediction is swebench's record: `instance_id`, `model_name_or_path`, `model_patch` (the episode's final diff;
"" when the episode produced none, which swebench counts as an empty patch). A shard is a deterministic slice of
the task table (by a hash of the instance id, so adding a task never moves the others between shards).

Resuming: the trajectory journal is append-only (`repairrl.records.append_jsonl`), so a task that already has a
trajectory there is finished and `pending_tasks` leaves it out; `run_shard` runs the agent on the rest only. The
journal is only resumed when it was written by the same model (weights included), on the same tasks, with the same
agent flags (`shard_fingerprint`, recorded beside it): a retrained model's shard starts from no episodes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from repairrl.fingerprint import model_signature, stage_fingerprint
from repairrl.records import append_jsonl, read_journal, validate_record, write_jsonl
from repairrl.tasks import Task
from repairrl.trajectories import episode_patch

PREDICTION_KEYS = ("instance_id", "model_name_or_path", "model_patch")
# Single-turn detection episodes answer with a label instead of a patch (repairrl.singleturn.episode).
OPTIONAL_PREDICTION_KEYS = ("answer", "error")


class ShardError(ValueError):
    """The shard arguments do not name a shard (`0 <= shard < num_shards`)."""


def shard_of(instance_id: str, num_shards: int) -> int:
    """The shard an instance belongs to: stable across runs, machines and Python versions (no `hash()`)."""
    digest = hashlib.sha256(instance_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def select_shard(tasks: Iterable[Task], shard: int, num_shards: int) -> list[Task]:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ShardError(f"shard {shard} of {num_shards}: need num_shards >= 1 and 0 <= shard < num_shards")
    return [task for task in tasks if shard_of(task.instance_id, num_shards) == shard]


def prediction_from_trajectory(record: Mapping, model_name: str) -> dict:
    prediction = {
        "instance_id": record["instance_id"],
        "model_name_or_path": model_name,
        "model_patch": episode_patch(record) or "",  # none: swebench's empty patch
    }
    if record.get("task_kind") == "detection":
        prediction["answer"] = record.get("answer")
    if record.get("status") == "failed":  # no patch because the episode never ran: an error, not an empty patch
        prediction["error"] = record.get("error") or "the episode failed"
    return prediction


def finished_ids(journal: Iterable[Mapping]) -> set[str]:
    return {record["instance_id"] for record in journal if isinstance(record.get("instance_id"), str)}


def pending_tasks(tasks: Iterable[Task], journal: Iterable[Mapping]) -> list[Task]:
    """The tasks that have no trajectory in the journal yet, in task order."""
    done = finished_ids(journal)
    return [task for task in tasks if task.instance_id not in done]


def predictions_for(tasks: Iterable[Task], trajectories: Iterable[Mapping], model_name: str) -> list[dict]:
    """One prediction per task that has a trajectory, in task order; a later trajectory of a task wins."""
    latest = {record["instance_id"]: record for record in trajectories if "instance_id" in record}
    return [
        prediction_from_trajectory(latest[task.instance_id], model_name)
        for task in tasks
        if task.instance_id in latest
    ]


SAMPLE_SUFFIX = ".sample"


def sample_model_name(model_name: str, sample: int) -> str:
    """The model name a sample's predictions are graded under. Harnesses key predictions by instance id within
    one model name (swebench: one run per model), so the best-of-N samples of a task are graded as N models."""
    return f"{model_name}{SAMPLE_SUFFIX}{sample}"


def sample_of_model_name(model_name: str) -> int:
    """The sample of a name made by `sample_model_name`."""
    _, separator, sample = model_name.rpartition(SAMPLE_SUFFIX)
    if not separator or not sample.isdigit():
        raise ValueError(f"{model_name!r} is not a per-sample model name (<model>{SAMPLE_SUFFIX}<k>)")
    return int(sample)


def predictions_per_sample(tasks: Iterable[Task], trajectories: Iterable[Mapping], model_name: str,
                           samples: int) -> list[dict]:
    """One prediction per (task, sample 0..samples-1) that has a trajectory, each under `sample_model_name`;
    a later trajectory of a pair wins."""
    latest = {(record["instance_id"], record["sample"]): record for record in trajectories if "instance_id" in record}
    return [
        prediction_from_trajectory(latest[task.instance_id, sample], sample_model_name(model_name, sample))
        for sample in range(samples)
        for task in tasks
        if (task.instance_id, sample) in latest
    ]


def write_predictions(path: str | os.PathLike, predictions: Iterable[dict]) -> int:
    rows = [{k: p[k] for k in (*PREDICTION_KEYS, *OPTIONAL_PREDICTION_KEYS) if k in p} for p in predictions]
    for row in rows:
        validate_record(row, "predictions", f"prediction for {row['instance_id']}")
    return write_jsonl(path, rows)


def end_torn_line(path: Path) -> None:
    """End a last line cut by a killed writer, so the next record is not glued onto it (and lost with it)."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


# Agent flags that say where things are or how many run at once, not which episodes come out; `--model` is keyed
# by its weights instead, `--base-url` changes with every server's port.
NOT_EPISODE_FLAGS = ("--workers", "--no-progress", "--cache-dir", "--work-root", "--keep-worktrees", "--base-url",
                     "--batch-size", "--model")


def flag_values(args: Sequence[str]) -> dict[str, list[str]]:
    """`--flag v1 v2 --switch` as {"--flag": ["v1", "v2"], "--switch": []} (`--flag=v` too)."""
    flags: dict[str, list[str]] = {}
    current = None
    for arg in args:
        if arg.startswith("--"):
            current, _, value = arg.partition("=")
            flags[current] = [value] if value else []
        elif current is not None:
            flags[current].append(arg)
    return flags


def shard_fingerprint(tasks: Iterable[Task], model_name: str, agent_args: Sequence[str],
                      model_dir: str | None) -> dict:
    """What a shard's episodes come from: its tasks, the model (its manifest and weights) and the agent's flags."""
    flags = flag_values(agent_args)
    model = model_dir or next(iter(flags.get("--model", [])), None)
    task_rows = json.dumps([dataclasses.asdict(task) for task in tasks], sort_keys=True, default=str)
    inputs = {"tasks": hashlib.sha256(task_rows.encode()).hexdigest(),
              "model": model_signature(model) if model else model_name}
    params = {"model_name": model_name,
              **{flag.removeprefix("--"): values for flag, values in flags.items() if flag not in NOT_EPISODE_FLAGS}}
    return stage_fingerprint(inputs, params)


# An episode runner takes the pending tasks and yields one trajectory record per finished task, as it finishes.
EpisodeRunner = Callable[[list[Task]], Iterable[dict]]


def run_shard(
    tasks: list[Task],
    run_episodes: EpisodeRunner,
    journal_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    model_name: str,
) -> dict:
    """Run the agent on the shard's unfinished tasks, journal each trajectory at once, then write predictions.

    A task whose episode crashed is recorded by the runner as a trajectory with its stop reason (and no patch),
    so it counts as finished: rerunning would cost the same and grade the same.
    """
    journal_path = Path(journal_path)
    end_torn_line(journal_path)
    pending = pending_tasks(tasks, read_journal(journal_path))
    ran = 0
    if pending:
        for record in run_episodes(pending):
            append_jsonl(journal_path, record)
            ran += 1
    predictions = predictions_for(tasks, read_journal(journal_path), model_name)
    write_predictions(predictions_path, predictions)
    return {
        "tasks": len(tasks),
        "skipped_finished": len(tasks) - len(pending),
        "ran": ran,
        "predictions": len(predictions),
        "missing": sorted({t.instance_id for t in tasks} - {p["instance_id"] for p in predictions}),
    }
