"""State a stage resumes from (checkpoints, episode journals), keyed by what it was computed from.

A stage that resumes after a kill must not resume after a change: checkpoints trained on last week's dataset, or
a journal of episodes of the model before it was retrained, are not this run's. Each such state gets a record
beside it (`<state>.fingerprint.json`) of the stage's inputs and parameters; `claim_state` keeps the state when
the record matches and removes it (saying why, on one line) when it does not.

An input's signature is the sha256 of its content up to CONTENT_HASH_LIMIT bytes per file, and size + mtime
above that: hashing a 14B model's 28 GB on every start would cost minutes, and weights are only ever rewritten
whole (a retrained model's files get a new mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from repairrl.records import atomic_write

CONTENT_HASH_LIMIT = 64 * 2**20
RECORD_SUFFIX = ".fingerprint.json"
# Trainer fields that say how far to train, where to write and what to show, not what is trained: a run resumed
# with a larger --max-steps, or under a new server port, continues the same training.
NOT_STATE_FIELDS = (
    "output_dir", "max_steps", "num_train_epochs", "save_steps", "save_total_limit", "save_strategy",
    "logging_steps", "logging_dir", "logging_first_step", "report_to", "run_name", "disable_tqdm",
    "dataloader_num_workers", "vllm_server_url", "vllm_server_base_url", "vllm_server_host", "vllm_server_port",
    "vllm_group_port", "logprob_gap_every",
)


def _file_signature(path: Path) -> str:
    stat = path.stat()  # follows symlinks: the HF cache's snapshot files point at its blobs
    if stat.st_size > CONTENT_HASH_LIMIT:
        return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return f"sha256={digest.hexdigest()}"


def path_signature(path: str | os.PathLike, ignore: Iterable[str] = ()) -> str:
    """One digest of a file, or of a directory's files (relative names included, names matching a pattern of
    `ignore` left out), or of a missing path."""
    path = Path(path)
    ignore = tuple(ignore)
    digest = hashlib.sha256()
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file() and not any(fnmatch(p.name, i) for i in ignore))
        for file in sorted(files):
            digest.update(f"{file.relative_to(path).as_posix()}\0{_file_signature(file)}\n".encode())
    elif path.is_file():
        digest.update(_file_signature(path).encode())
    else:
        digest.update(b"missing")
    return digest.hexdigest()


def model_signature(manifest_dir: str | os.PathLike) -> str:
    """A prepared model's manifest and the weights it resolves to (a retrained model writes new weights under the
    same manifest text); a hub id or endpoint that is not on disk is keyed by its name."""
    from repairrl.models.loading import resolve_model_path

    manifest_dir = Path(manifest_dir)
    if not (manifest_dir / "model.json").is_file():
        return hashlib.sha256(str(manifest_dir).encode()).hexdigest()
    weights = resolve_model_path(manifest_dir)
    parts = [path_signature(manifest_dir / "model.json"),
             path_signature(weights) if Path(weights).exists() else weights]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def stage_fingerprint(inputs: Mapping[str, str], params: Mapping[str, Any]) -> dict:
    """The record of one run's inputs (name -> signature) and parameters, with one `key` over both."""
    body = {"inputs": dict(sorted(inputs.items())), "params": json.loads(json.dumps(params, sort_keys=True,
                                                                                    default=str))}
    key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {"key": key, **body}


def record_path(state: str | os.PathLike) -> Path:
    state = Path(state)
    return state.with_name(state.name + RECORD_SUFFIX)


def _what_changed(old: Mapping, new: Mapping) -> str:
    changed = [f"input {name}" for name in sorted({*old.get("inputs", {}), *new["inputs"]})
               if old.get("inputs", {}).get(name) != new["inputs"].get(name)]
    changed += [f"--{name}" for name in sorted({*old.get("params", {}), *new["params"]})
                if old.get("params", {}).get(name) != new["params"].get(name)]
    return ", ".join(changed) or "the fingerprint format"


def claim_state(state: str | os.PathLike, fingerprint: Mapping, also: Iterable[str | os.PathLike] = (),
                what: str = "state", resume: bool = True) -> bool:
    """Make `state` (a file or directory, plus the paths in `also`) belong to `fingerprint`.

    True when the state on disk was written for the same inputs and parameters and `resume` is asked (resume from
    it). Otherwise any state there is removed, with one line on stderr saying why, and False is returned: a later
    resume must never pick up a checkpoint an older run left behind. The record is written before the stage
    starts, so a run killed at once still resumes as the same run.
    """
    state = Path(state)
    paths = [state, *map(Path, also)]
    record = record_path(state)
    existing = [p for p in paths if p.exists()]
    try:
        old = json.loads(record.read_text()) if record.is_file() else None
    except (OSError, json.JSONDecodeError):
        old = {}
    if resume and old is not None and old.get("key") == fingerprint["key"]:
        return True
    if existing:
        if not resume:
            why = "not asked to resume"
        else:
            why = "no record of its inputs" if old is None else f"changed: {_what_changed(old, fingerprint)}"
        print(f"{what}: not resuming from {state} ({why}); starting fresh", file=sys.stderr)
        for path in existing:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    with atomic_write(record) as handle:
        json.dump(fingerprint, handle, indent=2, sort_keys=True)
    return False


def changed_fields(config: Any, default: Any, ignore: Iterable[str] = ()) -> dict:
    """The fields of a (TrainingArguments-like) dataclass config that differ from a default-built one: what the
    run asked for, without what the machine filled in the same way for both."""
    ignore = set(ignore)
    ours, theirs = _as_dict(config), _as_dict(default)
    return {k: v for k, v in ours.items() if k not in ignore and theirs.get(k, object()) != v}


def _as_dict(config: Any) -> dict:
    import dataclasses

    values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def claim_state_once(state: str | os.PathLike, fingerprint: Mapping, **kwargs: Any) -> None:
    """`claim_state` on the main process of a launched training run while the other ranks wait for it: one
    process decides and deletes, and no rank looks for a checkpoint before that."""
    from accelerate import PartialState

    processes = PartialState()
    with processes.main_process_first():
        if processes.is_main_process:
            claim_state(state, fingerprint, **kwargs)
