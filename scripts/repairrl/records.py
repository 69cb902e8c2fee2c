"""Records on disk: JSONL files written atomically and validated against the project's JSON schemas."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

# Read once at import, while nothing else runs: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
# The schemas ship inside the package (workflow/schemas links here), so a non-editable install has them too.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside `path` and rename it over `path` only if the block succeeds.

    Readers (and Snakemake) never see a half-written output, even when a job is killed mid-write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes the file 0600; an output is as readable as any other
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def json_line(row: dict) -> str:
    """One JSONL line. Text that UTF-8 cannot hold (a lone surrogate from a model's output) is written escaped
    rather than failing the write: a record is never lost to the bytes a model produced."""
    line = json.dumps(row, ensure_ascii=False, sort_keys=True)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row, ensure_ascii=True, sort_keys=True)
    return line + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json_line(row))
            count += 1
    return count


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error})") from error
    return rows


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one record and flush it to disk: the journal that lets long stages resume after a kill.

    A line torn by a kill is skipped by `read_journal`, so the record is simply redone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json_line(row))
        handle.flush()
        os.fsync(handle.fileno())


def read_journal(path: str | os.PathLike) -> list[dict]:
    """Read an append-only journal, skipping (with a warning) a line torn by a killed writer, even one cut inside
    a UTF-8 character: its record is simply redone."""
    if not Path(path).exists():
        return []
    rows, torn = [], []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                torn.append(number)
    if torn:
        warnings.warn(f"{path}: skipped {len(torn)} unreadable line(s) (line {', '.join(map(str, torn[:5]))}); "
                      "their records are redone", RuntimeWarning, stacklevel=2)
    return rows


@cache
def load_schema(name: str) -> dict:
    import yaml

    with open(SCHEMA_DIR / f"{name}.schema.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


class RecordError(ValueError):
    """A record does not match its schema."""


def validate_record(record: dict, schema_name: str, where: str = "record") -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        field = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RecordError(f"{where}: field '{field}': {error.message}")
