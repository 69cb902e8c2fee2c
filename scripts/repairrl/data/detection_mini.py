"""The bundled vulnerability-detection set: 24 small C functions in PrimeVul's row format, written for us.

Eight vulnerable functions come with their patched version (the minimal fix, as in PrimeVul's paired files);
eight more stand alone (four vulnerable, four benign). Each function is a file under `detection_mini/`:
`<stem>.vuln.c` and `<stem>.fixed.c` for a pair, `<stem>.vuln.c` or `<stem>.benign.c` for a lone function.
`metadata.json` there gives each stem its kind, project, commit, CWE, file name and split; `prelude.h`
declares the types and helpers the functions use, so the tests can compile every one of them. The model sees
the function alone, as with PrimeVul.

As in PrimeVul, a patched function keeps its vulnerable twin's CWE and commit (the fixing commit). Projects
and commits are made up; the commit ids are fixed so that sample and pair ids never change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DETECTION_MINI_DIR = Path(__file__).resolve().parent / "detection_mini"
DATASET = "detection-mini"
SPLITS = ("train", "eval")
SUFFIXES_OF_KIND = {"pair": (".vuln.c", ".fixed.c"), "vulnerable": (".vuln.c",), "benign": (".benign.c",)}
BENIGN_SUFFIXES = (".fixed.c", ".benign.c")


@dataclass(frozen=True)
class DetectionMiniEntry:
    stem: str
    kind: str  # pair | vulnerable | benign
    project: str
    commit_id: str
    cwe: tuple[str, ...]
    file_name: str
    split: str


@cache
def detection_mini_entries() -> tuple[DetectionMiniEntry, ...]:
    """The metadata table, in its file's order (which fixes the rows' `idx`)."""
    records = json.loads((DETECTION_MINI_DIR / "metadata.json").read_text(encoding="utf-8"))
    return tuple(DetectionMiniEntry(**{**record, "cwe": tuple(record["cwe"])}) for record in records)


def detection_mini_rows() -> list[dict]:
    """The bundled set as PrimeVul rows with a `split` column; a pair's rows adjacent, vulnerable first."""
    rows = []
    for entry in detection_mini_entries():
        for suffix in SUFFIXES_OF_KIND[entry.kind]:
            rows.append(
                {
                    "idx": len(rows) + 1,
                    "project": entry.project,
                    "commit_id": entry.commit_id,
                    "target": 0 if suffix in BENIGN_SUFFIXES else 1,
                    "func": (DETECTION_MINI_DIR / f"{entry.stem}{suffix}").read_text(encoding="utf-8"),
                    "cwe": list(entry.cwe),
                    "cve": None,
                    "file_name": entry.file_name,
                    "split": entry.split,
                }
            )
    return rows
