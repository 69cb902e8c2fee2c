"""Rows of a local dataset file (`source.path`): JSON Lines, a JSON document, or Parquet, read as they are.

Our own reader rather than `datasets.load_dataset("json", ...)`: that builder infers one Arrow type per column,
so PrimeVul's 128-bit `func_hash` becomes a float64 (its low digits gone) and ISO timestamps become datetimes,
and a bad file ends in a long traceback that names neither the file nor the line. Here `json.loads` gives ints
of any size and strings stay strings; Parquet columns become the Python objects pyarrow stores (no pandas).

Errors are `LocalFileError`, whose message names the file, the line (JSON Lines) and what to do. A bad line can
be handed to an `on_error` callback instead of raising, so a loader with `on_bad_row: skip` records it and goes
on; errors of the whole file (empty, not Parquet, a JSON document that does not parse) always raise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_MAGIC = b"PAR1"
ROWS_PER_PARQUET_BATCH = 1024


class LocalFileError(ValueError):
    """A local dataset file, or one line of it, cannot be read; `line` is None for an error of the whole file."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")


OnError = Callable[[LocalFileError], None]


def read_local_rows(path: str | Path, on_error: OnError | None = None) -> Iterator[dict]:
    """The rows (dicts) of a JSON Lines, JSON or Parquet file, in file order; blank lines are skipped.

    A bad line (not JSON, cut off, not an object, not UTF-8) raises `LocalFileError`, or, when `on_error` is
    given, is passed to it (`error.line`, `error.reason`) and reading goes on with the next line. The format
    comes from the suffix (.jsonl/.ndjson, .json, .parquet); any other suffix is told by the content.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(PARQUET_MAGIC))
    except OSError as error:
        raise LocalFileError(path, f"cannot be opened ({error.strerror or error})") from error
    bad_rows = 0

    def record_bad_row(error: LocalFileError) -> None:
        nonlocal bad_rows
        bad_rows += 1
        if on_error is None:
            raise error
        on_error(error)

    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES or (
        suffix not in JSON_LINES_SUFFIXES + (".json",) and head == PARQUET_MAGIC
    ):
        rows = _parquet_rows(path)
    elif suffix in JSON_LINES_SUFFIXES:
        rows = _json_lines_rows(path, record_bad_row)
    else:
        rows = _json_rows(path, record_bad_row)
    count = 0
    for row in rows:
        count += 1
        yield row
    # Every line bad and skipped is not "no rows": those lines are on record with their reasons.
    if count == 0 and bad_rows == 0:
        raise LocalFileError(
            path, "has no rows (the file is empty or holds only blank lines); check the path"
        )


def _json_lines_rows(path: Path, on_bad_row: OnError) -> Iterator[dict]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = _json_line_row(path, number, raw)
            except LocalFileError as error:
                on_bad_row(error)
                continue
            yield row


def _json_line_row(path: Path, number: int, raw: bytes) -> dict:
    try:
        # utf-8-sig on the first line only: a byte-order mark there is an editor's, not part of the row.
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.start + 1].hex()
        reason = (
            f"not UTF-8 text (byte 0x{bad} at byte {error.start + 1} of the line); re-save the file as UTF-8"
        )
        raise LocalFileError(path, reason, number) from error
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        # The last line, without its newline, opening a value it never closes: a write or download cut short.
        if not raw.endswith(b"\n") and text.lstrip().startswith(("{", "[")) and error.msg != "Extra data":
            reason = (
                "the last line is cut off (it ends inside a JSON value); the file was probably truncated "
                "while being written or downloaded: fetch it again, or drop the line"
            )
        else:
            reason = f"not JSON ({error.msg} at column {error.colno}); each line must be one JSON object"
        raise LocalFileError(path, reason, number) from error
    if not isinstance(value, dict):
        reason = (
            f'a JSON {_json_kind(value)}, not an object; each line must be one row: {{"field": value, ...}}'
        )
        raise LocalFileError(path, reason, number)
    return value


def _json_rows(path: Path, on_bad_row: OnError) -> Iterator[dict]:
    """A `.json` file: a JSON document (a list of rows, or {"rows": [...]}), or JSON Lines under that suffix.

    Released datasets use `.json` for both (DiverseVul's file is JSON Lines), so the content decides: a file
    whose first line is a whole JSON object is JSON Lines; anything else is read as one document.
    """
    with open(path, "rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    if first.lstrip().startswith(b"{") and _is_json_object(first):
        yield from _json_lines_rows(path, on_bad_row)
        return
    if not first:
        return
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LocalFileError(path, "not UTF-8 text; re-save the file as UTF-8", line) from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
            reason = (
                "the file is cut off here (the document ends inside a JSON value); fetch or write it again"
            )
        else:
            reason = f"not JSON ({error.msg} at column {error.colno}); expected a list of rows or JSON Lines"
        raise LocalFileError(path, reason, error.lineno) from error
    for position, row in enumerate(_document_rows(path, document), start=1):
        if isinstance(row, dict):
            yield row
            continue
        on_bad_row(
            LocalFileError(path, f"row {position} of the document is a JSON {_json_kind(row)}, not an object")
        )


def _document_rows(path: Path, document: object) -> list:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and len(document) == 1:
        (rows,) = document.values()
        if isinstance(rows, list):
            return rows
    kind = _json_kind(document)
    reason = (
        f"is a JSON {kind}; expected a list of row objects, an object holding one list of rows "
        '(e.g. {"rows": [...]}), or JSON Lines (one object per line)'
    )
    raise LocalFileError(path, reason)


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8-sig")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def _json_kind(value: object) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _parquet_rows(path: Path) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise LocalFileError(
            path, f"is not a readable Parquet file ({error}); check the file or its suffix"
        ) from error
    try:
        for batch in parquet.iter_batches(batch_size=ROWS_PER_PARQUET_BATCH):
            # to_pylist keeps each column's stored type: int64 -> int, string -> str, timestamp -> datetime.
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise LocalFileError(path, f"cannot be read as Parquet ({error}); the file may be damaged") from error
