"""File-level repair: the issue and the files to change in one prompt; the answer is search/replace edits.

The files shown are the ones the gold patch modifies (the "oracle" file setting of SWE-bench's retrieval
variants), read from the repository cache at the base commit. The answer's edits become a unified diff
(`repairrl.singleturn.diffs`), which is graded exactly like an agent's final diff: diff similarity to the
gold patch and the task's tests.
"""

from __future__ import annotations

from collections.abc import Callable

from repairrl.singleturn.diffs import diff_from_answer, diff_to_edit_blocks
from repairrl.singleturn.search_replace import (
    EDIT_FORMAT_INSTRUCTIONS,
    EditError,
    fence_language,
    render_edit_blocks,
)
from repairrl.tasks import Task

SYSTEM_PROMPT = f"""\
You are a software engineer fixing an issue in a repository. You are given the issue and the full text of the \
files to change. Answer with search/replace edits that fix the issue; nothing else is applied.

{EDIT_FORMAT_INSTRUCTIONS}"""

# A prompt holding a whole file of this many characters would not fit a training context anyway; such a task is
# recorded as failed instead of silently truncating the file the model must edit.
DEFAULT_MAX_FILE_CHARS = 100_000


class FileRepairError(ValueError):
    """The task cannot be posed as a file-level repair (its gold patch changes no existing file, a file is too big)."""


def files_to_repair(task: Task) -> list[str]:
    """Paths of the existing files the gold patch changes, in patch order (created files have nothing to show)."""
    paths = task.gold_patch_existing_files()
    if not paths:
        raise FileRepairError(
            f"{task.instance_id}: the gold patch changes no existing file (or is not a unified diff)"
        )
    return paths


def load_files(
    task: Task, read_file: Callable[[str], str], max_file_chars: int = DEFAULT_MAX_FILE_CHARS
) -> dict:
    files = {}
    for path in files_to_repair(task):
        text = read_file(path)
        if len(text) > max_file_chars:
            raise FileRepairError(
                f"{task.instance_id}: {path} has {len(text)} characters, over the prompt's limit of "
                f"{max_file_chars}; raise max_file_chars or leave the task out"
            )
        files[path] = text
    return files


def _fenced(path: str, text: str) -> str:
    body = text if text.endswith("\n") else text + "\n"
    return f"### {path}\n```{fence_language(path)}\n{body}```"


def file_repair_messages(task: Task, files: dict[str, str]) -> list[dict]:
    shown = "\n\n".join(_fenced(path, text) for path, text in files.items())
    user = f"Issue:\n{task.problem_statement.strip()}\n\nFiles:\n\n{shown}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def answer_diff(files: dict[str, str], answer: str) -> tuple[str, str | None]:
    """(diff, error): the answer's edits as a unified diff, or "" and why the edits could not be applied."""
    try:
        return diff_from_answer(files, answer), None
    except EditError as error:
        return "", f"{type(error).__name__}: {error}"


def expert_answer(task: Task, files: dict[str, str]) -> str:
    """The gold patch written as the answer a model should give: one search/replace block per hunk."""
    return render_edit_blocks(diff_to_edit_blocks(files, task.gold_patch))
