"""The task schemas that every dataset loader produces and every later stage consumes, and the task kinds.

A repair task (`Task`) is one schema for every repair dataset; a detection task (`DetectionSample`) is one C/C++
function and its label. Field names follow our own conventions; the SWE-bench and PrimeVul row names
(FAIL_TO_PASS, patch, target, func, ...) are mapped by the loaders in `repairrl.data`, which is where each
dataset's quirks end.

A task kind (verifiers style: data + a prompt + a parser; its rewards live in `repairrl.grading.rewards`):

    repo_repair   the agent in a sandbox (repairrl.agent.loop), many turns
    file_repair   the issue and the files to change -> search/replace edits -> a unified diff (repairrl.singleturn)
    detection     one function -> <answer>vulnerable|benign</answer> (repairrl.singleturn)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from repairrl.records import read_jsonl, validate_record, write_jsonl

LANGUAGES = ("python", "java")
# How a task's tests are run and their output parsed:
#   pytest      - `pytest -rA <test ids>` in the working copy (mini benchmark, simple Python repos)
#   junit4      - javac + JUnit 4 with repairrl's per-test listener (mini benchmark Java tasks)
#   swebench    - the row's eval script in the instance image, logs parsed by swebench's own parsers
#   gitbug-java - the GitBug-Java tool (`gitbug-java run`)
TEST_FRAMEWORKS = ("pytest", "junit4", "swebench", "gitbug-java")

TASK_KINDS = ("repo_repair", "file_repair", "detection")
SINGLE_TURN_KINDS = ("file_repair", "detection")
# The dataset formats each task kind reads (config `datasets.<name>.format`).
DATA_FORMATS = {
    "repo_repair": ("swe-bench", "swe-gym", "gitbug-java", "mini"),
    "file_repair": ("swe-bench", "swe-gym", "gitbug-java", "mini"),
    "detection": ("primevul", "detection-mini"),
}


class UnknownTaskKindError(ValueError):
    """A task kind that is not one of TASK_KINDS."""


def check_task_kind(kind: str) -> str:
    if kind not in TASK_KINDS:
        raise UnknownTaskKindError(f"task {kind!r}: choose one of {', '.join(TASK_KINDS)}")
    return kind


class TableRow:
    """A row of a task table: a dataclass written as a JSON record, and read back checked against its schema
    (workflow/schemas/<schema>.schema.yaml); fields the dataclass does not know are left out."""

    schema: ClassVar[str]

    def __init_subclass__(cls, schema: str, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.schema = schema

    def to_record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict, where: str | None = None):
        validate_record(record, cls.schema, where or cls.schema.replace("_", " "))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


@dataclass(frozen=True)
class Task(TableRow, schema="task"):
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

    def _gold_patch_set(self) -> list:
        """The gold patch's files (unidiff's PatchedFile); [] if it is not a unified diff."""
        from unidiff import PatchSet
        from unidiff.errors import UnidiffParseError

        try:
            return list(PatchSet(self.gold_patch))
        except (UnidiffParseError, ValueError, IndexError):
            return []

    def gold_patch_files(self) -> list[str]:
        """Paths the gold patch changes (created and deleted files included); [] if it is not a unified diff."""
        return [patched.path for patched in self._gold_patch_set()]

    def gold_patch_existing_files(self) -> list[str]:
        """Paths of the text files at the base commit that the gold patch changes, in patch order: the files a
        file-level repair shows and has rewritten (a created file has nothing to show, a binary one no text)."""
        return [p.path for p in self._gold_patch_set() if not p.is_added_file and not p.is_binary_file]

    def changes_one_existing_file(self) -> bool:
        """Whether the gold patch changes exactly one file, a text file at the base commit: a task that can be
        posed as a file-level repair (the `single_file_patch` dataset filter keeps only these)."""
        return len(self.gold_patch_files()) == 1 and len(self.gold_patch_existing_files()) == 1

    @property
    def repo_key(self) -> str:
        """Cache key of the repository: one bare cache per repository, whatever the dataset."""
        return self.repo.replace("/", "__")


def write_tasks(path: str | Path, tasks: list[Task]) -> int:
    return write_jsonl(path, (t.to_record() for t in tasks))


def read_tasks(path: str | Path) -> list[Task]:
    return [Task.from_record(r, where=f"{path}:{i}") for i, r in enumerate(read_jsonl(path), start=1)]


@dataclass(frozen=True)
class DetectionSample(TableRow, schema="detection_sample"):
    sample_id: str
    dataset: str
    label: str  # vulnerable | benign
    cwe: list[str]
    code: str
    project: str | None
    commit_id: str | None
    pair_id: str | None
    language: str = "c"
    split: str = "test"
    extra: dict[str, Any] = field(default_factory=dict)

    # Trajectory, episode and prediction records are keyed by `instance_id` and name a `repo`, whatever the
    # task; these let a sample stand where a repair task does, without writing the fields twice on disk.
    @property
    def instance_id(self) -> str:
        return self.sample_id

    @property
    def repo(self) -> str:
        return self.project or self.dataset


def write_samples(path: str | Path, samples: Iterable[DetectionSample]) -> int:
    return write_jsonl(path, (s.to_record() for s in samples))


def read_samples(path: str | Path) -> list[DetectionSample]:
    records = read_jsonl(path)
    return [DetectionSample.from_record(r, where=f"{path}:{i}") for i, r in enumerate(records, start=1)]


def read_task_table(path: str | Path, kind: str) -> list[Task] | list[DetectionSample]:
    """The task table of a task kind: repair tasks or detection samples."""
    return read_samples(path) if check_task_kind(kind) == "detection" else read_tasks(path)
