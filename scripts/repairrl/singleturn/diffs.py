"""Unified diffs of search/replace edits, both ways: an answer's blocks applied to the files given, written as
the git-style diff the pipeline grades and submits; and a gold diff written back as the blocks a model should
answer with (expert demonstrations). The block format itself is `repairrl.singleturn.search_replace`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from repairrl.singleturn.search_replace import (
    AmbiguousMatchError,
    EditBlock,
    EditError,
    NoMatchError,
    apply_edit_blocks,
    as_block_text,
    is_block_marker,
    parse_edit_blocks,
    split_lines,
)

NO_NEWLINE_MARKER = "\\ No newline at end of file\n"


def diff_from_answer(files: Mapping[str, str], text: str) -> str:
    """The unified diff of a model's answer applied to `files`; raises an EditError subclass if it cannot be."""
    return edit_blocks_to_diff(files, parse_edit_blocks(text))


def edit_blocks_to_diff(files: Mapping[str, str], blocks: Iterable[EditBlock]) -> str:
    """A git-style unified diff of the blocks' edits, files sorted by path; unchanged files are left out."""
    new_contents = apply_edit_blocks(files, blocks)
    return "".join(
        file_diff(path, files.get(path), new_contents[path])
        for path in sorted(new_contents)
        if files.get(path) != new_contents[path]
    )


def file_diff(path: str, old: str | None, new: str) -> str:
    """The git-style diff of one file from `old` (None: the file is created) to `new`, 3 lines of context.

    The hunks are difflib's with its default autojunk, which on a 15,000-line repetitive file takes about 10 ms
    and gives the hunks git writes; without autojunk it is quadratic in the repeated lines (seconds).
    """
    header = [f"diff --git a/{path} b/{path}\n"]
    # Like git, end a name with a space by a tab, which tells where it ends (`--- a/my file.py\t`).
    end = "\t" if " " in path else ""
    if old is None:
        header.append("new file mode 100644\n")
        if not new:
            return "".join(header)
        header += ["--- /dev/null\n", f"+++ b/{path}{end}\n"]
    else:
        header += [f"--- a/{path}{end}\n", f"+++ b/{path}{end}\n"]
    # difflib's own `---`/`+++` lines are dropped: git's carry the `a/`, `b/` and tab conventions above.
    hunks = list(difflib.unified_diff(split_lines(old or ""), split_lines(new), n=3))[2:]
    # A last line without a newline is followed by git's marker, so that the diff says so and stays line-based.
    return "".join(
        header + [line if line.endswith("\n") else f"{line}\n{NO_NEWLINE_MARKER}" for line in hunks]
    )


def diff_to_edit_blocks(files: Mapping[str, str], patch: str) -> list[EditBlock]:
    """One edit block per hunk of `patch` (a unified diff of `files`), as a model would write it.

    SEARCH is the hunk's context and removed lines, REPLACE its context and added lines, both with `\\n` line
    ends (the format's). Where a SEARCH text would not match exactly one place of the file as the previous
    blocks left it, it is extended with neighbouring lines of the file until it does. Deleted, renamed and
    binary files cannot be written as blocks and raise EditError; a change to a file's final newline is dropped,
    since the format cannot express it.
    """
    from unidiff import PatchSet
    from unidiff.errors import UnidiffParseError

    try:
        patch_set = PatchSet(patch)
    except (UnidiffParseError, ValueError, IndexError) as error:
        raise EditError(f"the patch is not a unified diff: {error}") from error
    blocks: list[EditBlock] = []
    for patched_file in patch_set:
        path = patched_file.path
        # unidiff's is_added_file/is_removed_file also guess from the hunks, and take an insertion at the top
        # of a file (`@@ -0,0 +1 @@` without context) for a new file; git's headers say it for certain.
        is_added, is_removed = (
            name == "/dev/null" for name in (patched_file.source_file, patched_file.target_file)
        )
        if is_removed or patched_file.is_rename or patched_file.is_binary_file:
            raise EditError(
                f"{path}: deleted, renamed and binary files cannot be written as edit blocks.", path
            )
        if is_added:
            if path in files:
                raise EditError(
                    f"{path}: the patch creates this file, but it is among the files given.", path
                )
            new_lines = [value for kind, value in _hunk_lines(hunk for hunk in patched_file) if kind == "+"]
            blocks.append(EditBlock(path, "", as_block_text("".join(new_lines))))
            continue
        if path not in files:
            raise EditError(
                f"{path}: the patch changes this file, but it is not among the files given.", path
            )
        if not len(patched_file):
            raise EditError(f"{path}: a change without hunks (a mode change) cannot be an edit block.", path)
        content, shift = files[path], 0
        for hunk in patched_file:
            block, content = _hunk_to_block(path, content, hunk, shift)
            blocks.append(block)
            shift += hunk.target_length - hunk.source_length
    return blocks


def _hunk_lines(hunks) -> list[tuple[str, str]]:
    """(kind, text) of each line of the hunks; a line before `\\ No newline at end of file` loses its `\\n`."""
    lines: list[tuple[str, str]] = []
    for hunk in hunks:
        for line in hunk:
            if line.line_type == "\\":
                if lines:
                    kind, text = lines[-1]
                    lines[-1] = (kind, text.removesuffix("\n"))
            else:
                lines.append((line.line_type, line.value))
    return lines


def _hunk_to_block(path: str, content: str, hunk, shift: int) -> tuple[EditBlock, str]:
    """The block for one hunk, applied to `content` as the previous hunks left it; and the content after it."""
    file_lines = split_lines(content)
    start = (hunk.source_start - 1 if hunk.source_length else hunk.source_start) + shift
    end = start + hunk.source_length
    hunk_lines = _hunk_lines([hunk])
    old_lines = [text for kind, text in hunk_lines if kind != "+"]
    found = file_lines[start:end] if 0 <= start <= end <= len(file_lines) else []
    if len(found) != len(old_lines) or any(
        a.rstrip("\r\n") != b.rstrip("\r\n") for a, b in zip(found, old_lines)
    ):
        raise EditError(
            f"{path}: the hunk at line {hunk.source_start} does not apply to the file given.", path
        )
    # Context lines are copied from the file, so they keep its line endings.
    new_lines: list[str] = []
    old_index = start
    for kind, text in hunk_lines:
        if kind == "+":
            new_lines.append(text)
        else:
            if kind == " ":
                new_lines.append(file_lines[old_index])
            old_index += 1
    expected = "".join(file_lines[:start] + new_lines + file_lines[end:])
    if any(is_block_marker(line) for line in old_lines + new_lines):
        raise EditError(
            f"{path}: the hunk at line {hunk.source_start} has a line that reads as a block marker."
        )
    low, high = start, end
    while True:
        block = EditBlock(
            path,
            as_block_text("".join(file_lines[low:high])),
            as_block_text("".join(file_lines[low:start] + new_lines + file_lines[end:high])),
        )
        try:
            result = apply_edit_blocks({path: content}, [block])[path]
        except (NoMatchError, AmbiguousMatchError):
            result = None
        if result == expected or (
            # The format cannot change whether the file ends with a newline; that alone may differ.
            result is not None
            and content.endswith("\n") != expected.endswith("\n")
            and _same_but_final_newline(result, expected)
        ):
            return block, result
        # Grow upwards and downwards in turn, never over a line that would read as a marker.
        can_grow_up = low > 0 and not is_block_marker(file_lines[low - 1])
        can_grow_down = high < len(file_lines) and not is_block_marker(file_lines[high])
        if can_grow_up and (not can_grow_down or (start - low) <= (high - end)):
            low -= 1
        elif can_grow_down:
            high += 1
        else:
            raise EditError(
                f"{path}: no SEARCH text around the hunk at line {hunk.source_start} matches only there.",
                path,
            )


def _same_but_final_newline(result: str, expected: str) -> bool:
    """Whether the texts are equal, but for a final newline that one has and the other not."""
    return (
        result == expected
        or result == _drop_final_newline(expected)
        or _drop_final_newline(result) == expected
    )


def _drop_final_newline(text: str) -> str:
    return re.sub(r"\r?\n\Z", "", text)
