"""Search/replace edit blocks: the format a model uses to repair files in one answer (file-level repair).

As in Agentless and SWE-RL, the model sees the relevant files and answers with edit blocks:

    ```python
    ### path/to/file.py
    <<<<<<< SEARCH
    exact lines currently in the file
    =======
    the lines that replace them
    >>>>>>> REPLACE
    ```

Parsing is lenient where models are sloppy and strict where a guess could produce a wrong edit:

- The path is the line `### <path>` (Agentless) or a bare path (aider) on the nearest line before
  `<<<<<<< SEARCH` that is neither blank nor a code fence. A block right after another block, with nothing but
  blank lines and fences between them, edits the same file as the previous one (aider's convention).
- Code fences and any text outside blocks (reasoning) are ignored; inside a block every line is taken as is,
  except that a line of 5 to 9 `=` is the separator (so a file's own such lines cannot be edited this way).
- Markers may have 5 to 9 `<`, `=`, `>` characters (models miscount), but must carry the words SEARCH/REPLACE.
- Blocks apply in order, each to the result of the previous ones, so several blocks may edit one file.
- An empty SEARCH creates the file with the REPLACE text when the path is not among the files given, and
  replaces an existing file that is empty or blank; on any other file it is an error, since it does not say
  where the text goes.

Matching a SEARCH text: first exactly, on whole lines (it must start at the beginning of a line); failing that,
line by line with trailing whitespace ignored and the indentation allowed to differ by the same amount on every
non-blank line, in which case the REPLACE lines are re-indented by that amount. Blank lines at the start or end
of the SEARCH text may be missing from the file. Either way the match must be unique. A file keeps its line
endings and its missing newline at the end, which the format cannot express.

This module reads the format (`parse_edit_blocks`), applies it (`apply_edit_blocks`) and writes it
(`render_edit_blocks`, for expert demonstrations); `repairrl.singleturn.diffs` turns applied blocks into the
unified diff the pipeline grades and submits, and a gold diff back into blocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

EDIT_FORMAT_INSTRUCTIONS = """\
Answer with one or more search/replace edit blocks. Each block names the file with a `### path` line, gives \
the exact lines currently in the file (indentation included) between `<<<<<<< SEARCH` and `=======`, and the \
lines that replace them between `=======` and `>>>>>>> REPLACE`. The SEARCH lines must match exactly one place \
in the file: include a few neighbouring lines if needed. Use several blocks for several places; they are \
applied in order. To create a new file, leave SEARCH empty. For example:

```python
### src/calculator.py
<<<<<<< SEARCH
def divide(a, b):
    return a / b
=======
def divide(a, b):
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return a / b
>>>>>>> REPLACE
```
"""

_SEARCH_MARKER = re.compile(r"\s*<{5,9}\s*SEARCH\s*")
_SEPARATOR = re.compile(r"\s*={5,9}\s*")
_REPLACE_MARKER = re.compile(r"\s*>{5,9}\s*REPLACE\s*")
_FENCE = re.compile(r"\s*(```|~~~).*")
_HEADER_PATH = re.compile(r"\s*#{2,4}\s+(.+?)\s*")
# A bare path has no spaces, a dot or a slash, and a letter or digit, so stray prose is not taken for one.
_BARE_PATH = re.compile(r"(?=.*[./])(?=.*\w)[\w.\-+@~/]+")
# The info string of a code fence around a file's text or blocks, by the file's suffix (none for the others).
FENCE_LANGUAGES = {
    ".py": "python",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".js": "javascript",
    ".ts": "typescript",
}


@dataclass(frozen=True)
class EditBlock:
    """Replace `search` (whole lines of the file at `path`) with `replace`; an empty `search` creates the file."""

    path: str
    search: str
    replace: str


class EditError(ValueError):
    """An answer's edits cannot be turned into a diff; the message says what to fix."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class EditFormatError(EditError):
    """A malformed answer: no blocks, a block without a path, or a block with a missing or extra marker."""


class NoMatchError(EditError):
    """A SEARCH text is not in the file (neither exactly nor ignoring whitespace), or the file is not given."""


class AmbiguousMatchError(EditError):
    """A SEARCH text matches more than one place (or is empty, on an existing file that is not blank)."""


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def parse_edit_blocks(text: str) -> list[EditBlock]:
    """The edit blocks of a model's answer, in order; raises EditFormatError if a block is malformed or none."""
    blocks: list[EditBlock] = []
    # Lines seen since the end of the previous block (or the start): where this block's path is looked for.
    outside: list[str] = []
    state = "outside"
    path: str | None = None
    search_lines: list[str] = []
    replace_lines: list[str] = []
    start_line = 0

    def fail(problem: str) -> EditFormatError:
        first = _first_line("\n".join(search_lines))
        where = f"the edit block at line {start_line} of the answer"
        if path:
            where += f" for {path}"
        if first:
            where += f" (SEARCH starting with {first!r})"
        return EditFormatError(f"{where}: {problem}", path=path)

    for number, line in enumerate(_unix_newlines(text).split("\n"), start=1):
        if state == "outside":
            if _SEARCH_MARKER.fullmatch(line):
                start_line = number
                path = _block_path(outside, blocks[-1].path if blocks else None)
                search_lines, replace_lines = [], []
                state = "search"
            elif _REPLACE_MARKER.fullmatch(line):
                start_line, path, search_lines = number, None, []
                raise fail("`>>>>>>> REPLACE` without a `<<<<<<< SEARCH` before it.")
            else:
                outside.append(line)
        elif state == "search":
            if _SEPARATOR.fullmatch(line):
                state = "replace"
            elif _SEARCH_MARKER.fullmatch(line):
                raise fail(
                    f"a second `<<<<<<< SEARCH` at line {number} before `=======`; close each block first."
                )
            elif _REPLACE_MARKER.fullmatch(line):
                raise fail("no `=======` between the SEARCH and the REPLACE lines.")
            else:
                search_lines.append(line)
        else:
            if _REPLACE_MARKER.fullmatch(line):
                if path is None:
                    raise fail("no file path; put a line `### path/to/file` right before `<<<<<<< SEARCH`.")
                blocks.append(EditBlock(path, _joined_lines(search_lines), _joined_lines(replace_lines)))
                outside, state = [], "outside"
            elif _SEARCH_MARKER.fullmatch(line):
                raise fail(
                    f"a new `<<<<<<< SEARCH` at line {number} before `>>>>>>> REPLACE` ends this block."
                )
            elif _SEPARATOR.fullmatch(line):
                raise fail(
                    f"a second `=======` at line {number}; a block has one, between SEARCH and REPLACE."
                )
            else:
                replace_lines.append(line)
    if state == "search":
        raise fail("no `=======` after the SEARCH lines (the block is not finished).")
    if state == "replace":
        raise fail("no `>>>>>>> REPLACE` at the end of the block (the block is not finished).")
    if not blocks:
        raise EditFormatError(
            "the answer has no edit blocks; write each change as `### path`, `<<<<<<< SEARCH`, the current "
            "lines, `=======`, the new lines, `>>>>>>> REPLACE`."
        )
    return blocks


def _block_path(outside: list[str], previous_path: str | None) -> str | None:
    """The path named on the nearest line before a SEARCH marker that is neither blank nor a fence."""
    for line in reversed(outside):
        if not line.strip() or _FENCE.fullmatch(line):
            continue
        header = _HEADER_PATH.fullmatch(line)
        candidate = _clean_path(header.group(1) if header else line)
        if header or _BARE_PATH.fullmatch(candidate):
            return candidate or None
        return None
    return previous_path


def _clean_path(text: str) -> str:
    path = text.strip().strip("`*").rstrip(":").strip("`*").strip()
    while path.startswith("./"):
        path = path[2:]
    return path


def _joined_lines(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# Applying


def apply_edit_blocks(files: Mapping[str, str], blocks: Iterable[EditBlock]) -> dict[str, str]:
    """The new contents of every file the blocks touch (created files included), applying blocks in order."""
    contents: dict[str, str] = {}
    for block in blocks:
        current = contents.get(block.path, files.get(block.path))
        if current is None and not _is_repository_path(block.path):
            raise NoMatchError(
                f"{block.path}: a file's path must be relative to the repository root, without `..` in it.",
                path=block.path,
            )
        if current is None and block.search.strip():
            known = sorted(files)
            listing = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
            raise NoMatchError(
                f"{block.path}: not among the files given ({listing or 'none'}), so the SEARCH text starting "
                f"with {_first_line(block.search)!r} cannot be found; use one of the given paths, or an empty "
                "SEARCH to create a new file.",
                path=block.path,
            )
        contents[block.path] = _apply_block(block, current)
    return contents


def _is_repository_path(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts and "\\" not in path


def _apply_block(block: EditBlock, content: str | None) -> str:
    """`content` with `block` applied; `content` None means the file does not exist."""
    if not block.search.strip():
        # A file that is empty (or only blank lines, which a SEARCH cannot address) has one place to put text.
        if content is None:
            return block.replace
        if not content.strip():
            if "\r\n" in content and "\r\n" not in block.replace:
                return _with_final_newline_of(content, block.replace.replace("\n", "\r\n"))
            return _with_final_newline_of(content, block.replace)
        raise AmbiguousMatchError(
            f"{block.path}: the SEARCH text is empty but the file exists, so it does not say what to replace; "
            "copy the lines to change into SEARCH (an empty SEARCH only creates new files).",
            path=block.path,
        )
    assert content is not None
    new_content = _replace_exactly(block, content)
    if new_content is None:
        new_content = _replace_ignoring_whitespace(block, content)
    return _with_final_newline_of(content, new_content)


def _replace_exactly(block: EditBlock, content: str) -> str | None:
    """`content` with the only whole-line occurrence of the SEARCH text replaced; None if there is none."""
    search = block.search
    starts = []
    index = content.find(search)
    while index != -1:
        end = index + len(search)
        at_line_start = index == 0 or content[index - 1] == "\n"
        at_line_end = search.endswith("\n") or end == len(content) or content[end] == "\n"
        if at_line_start and at_line_end:
            starts.append(index)
        index = content.find(search, index + 1)
    if len(starts) > 1:
        raise _ambiguous(block, len(starts), "")
    if not starts:
        return None
    return content[: starts[0]] + block.replace + content[starts[0] + len(search) :]


def _replace_ignoring_whitespace(block: EditBlock, content: str) -> str:
    """`content` with the only whitespace-tolerant match of the SEARCH lines replaced, re-indented to fit."""
    file_lines = split_lines(content)
    search_lines = [line.rstrip() for line in _lines_without_ends(block.search)]
    replace_lines = [line.rstrip("\r") for line in _lines_without_ends(block.replace)]
    # The SEARCH text as written first; then without its leading/trailing blank lines, and the same number of
    # leading/trailing blank lines dropped from REPLACE, so a blank line the file lacks is not added back.
    leading = _count_blank(search_lines)
    trailing = _count_blank(reversed(search_lines))
    variants = [(search_lines, replace_lines)]
    if leading or trailing:
        cut_front = min(leading, _count_blank(replace_lines))
        cut_back = min(trailing, _count_blank(reversed(replace_lines[cut_front:])))
        variants.append(
            (
                search_lines[leading : len(search_lines) - trailing],
                replace_lines[cut_front : len(replace_lines) - cut_back],
            )
        )
    for search, replace in variants:
        first_body = search[0].strip()
        matches = [
            (start, offset)
            for start in range(len(file_lines) - len(search) + 1)
            # The first line's text, compared before the whole window, keeps this linear in practice.
            if file_lines[start].strip() == first_body
            and (offset := _indentation_offset(file_lines[start : start + len(search)], search)) is not None
        ]
        if len(matches) > 1:
            raise _ambiguous(block, len(matches), " (ignoring whitespace)")
        if matches:
            start, (added, removed) = matches[0]
            matched = file_lines[start : start + len(search)]
            newline = "\r\n" if matched[0].endswith("\r\n") else "\n"
            new_lines = [_reindent(line, added, removed) + newline for line in replace]
            return "".join(file_lines[:start] + new_lines + file_lines[start + len(search) :])
    raise NoMatchError(
        f"{block.path}: the SEARCH text starting with {_first_line(block.search)!r} is not in the file "
        "(neither exactly nor ignoring whitespace); copy the lines to replace exactly from the current file, "
        "indentation included, remembering that earlier blocks have already changed it.",
        path=block.path,
    )


def _indentation_offset(file_lines: list[str], search_lines: list[str]) -> tuple[str, str] | None:
    """(added, removed): the indentation the file has more or less than the SEARCH lines; None if no match.

    Lines are compared without trailing whitespace; a blank line matches only a blank line, and every
    non-blank line must differ by the same indentation.
    """
    offset: tuple[str, str] | None = None
    for file_line, search_line in zip(file_lines, search_lines):
        file_line = file_line.rstrip()
        file_body, search_body = file_line.lstrip(), search_line.lstrip()
        if file_body != search_body:
            return None
        if not search_body:
            continue
        file_indent = file_line[: len(file_line) - len(file_body)]
        search_indent = search_line[: len(search_line) - len(search_body)]
        if offset is None:
            if file_indent.endswith(search_indent):
                offset = (file_indent[: len(file_indent) - len(search_indent)], "")
            elif search_indent.endswith(file_indent):
                offset = ("", search_indent[: len(search_indent) - len(file_indent)])
            else:
                return None
        added, removed = offset
        if not search_indent.startswith(removed) or added + search_indent[len(removed) :] != file_indent:
            return None
    return offset if offset is not None else ("", "")


def _reindent(line: str, added: str, removed: str) -> str:
    if not line.strip():
        return line
    if removed:
        # A REPLACE line indented less than the offset loses all its indentation rather than a wrong part.
        return line[len(removed) :] if line.startswith(removed) else line.lstrip()
    return added + line


def _with_final_newline_of(old: str, new: str) -> str:
    """`new`, without a final newline if `old` had none: the format always writes whole lines."""
    if old and not old.endswith("\n") and new.endswith("\n"):
        return new[:-2] if new.endswith("\r\n") else new[:-1]
    return new


def _ambiguous(block: EditBlock, count: int, how: str) -> AmbiguousMatchError:
    return AmbiguousMatchError(
        f"{block.path}: the SEARCH text starting with {_first_line(block.search)!r} matches {count} places"
        f"{how}; add neighbouring lines to SEARCH so that it matches exactly one.",
        path=block.path,
    )


def _first_line(text: str) -> str:
    for line in text.split("\n"):
        if line.strip():
            line = line.strip()
            return line if len(line) <= 80 else line[:77] + "..."
    return ""


def _count_blank(lines: Iterable[str]) -> int:
    count = 0
    for line in lines:
        if line.strip():
            break
        count += 1
    return count


def split_lines(text: str) -> list[str]:
    """Lines with their endings; only `\\n` ends a line, as for git (str.splitlines also splits on \\f, ...)."""
    parts = text.split("\n")
    lines = [f"{part}\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _lines_without_ends(text: str) -> list[str]:
    return [line.rstrip("\n") for line in split_lines(text)]


# ---------------------------------------------------------------------------------------------------------------
# Writing blocks (expert demonstrations)


def render_edit_blocks(blocks: Iterable[EditBlock]) -> str:
    """The blocks in the documented format (fenced, `### path`), ready for a demonstration's answer."""
    rendered = []
    for block in blocks:
        rendered.append(
            f"```{fence_language(block.path)}\n### {block.path}\n<<<<<<< SEARCH\n{as_block_text(block.search)}"
            f"=======\n{as_block_text(block.replace)}>>>>>>> REPLACE\n```\n"
        )
    return "\n".join(rendered)


def fence_language(path: str) -> str:
    """The info string of a code fence around `path`'s text: `python` for `a/b.py`, empty if unknown."""
    return FENCE_LANGUAGES.get(PurePosixPath(path).suffix, "")


def is_block_marker(line: str) -> bool:
    """Whether a line (its ending aside) reads as a SEARCH, separator or REPLACE marker."""
    line = line.rstrip("\r\n")
    return any(pattern.fullmatch(line) for pattern in (_SEARCH_MARKER, _SEPARATOR, _REPLACE_MARKER))


def as_block_text(text: str) -> str:
    """`text` as a parsed block holds it: `\\n` line ends, the last line ended too."""
    text = _unix_newlines(text)
    return text if not text or text.endswith("\n") else text + "\n"


def _unix_newlines(text: str) -> str:
    # `\r+` rather than `\r`, so that normalizing twice changes nothing ("a\r\r\n" would become "a\r\n").
    return re.sub(r"\r+\n", "\n", text)
