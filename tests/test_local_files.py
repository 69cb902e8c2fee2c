"""Local dataset files (`source.path`): JSON Lines, JSON and Parquet read as they are, with errors that name file and line."""

from __future__ import annotations

import datetime
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from repairrl.data.local_files import LocalFileError, read_local_rows

HASH = 255087747659226932756944884868284698117  # a 128-bit PrimeVul func_hash: a float64 would round it


def write_bytes(path, data):
    path.write_bytes(data)
    return path


# name, content, line named in the message (None: an error of the whole file), words of the reason
BAD_FILES = [
    ("cut_off.jsonl", b'{"idx": 1}\n\n{"idx": 2, "func": "int f(', 3, "cut off"),
    ("empty.jsonl", b"", None, "has no rows"),
    ("blank.jsonl", b"\n  \n\n", None, "has no rows"),
    ("not_json.jsonl", b'{"idx": 1}\nidx=2, func=f\n', 2, "not JSON"),
    ("array_row.jsonl", b'{"idx": 1}\n[2, "int f(void);"]\n', 2, "a JSON array, not an object"),
    ("scalar_row.jsonl", b'{"idx": 1}\n"int f(void);"\n', 2, "a JSON string, not an object"),
    ("latin1.jsonl", b'{"idx": 1}\n{"func": "caf\xe9"}\n', 2, "not UTF-8"),
    ("cut_off.json", b'[\n  {"idx": 1},\n  {"idx": 2, "func": "int\n', 3, "cut off"),
    ("cut_in_string.json", b'[\n  {"idx": 1},\n  {"idx": 2, "func": "int f(', 3, "cut off"),
    ("not_json.json", b"[\n  {idx: 1}\n]\n", 2, "not JSON"),
    ("latin1.json", b'[\n  {"func": "caf\xe9"}\n]\n', 2, "not UTF-8"),
    ("number.json", b"42\n", None, "is a JSON number"),
    ("empty.json", b"", None, "has no rows"),
    ("empty_list.json", b"[]\n", None, "has no rows"),
    ("array_row.json", b'[{"idx": 1}, [2]]\n', None, "row 2 of the document is a JSON array"),
    ("broken.parquet", b"PAR1 not really parquet", None, "not a readable Parquet file"),
    ("missing.jsonl", None, None, "cannot be opened"),
]


@pytest.mark.parametrize(
    ("name", "content", "line", "reason"), BAD_FILES, ids=[case[0] for case in BAD_FILES]
)
def test_bad_file_error_names_the_file_the_line_and_the_reason(tmp_path, name, content, line, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LocalFileError) as caught:
        list(read_local_rows(path))
    error = caught.value
    where = str(path) if line is None else f"{path}, line {line}"
    assert str(error).startswith(f"{where}: "), str(error)
    assert reason in str(error)
    assert (error.path, error.line) == (str(path), line)
    assert isinstance(error, ValueError)  # loaders catch ValueError for a bad row


def test_bad_lines_go_to_on_error_with_their_line_and_reading_goes_on(tmp_path):
    lines = [
        b'{"idx": 1}',
        b"",
        b"[2]",
        b'{"idx": 3}',
        b"nonsense",
        b'{"idx": 5}',
        b'{"idx": 6, "func": "int',
    ]
    path = write_bytes(tmp_path / "rows.jsonl", b"\n".join(lines))
    skipped = []
    rows = list(
        read_local_rows(
            path, on_error=lambda error: skipped.append({"row": error.line, "reason": error.reason})
        )
    )
    assert rows == [{"idx": 1}, {"idx": 3}, {"idx": 5}]
    assert [(s["row"], s["reason"].split(",")[0].split(" (")[0]) for s in skipped] == [
        (3, "a JSON array"),
        (5, "not JSON"),
        (7, "the last line is cut off"),
    ]


def test_a_file_whose_every_line_was_skipped_is_not_reported_as_empty(tmp_path):
    path = write_bytes(tmp_path / "rows.jsonl", b"[1]\n[2]\n")
    skipped = []
    assert list(read_local_rows(path, on_error=skipped.append)) == []
    assert [error.line for error in skipped] == [1, 2]


def test_json_lines_values_stay_as_written(tmp_path):
    row = {
        "func_hash": HASH,
        "idx": 194963,
        "created_at": "2021-02-25T10:00:00Z",
        "cve": "None",
        "file_hash": None,
        "cwe": ["CWE-787"],
        "ratio": 0.5,
    }
    path = write_bytes(tmp_path / "rows.jsonl", (json.dumps(row) + "\r\n").encode())
    (read,) = read_local_rows(path)
    assert read == row
    assert type(read["func_hash"]) is int and read["func_hash"] == HASH
    assert type(read["created_at"]) is str and read["cve"] == "None"


def test_byte_order_mark_and_blank_lines_are_not_rows(tmp_path):
    path = write_bytes(tmp_path / "rows.jsonl", b'\xef\xbb\xbf{"idx": 1}\n\n   \n{"idx": 2}\n\n')
    assert list(read_local_rows(path)) == [{"idx": 1}, {"idx": 2}]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (
            "list.json",
            b'[\n  {"idx": 1, "h": 255087747659226932756944884868284698117},\n  {"idx": 2, "h": null}\n]\n',
        ),
        (
            "wrapped.json",
            (
                b'{\n  "rows": [\n    {"idx": 1, "h": 255087747659226932756944884868284698117},\n'
                b'    {"idx": 2, "h": null}\n  ]\n}\n'
            ),
        ),
        # DiverseVul and others ship JSON Lines under a .json name.
        ("lines.json", b'{"idx": 1, "h": 255087747659226932756944884868284698117}\n{"idx": 2, "h": null}\n'),
        ("rows.ndjson", b'{"idx": 1, "h": 255087747659226932756944884868284698117}\n{"idx": 2, "h": null}\n'),
        ("rows.txt", b'{"idx": 1, "h": 255087747659226932756944884868284698117}\n{"idx": 2, "h": null}\n'),
    ],
)
def test_json_shapes_give_the_same_rows(tmp_path, name, content):
    path = write_bytes(tmp_path / name, content)
    assert list(read_local_rows(path)) == [{"idx": 1, "h": HASH}, {"idx": 2, "h": None}]


def test_parquet_round_trip_keeps_stored_types(tmp_path):
    rows = [
        {
            "idx": 194963,
            "func_hash": str(HASH),  # Parquet has no 128-bit int: PrimeVul copies store the hash as a string
            "created_at": "2021-02-25T10:00:00Z",
            "cwe": ["CWE-787", "CWE-119"],
            "cve": None,
        },
        {"idx": 2**62, "func_hash": "7", "created_at": "2022-01-01", "cwe": [], "cve": "CVE-2022-0080"},
    ]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    read = list(read_local_rows(path))
    assert read == rows
    assert all(
        type(r["func_hash"]) is str and type(r["created_at"]) is str and type(r["idx"]) is int for r in read
    )


def test_parquet_timestamp_column_comes_back_as_stored(tmp_path):
    when = datetime.datetime(2021, 2, 25, 10, 0, tzinfo=datetime.timezone.utc)
    path = tmp_path / "rows.data"  # no suffix to go by: the Parquet magic number decides
    pq.write_table(pa.table({"at": pa.array([when], pa.timestamp("us", tz="UTC")), "idx": [1]}), path)
    assert list(read_local_rows(path)) == [{"at": when, "idx": 1}]


def test_parquet_without_rows_is_an_error(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"idx": pa.array([], pa.int64())}), path)
    with pytest.raises(LocalFileError, match="has no rows"):
        list(read_local_rows(path))
