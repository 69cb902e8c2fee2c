"""Genuine PrimeVul rows (tests/fixtures/primevul) through the local-file reader and the detection loader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from repairrl.data.detection import load_detection_samples, looks_like_cpp, primevul_values
from repairrl.data.loaders import DatasetSpec
from repairrl.data.local_files import read_local_rows

FIXTURE = Path(__file__).parent / "fixtures" / "primevul" / "primevul_valid_paired_sample.jsonl"
LINES = FIXTURE.read_text(encoding="utf-8").splitlines()
RAW = [json.loads(line) for line in LINES]
# By file name: .c -> c, .cc -> cpp; "None" (no file recorded) -> the code decides, and faad2's stszin is C.
LANGUAGE_OF_IDX = {195057: "c", 220894: "c", 195084: "c", 221432: "c", 195244: "cpp", 223149: "cpp"}
PAIR_OF_PROJECT = {
    "keepkey-firmware": "keepkey-firmware-e49d45594002-ethereum_extractThorchainData",
    "faad2": "faad2-1b71a6ba963d-stszin",
    "tensorflow": "tensorflow-c2426bba00a0-TensorByteSize",
}


def primevul_spec():
    return DatasetSpec(name="primevul", format="primevul", path=str(FIXTURE), split="eval")


@pytest.fixture(scope="module")
def samples():
    result = load_detection_samples(primevul_spec(), rows=read_local_rows(FIXTURE))
    assert result.skipped == []
    return result.samples


def test_fixture_rows_are_unedited_primevul_rows():
    for line, row in zip(LINES, RAW):
        assert json.dumps(row) == line  # the release's own serialisation, so nothing was reformatted
        squeezed = "".join(row["func"].split())
        assert int(hashlib.md5(squeezed.encode()).hexdigest(), 16) == row["func_hash"], row["idx"]
    assert sorted(row["target"] for row in RAW) == [0, 0, 0, 1, 1, 1]


def test_reader_gives_every_field_exactly_as_in_the_file():
    rows = list(read_local_rows(FIXTURE))
    assert rows == RAW
    for row, raw in zip(rows, RAW):
        assert list(row) == list(raw)
        for name, value in row.items():
            assert type(value) is type(raw[name]) and value == raw[name], (raw["idx"], name)
        assert (
            type(row["idx"]) is int and type(row["func_hash"]) is int and row["func_hash"].bit_length() > 64
        )


def test_loader_keeps_every_field_of_the_genuine_rows(samples):
    assert [s.sample_id for s in samples] == [f"{row['project']}-{row['idx']}" for row in RAW]
    for sample, raw in zip(samples, RAW):
        assert sample.dataset == "primevul" and sample.split == "eval"
        assert sample.code == raw["func"]
        assert sample.label == {1: "vulnerable", 0: "benign"}[raw["target"]]
        assert sample.cwe == raw["cwe"]
        assert (sample.project, sample.commit_id) == (raw["project"], raw["commit_id"])
        assert sample.language == LANGUAGE_OF_IDX[raw["idx"]]
        assert sample.pair_id == PAIR_OF_PROJECT[raw["project"]]
        extra = dict(sample.extra)
        assert extra.pop("function_name") == PAIR_OF_PROJECT[raw["project"]].rsplit("-", 1)[1]
        expected = {
            name: raw[name]
            for name in ("idx", "cve", "cve_desc", "func_hash", "commit_url", "commit_message")
        }
        if raw["file_name"] != "None":
            expected["file_name"] = raw["file_name"]
        assert extra == expected
        assert type(extra["idx"]) is int and type(extra["func_hash"]) is int  # exact, never a float


def test_primevul_none_strings_become_none(samples):
    faad2 = [s for s in samples if s.project == "faad2"]
    assert len(faad2) == 2 and all("file_name" not in s.extra for s in faad2)
    (raw,) = [row for row in RAW if row["idx"] == 195084]
    assert raw["file_name"] == "None" and raw["file_hash"] is None
    values = primevul_values(raw)
    assert values["file_name"] is None and values["file_hash"] is None
    assert {k: v for k, v in values.items() if k != "file_name"} == {
        k: v for k, v in raw.items() if k != "file_name"
    }


def test_none_strings_in_other_primevul_fields_become_none():
    row = dict(RAW[0], cve="None", cve_desc="None", nvd_url="None", commit_message="None", cwe="None")
    (sample,) = load_detection_samples(primevul_spec(), rows=[row]).samples
    assert sample.cwe == [] and not {"cve", "cve_desc", "commit_message"} & set(sample.extra)
    assert primevul_values(dict(row, cwe=["None"]))["cwe"] == []


@pytest.mark.parametrize(
    ("file_name", "code", "language"),
    [
        ("ssl/s3_lib.c", "long f(SSL *s) { return s->x; }", "c"),
        ("src/util.h", "static inline int g(int a) { return a + 1; }", "c"),
        ("src/util.h", "inline int Foo::g(int a) { return a + 1; }", "cpp"),
        ("preg.cpp", "String preg_quote(const String& str) { return str; }", "cpp"),
        ("lib/Codec.C", "int f(void) { return 0; }", "cpp"),
        ("x.hpp", "int f(void) { return 0; }", "cpp"),
        ("None", "int f(void) { return 0; }", "c"),
        ("None", "void f(T *p) { if (p == nullptr) return; }", "cpp"),
        (None, "void f(void) { auto x = static_cast<int>(y); }", "cpp"),
        ("Makefile", "int f(void) { return 0; }", "c"),
    ],
)
def test_language_comes_from_the_file_extension_then_the_code(file_name, code, language):
    row = dict(RAW[0], file_name=file_name, func=code)
    (sample,) = load_detection_samples(primevul_spec(), rows=[row]).samples
    assert sample.language == language


def test_cpp_words_in_comments_and_strings_do_not_make_c_code_cpp():
    code = 'int f(void)\n{\n    /* see std::vector */ // nullptr\n    puts("a::b");\n    return 0;\n}\n'
    assert not looks_like_cpp(code)


@pytest.mark.parametrize(
    ("func_hash", "kept"),
    [
        (RAW[0]["func_hash"], RAW[0]["func_hash"]),
        (str(RAW[0]["func_hash"]), str(RAW[0]["func_hash"])),
        (6.2e37, None),
    ],
)
def test_hash_is_kept_exactly_as_given_and_a_rounded_float_is_dropped(func_hash, kept):
    (sample,) = load_detection_samples(primevul_spec(), rows=[dict(RAW[0], func_hash=func_hash)]).samples
    assert sample.extra.get("func_hash") == kept and type(sample.extra.get("func_hash")) is type(kept)
