"""The one task schema that every dataset loader produces and every later stage consumes.

Field names follow our own conventions; the SWE-bench row names (FAIL_TO_PASS, patch, ...) are mapped by the
loaders in `repairrl.data`, which is where each dataset's quirks end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repairrl.records import read_jsonl, validate_record, write_jsonl

LANGUAGES = ("python", "java")
# How a task's tests are run and their output parsed:
#   pytest      - `pytest -rA <test ids>` in the working copy (mini benchmark, simple Python repos)
#   junit4      - javac + JUnit 4 with repairrl's per-test listener (mini benchmark Java tasks)
#   swebench    - the row's eval script in the instance image, logs parsed by swebench's own parsers
#   gitbug-java - the GitBug-Java tool (`gitbug-java run`)
TEST_FRAMEWORKS = ("pytest", "junit4", "swebench", "gitbug-java")


@dataclass(frozen=True)
class Task:
    instance_id: str
    dataset: str
    repo: str
    repo_url: str
    base_commit: str
    problem_statement: str
    gold_patch: str
    test_patch: str
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    language: str = "python"
    test_framework: str = "pytest"
    split: str = "test"
    version: str | None = None
    created_at: str | None = None
    hints_text: str | None = None
    environment_setup_commit: str | None = None
    # Container image the tests run in (SWE-bench instance images); None where the host tools suffice.
    image: str | None = None
    # A shell script that applies nothing and runs the tests, printing swebench's log markers; built by the
    # loader for datasets that do not ship one.
    eval_script: str | None = None
    # Name of the swebench log parser for this task's test output (swebench.harness.log_parsers).
    log_parser: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict, where: str = "task") -> Task:
        validate_record(record, "task", where)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})

    def gold_patch_files(self) -> list[str]:
        """Paths the gold patch changes (created and deleted files included); [] if it is not a unified diff."""
        from unidiff import PatchSet
        from unidiff.errors import UnidiffParseError

        try:
            return [patched.path for patched in PatchSet(self.gold_patch)]
        except (UnidiffParseError, ValueError, IndexError):
            return []

    @property
    def repo_key(self) -> str:
        """Cache key of the repository: one bare cache per repository, whatever the dataset."""
        return self.repo.replace("/", "__")


def write_tasks(path: str | Path, tasks: list[Task]) -> int:
    return write_jsonl(path, (t.to_record() for t in tasks))


def read_tasks(path: str | Path) -> list[Task]:
    return [Task.from_record(r, where=f"{path}:{i}") for i, r in enumerate(read_jsonl(path), start=1)]
