"""Vulnerability-detection samples (one C/C++ function and its label) and their loaders.

PrimeVul rows (the hub copies and the released JSONL files) carry `idx`, `project`, `commit_id`, `target`
(1 vulnerable, 0 benign), `func`, `cwe`, `cve`, `file_name`, ...; the bundled set (`detection_mini`) uses the
same row format plus a `split` column. Every quirk of those rows ends here (PrimeVul's "None" strings, its 128-bit
hashes, a language told by the file's extension); later stages see DetectionSample.

PrimeVul's paired files hold a vulnerable function next to its patched version (same project, commit and
function name). The loader gives both the same `pair_id`, so evaluation can report PrimeVul's pairwise scores.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import NamedTuple

from repairrl.data.loaders import convert_rows, read_rows
from repairrl.data.spec import DatasetError, DatasetSpec
from repairrl.tasks import DetectionSample

DETECTION_FORMATS = ("primevul", "detection-mini")
DETECTION_LANGUAGES = ("c", "cpp")
LABEL_OF_TARGET = {0: "benign", 1: "vulnerable"}
CPP_SUFFIXES = (".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".tcc", ".inl")
C_SUFFIXES = (".c",)
# PrimeVul writes a missing value as the string "None" (Python's str(None)): e.g. `"file_name": "None"` next to
# `"file_hash": null` for functions whose file its sources did not record. These fields mean None by it.
NONE_STRING_FIELDS = (
    "project_url",
    "commit_url",
    "commit_message",
    "file_name",
    "cwe",
    "cve",
    "cve_desc",
    "nvd_url",
)
# 128-bit hashes: exact as ints or strings; a float means a reader already rounded it, so it is not kept.
HASH_FIELDS = ("func_hash", "file_hash")
# Dataset fields worth keeping with a sample; the rest (hashes of whole files, NVD urls) only add weight.
EXTRA_FIELDS = ("idx", "cve", "cve_desc", "file_name", "func_hash", "commit_url", "commit_message")


class DetectionLoadResult(NamedTuple):
    samples: list[DetectionSample]
    skipped: list[dict]  # {"row": index, "instance_id": sample id, "reason": ...}, as load_tasks writes them


# The identifier right before the signature's first "(", C++ qualified names (Foo::bar, Foo::~Foo) included.
_NAME_BEFORE_PAREN = re.compile(r"([A-Za-z_~][\w:~]*)\s*\(")
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
# Words that can precede the function name's "(" in a signature without being the name.
_NOT_A_NAME = {"__attribute__", "__declspec", "alignas", "__attribute", "defined", "sizeof"}


def function_name(code: str) -> str | None:
    """The function's name from its signature (the text before the body's first "{"), or None if not found."""
    header = _COMMENT.sub(" ", code).split("{", 1)[0]
    for match in _NAME_BEFORE_PAREN.finditer(header):
        name = match.group(1)
        if name not in _NOT_A_NAME:
            return name
    return None


def _label(row: dict, where: str) -> str:
    target = row.get("target")
    # bool before int: True is an int too, and PrimeVul derivatives store the label either way.
    if isinstance(target, bool):
        return "vulnerable" if target else "benign"
    if isinstance(target, int) and target in LABEL_OF_TARGET:
        return LABEL_OF_TARGET[target]
    if isinstance(target, str) and target.strip() in ("0", "1"):
        return LABEL_OF_TARGET[int(target.strip())]
    if target is None:
        raise DatasetError(f"{where}: missing field 'target'")
    raise DatasetError(f"{where}: field 'target' must be 1 (vulnerable) or 0 (benign), got {target!r}")


def _cwe_list(row: dict, where: str) -> list[str]:
    """PrimeVul stores a list; some copies store a JSON-encoded list or one bare id: accept all three."""
    value = row.get("cwe")
    if value in (None, ""):
        return []
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                message = f"{where}: field 'cwe' is a string but not a JSON list ({error})"
                raise DatasetError(message) from error
        else:
            value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DatasetError(f"{where}: field 'cwe' must be a list of CWE ids, got {value!r}")
    return [item.strip() for item in value if item.strip()]


def _optional_str(row: dict, name: str) -> str | None:
    value = row.get(name)
    return None if value in (None, "") else str(value)


def primevul_values(row: dict) -> dict:
    """The row with PrimeVul's "None" strings as None and rounded (float) hashes dropped; other values as given."""
    values = {k: (None if k in NONE_STRING_FIELDS and v == "None" else v) for k, v in row.items()}
    if isinstance(values.get("cwe"), list):
        values["cwe"] = [item for item in values["cwe"] if item != "None"]
    for name in HASH_FIELDS:
        if isinstance(values.get(name), float):
            values[name] = None
    return values


_STRING_OR_CHAR_LITERAL = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
# Syntax C does not have: scope resolution (std::, Foo::bar), nullptr, templates, namespaces, C++ casts, access labels.
_CPP_ONLY_SYNTAX = re.compile(
    r"::|\bnullptr\b|\btemplate\s*<|\bnamespace\b|\b(?:static|reinterpret|const|dynamic)_cast\s*<"
    r"|^\s*(?:public|private|protected)\s*:",
    re.MULTILINE,
)


def looks_like_cpp(code: str) -> bool:
    """Whether the code uses syntax only C++ has (comments and string literals aside)."""
    return bool(_CPP_ONLY_SYNTAX.search(_STRING_OR_CHAR_LITERAL.sub('""', _COMMENT.sub(" ", code))))


def _language(row: dict, code: str) -> str:
    """The row's own `language`, else the file's extension; a header (.h) or a row without a file name
    (PrimeVul's "None") is C++ only when the code uses syntax C does not have."""
    if row.get("language") in DETECTION_LANGUAGES:
        return row["language"]
    file_name = row.get("file_name")
    suffix = PurePosixPath(file_name).suffix if isinstance(file_name, str) else ""
    if suffix == ".C" or suffix.lower() in CPP_SUFFIXES:  # .C (capital) is a C++ source by convention
        return "cpp"
    if suffix.lower() in C_SUFFIXES:
        return "c"
    return "cpp" if looks_like_cpp(code) else "c"


def _sample_id(row: dict, spec: DatasetSpec) -> str | None:
    if row.get("sample_id"):
        return str(row["sample_id"])
    if row.get("idx") is None:
        return None
    # Some PrimeVul derivatives drop `project`; the dataset name keeps their ids unique all the same.
    return f"{row.get('project') or spec.name}-{row['idx']}"


def primevul_sample(row: dict, spec: DatasetSpec, where: str) -> DetectionSample:
    """One PrimeVul-format row (PrimeVul itself, and the bundled set) as a sample; pair ids are set later."""
    row = primevul_values(row)
    sample_id = _sample_id(row, spec)
    if sample_id is None:
        raise DatasetError(f"{where}: missing field 'idx' (or an explicit 'sample_id')")
    code = row.get("func")
    if code is None or (isinstance(code, str) and not code.strip()):
        raise DatasetError(f"{where}: missing field 'func' (the function's code), or it is empty")
    if not isinstance(code, str):
        raise DatasetError(f"{where}: field 'func' must be the function's code, got {type(code).__name__}")
    extra = {k: row[k] for k in EXTRA_FIELDS if row.get(k) not in (None, "")}
    extra["function_name"] = function_name(code)
    return DetectionSample(
        sample_id=sample_id,
        dataset=spec.name,
        code=code,
        label=_label(row, where),
        cwe=_cwe_list(row, where),
        project=_optional_str(row, "project"),
        commit_id=_optional_str(row, "commit_id"),
        pair_id=_optional_str(row, "pair_id"),
        language=_language(row, code),
        split=spec.split,
        extra=extra,
    )


def assign_pair_ids(samples: list[DetectionSample]) -> list[DetectionSample]:
    """Give a vulnerable function and its patched version (same project, commit, function name) one pair id.

    A group is a pair only when it holds exactly one vulnerable and one benign function; anything else is
    ambiguous and stays unpaired. Samples that came with an explicit `pair_id` keep it and are not regrouped.
    """
    groups: dict[tuple[str, str, str], list[int]] = {}
    for position, sample in enumerate(samples):
        name = sample.extra.get("function_name")
        if sample.pair_id is None and sample.project and sample.commit_id and name:
            groups.setdefault((sample.project, sample.commit_id, name), []).append(position)
    paired = list(samples)
    for (project, commit_id, name), positions in groups.items():
        labels = sorted(samples[p].label for p in positions)
        if labels != ["benign", "vulnerable"]:
            continue
        pair_id = f"{project}-{commit_id[:12]}-{name}"
        for p in positions:
            paired[p] = dataclasses.replace(samples[p], pair_id=pair_id)
    return paired


def _rows_of(spec: DatasetSpec, on_error) -> Iterable[dict]:
    if spec.format == "detection-mini" and not (spec.path or spec.hub):
        from repairrl.data.detection_mini import detection_mini_rows

        return detection_mini_rows()
    return read_rows(spec, on_error)


def load_detection_samples(spec: DatasetSpec, rows: Iterable[dict] | None = None) -> DetectionLoadResult:
    """Convert rows to samples, applying the config's filters; bad rows raise or are skipped with a reason.

    Filters: `split_filter` (the row's own `split` column), `repos` (PrimeVul's `project`), `language_filter`,
    `instance_ids` (sample ids) and `limit`. Pairs are found among the samples kept, so a filter or limit that
    drops one member leaves the other unpaired (its pair could not be scored anyway). The "detection-mini"
    format reads the bundled set unless the spec names a source.
    """
    if spec.format not in DETECTION_FORMATS:
        known = ", ".join(DETECTION_FORMATS)
        raise DatasetError(f"dataset '{spec.name}': unknown detection format '{spec.format}' ({known})")
    samples, skipped = convert_rows(
        spec,
        rows,
        read=_rows_of,
        convert=primevul_sample,
        row_id=lambda row: _sample_id(row, spec),
        id_name="sample_id",
        row_is_wanted=lambda row: (spec.split_filter is None or row.get("split") == spec.split_filter)
        and (not spec.repos or row.get("project") in spec.repos),
        item_is_wanted=lambda sample: spec.language_filter is None or sample.language == spec.language_filter,
    )
    return DetectionLoadResult(samples=assign_pair_ids(samples), skipped=skipped)
