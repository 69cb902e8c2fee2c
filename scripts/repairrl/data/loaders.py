"""Dataset loaders: SWE-Gym, SWE-bench Verified, GitBug-Java and the mini benchmark, from the hub or local files.

Every loader turns its rows into `repairrl.tasks.Task`; each dataset's quirks (JSON-encoded list columns, field
names, how fail-to-pass tests are stored) end here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repairrl.data.gitbug_java import gitbug_java_task
from repairrl.data.local_files import LocalFileError, read_local_rows
from repairrl.data.spec import DatasetError, DatasetSpec
from repairrl.data.swebench_specs import UngradableTaskError, grading_recipe
from repairrl.tasks import Task


@dataclass(frozen=True)
class LoadResult:
    tasks: list[Task]
    skipped: list[dict]  # {"row": index, "instance_id": ..., "reason": ...}


def read_rows(spec: DatasetSpec, on_error: Callable[[LocalFileError], None] | None = None) -> Iterator[dict]:
    """Rows of the dataset, from the hub (`datasets.load_dataset`) or a local JSONL/JSON/Parquet file read as it
    is (repairrl.data.local_files: no type coercion). A bad line of a local file raises, or with `on_error` is
    handed to it and skipped."""
    if spec.path:
        path = Path(spec.path)
        if not path.exists():
            raise DatasetError(f"dataset '{spec.name}': local file {path} does not exist")
        try:
            yield from read_local_rows(path, on_error=on_error)
        except LocalFileError as error:
            raise DatasetError(f"dataset '{spec.name}': {error}") from error
        return
    import datasets

    if spec.hub:
        try:
            dataset = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.hub_split, revision=spec.revision)
        except Exception as error:  # the hub raises many types; all mean the same to the user
            raise DatasetError(
                f"dataset '{spec.name}': could not load '{spec.hub}' split '{spec.hub_split}' from the hub "
                f"({type(error).__name__}: {error}). Offline? Point `source.path` at a local copy instead."
            ) from error
    else:
        raise DatasetError(f"dataset '{spec.name}': config needs `source.hub` or `source.path`")
    yield from dataset


def _field(row: dict, name: str, where: str) -> Any:
    if name not in row or row[name] is None:
        raise DatasetError(f"{where}: missing field '{name}'")
    return row[name]


def _string_list(row: dict, name: str, where: str) -> list[str]:
    """SWE-bench ships test lists as JSON-encoded strings, SWE-Gym as real lists: accept both."""
    value = _field(row, name, where)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: field '{name}' is a string but not JSON ({error})") from error
    if not isinstance(value, list):
        raise DatasetError(f"{where}: field '{name}' must be a list of test ids, got {type(value).__name__}")
    bad = next(((i, item) for i, item in enumerate(value) if not isinstance(item, str)), None)
    if bad is not None:
        raise DatasetError(f"{where}: field '{name}' must be a list of test ids (strings), but item {bad[0]} is "
                           f"{type(bad[1]).__name__} {bad[1]!r}")
    return value


def _optional_str(row: dict, name: str) -> str | None:
    value = row.get(name)
    return None if value in (None, "") else str(value)


def swe_bench_task(row: dict, spec: DatasetSpec, where: str) -> Task:
    """SWE-bench (Verified, Lite, full), SWE-Gym and the mini benchmark share this row format.

    A swebench-framework task gets its eval script, log parser name, image and eval type here: the row's own
    where it carries them (swebench 5.x rows), else built from the specs (repairrl.data.swebench_specs)."""
    repo = _field(row, "repo", where)
    language = row.get("language") or "python"
    framework = row.get("test_framework") or ("pytest" if spec.format == "mini" else "swebench")
    extra = {k: row[k] for k in ("difficulty", "log_parser", "eval_type") if row.get(k) is not None}
    recipe = None
    if framework == "swebench":
        # How the task is graded is settled here, once: a row that cannot be graded raises now (UngradableTaskError,
        # a ValueError: an error naming the row, or a skip under on_bad_row: skip) instead of scoring 0 later.
        try:
            recipe = grading_recipe(
                {**row, "repo": repo, "base_commit": _field(row, "base_commit", where),
                 "test_patch": _field(row, "test_patch", where), "instance_id": _field(row, "instance_id", where)},
                source="swe-gym" if spec.format == "swe-gym" else "swe-bench",
            )  # fmt: skip
        except UngradableTaskError as error:
            raise DatasetError(f"{where}: {error}") from error
        extra["eval_type"] = recipe.eval_type
    return Task(
        instance_id=_field(row, "instance_id", where),
        dataset=spec.name,
        repo=repo,
        repo_url=spec.repo_url_template.format(repo=repo, repo_key=repo.replace("/", "__")),
        base_commit=_field(row, "base_commit", where),
        problem_statement=_field(row, "problem_statement", where),
        gold_patch=_field(row, "patch", where),
        test_patch=_field(row, "test_patch", where),
        fail_to_pass=_string_list(row, "FAIL_TO_PASS", where),
        pass_to_pass=_string_list(row, "PASS_TO_PASS", where),
        language=language,
        test_framework=framework,
        split=spec.split,
        version=_optional_str(row, "version"),
        created_at=_optional_str(row, "created_at"),
        hints_text=_optional_str(row, "hints_text"),
        environment_setup_commit=_optional_str(row, "environment_setup_commit"),
        image=recipe.image if recipe else _optional_str(row, "image"),
        eval_script=recipe.eval_script if recipe else _optional_str(row, "eval_script"),
        log_parser=recipe.log_parser if recipe else _optional_str(row, "log_parser"),
        extra=extra,
    )


ROW_CONVERTERS: dict[str, Callable[[dict, DatasetSpec, str], Task]] = {
    "swe-bench": swe_bench_task,
    "swe-gym": swe_bench_task,
    "mini": swe_bench_task,
    "gitbug-java": gitbug_java_task,
}


def _row_is_wanted(row: dict, spec: DatasetSpec) -> bool:
    """The config's filters on a repair row's own columns: split, language, repository."""
    if spec.split_filter is not None and row.get("split") != spec.split_filter:
        return False
    if spec.language_filter is not None and (row.get("language") or "python") != spec.language_filter:
        return False
    return not spec.repos or (row.get("repo") or row.get("repository")) in spec.repos


class BadRows:
    """A dataset's `on_bad_row` policy: a bad or repeated row is an error that names it (`error`), or a skipped row
    recorded with its reason (`skip`). One per load; `skipped` is what the fetch rule writes to skipped.jsonl."""

    HINT = "Fix the row, or set on_bad_row: skip for this dataset."

    def __init__(self, spec: Any):
        if spec.on_bad_row not in ("error", "skip"):
            raise DatasetError(f"dataset '{spec.name}': on_bad_row must be 'error' or 'skip'")
        self.skipping = spec.on_bad_row == "skip"
        self.skipped: list[dict] = []
        self.seen: set[str] = set()

    def line_handler(self) -> Callable[[LocalFileError], None] | None:
        """For the file reader: unreadable lines are skipped rows, or (None) the reader's own error."""
        if not self.skipping:
            return None
        return lambda error: self.skipped.append({"row": error.line, "instance_id": "?", "reason": str(error)})

    def reject(self, index: int, row_id: str, error: Exception) -> None:
        if not self.skipping:
            raise DatasetError(f"{error}. {self.HINT}") from error
        self.skipped.append({"row": index, "instance_id": row_id, "reason": str(error)})

    def is_repeat(self, index: int, where: str, row_id: str, id_name: str) -> bool:
        """True (and recorded as skipped) for an id an earlier row had; an error under on_bad_row: error."""
        if row_id not in self.seen:
            self.seen.add(row_id)
            return False
        if not self.skipping:
            raise DatasetError(f"{where}: duplicate {id_name} {row_id!r} (an earlier row has it). "
                               "Fix the file, or set on_bad_row: skip for this dataset.")
        self.skipped.append({"row": index, "instance_id": row_id, "reason": f"duplicate {id_name}"})
        return True


def convert_rows(
    spec: Any,
    rows: Iterable[dict] | None,
    read: Callable[[Any, Callable[[LocalFileError], None] | None], Iterable[dict]],
    convert: Callable[[dict, Any, str], Any],
    row_id: Callable[[dict], str | None],
    id_name: str,
    row_is_wanted: Callable[[dict], bool],
    item_is_wanted: Callable[[Any], bool],
) -> tuple[list, list[dict]]:
    """(items, skipped): the rows (`rows`, else those `read` reads) converted to tasks or detection samples and
    checked against their schema, as the config filters them: `row_is_wanted` on the row, `item_is_wanted` on what
    it converts to, then `instance_ids` and `limit`. A row that does not convert, or repeats an earlier row's id
    (`id_name`), is an error or a skipped row, as the dataset's `on_bad_row` says (BadRows)."""
    bad_rows = BadRows(spec)
    if rows is None:
        rows = read(spec, bad_rows.line_handler())
    wanted_ids = set(spec.instance_ids)
    items: list = []
    for index, row in enumerate(rows):
        if not row_is_wanted(row):
            continue
        row_name = row_id(row) or "?"
        where = f"dataset '{spec.name}' row {index} ({row_name})"
        try:
            item = convert(row, spec, where)
            # The schema catches what the conversion lets through, e.g. a malformed commit hash.
            type(item).from_record(item.to_record(), where=where)
        except (DatasetError, ValueError, KeyError, TypeError) as error:
            bad_rows.reject(index, row_name, error)
            continue
        if not item_is_wanted(item) or (wanted_ids and item.instance_id not in wanted_ids):
            continue
        if bad_rows.is_repeat(index, where, item.instance_id, id_name):
            continue
        items.append(item)
        if spec.limit is not None and len(items) >= spec.limit:
            break
    return items, bad_rows.skipped


def load_tasks(spec: DatasetSpec, rows: Iterable[dict] | None = None) -> LoadResult:
    """Convert rows to tasks, applying the config's filters; bad rows raise or are skipped with a reason."""
    if spec.format not in ROW_CONVERTERS:
        raise DatasetError(f"dataset '{spec.name}': unknown format '{spec.format}' (one of {sorted(ROW_CONVERTERS)})")
    tasks, skipped = convert_rows(
        spec,
        rows,
        read=read_rows,
        convert=ROW_CONVERTERS[spec.format],
        row_id=lambda row: row.get("instance_id") or row.get("repository"),
        id_name="instance_id",
        row_is_wanted=lambda row: _row_is_wanted(row, spec),
        item_is_wanted=lambda task: not spec.single_file_patch or task.changes_one_existing_file(),
    )
    return LoadResult(tasks=tasks, skipped=skipped)
