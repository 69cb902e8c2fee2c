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

`diff_from_answer` turns an answer into a git-style unified diff (what the pipeline grades and submits);
`diff_to_edit_blocks` and `render_edit_blocks` go the other way, to write expert demonstrations from a gold
patch.
"""

from __future__ import annotations

import difflib
import re
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

Opcode = tuple[str, int, int, int, int]  # (tag, old start, old end, new start, new end), as in difflib

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
_CONTEXT_LINES = 3
# Past this many changed lines a diff is a rewrite, where a shortest edit script is slow and not needed.
_MAX_MYERS_EDITS = 500
_FENCE_LANGUAGES = {".py": "python", ".java": "java"}


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
    file_lines = _split_lines(content)
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


def _split_lines(text: str) -> list[str]:
    """Lines with their endings; only `\\n` ends a line, as for git (str.splitlines also splits on \\f, ...)."""
    parts = text.split("\n")
    lines = [f"{part}\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _lines_without_ends(text: str) -> list[str]:
    return [line.rstrip("\n") for line in _split_lines(text)]


# ---------------------------------------------------------------------------------------------------------------
# Diffs


def edit_blocks_to_diff(files: Mapping[str, str], blocks: Iterable[EditBlock]) -> str:
    """A git-style unified diff of the blocks' edits, files sorted by path; unchanged files are left out."""
    new_contents = apply_edit_blocks(files, blocks)
    return "".join(
        _file_diff(path, files.get(path), new_contents[path])
        for path in sorted(new_contents)
        if files.get(path) != new_contents[path]
    )


def diff_from_answer(files: Mapping[str, str], text: str) -> str:
    """The unified diff of a model's answer applied to `files`; raises an EditError subclass if it cannot be."""
    return edit_blocks_to_diff(files, parse_edit_blocks(text))


def _file_diff(path: str, old: str | None, new: str) -> str:
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
    old_lines, new_lines = _split_lines(old or ""), _split_lines(new)
    out = header
    for group in _grouped_opcodes(old_lines, new_lines):
        first, last = group[0], group[-1]
        out.append(f"@@ -{_hunk_range(first[1], last[2])} +{_hunk_range(first[3], last[4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += _diff_lines(" ", old_lines[i1:i2])
                continue
            out += _diff_lines("-", old_lines[i1:i2])
            out += _diff_lines("+", new_lines[j1:j2])
    return "".join(out)


def _grouped_opcodes(old: list[str], new: list[str]) -> list[list[Opcode]]:
    """Hunks of difflib-style opcodes with 3 lines of context, as SequenceMatcher.get_grouped_opcodes makes them."""
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    old_middle, new_middle = old[head : len(old) - tail], new[head : len(new) - tail]
    middle = _shortest_edit_opcodes(old_middle, new_middle)
    if middle is None:
        # A rewrite: any correct diff will do, and autojunk keeps difflib fast on repeated lines.
        middle = difflib.SequenceMatcher(None, old_middle, new_middle).get_opcodes()
    opcodes = [("equal", 0, head, 0, head)] if head else []
    opcodes += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle]
    if tail:
        opcodes.append(("equal", len(old) - tail, len(old), len(new) - tail, len(new)))
    # Merge neighbouring equal runs (the cut head or tail next to the matcher's own equal run).
    merged: list[Opcode] = []
    for opcode in opcodes:
        if merged and opcode[0] == "equal" and merged[-1][0] == "equal":
            previous = merged.pop()
            opcode = ("equal", previous[1], opcode[2], previous[3], opcode[4])
        merged.append(opcode)
    if not any(tag != "equal" for tag, *_ in merged):
        return []
    # Trim the first and last equal runs to the context, then split where an equal run is over twice as long.
    if merged[0][0] == "equal":
        _, i1, i2, j1, j2 = merged[0]
        merged[0] = ("equal", max(i1, i2 - _CONTEXT_LINES), i2, max(j1, j2 - _CONTEXT_LINES), j2)
    if merged[-1][0] == "equal":
        _, i1, i2, j1, j2 = merged[-1]
        merged[-1] = ("equal", i1, min(i2, i1 + _CONTEXT_LINES), j1, min(j2, j1 + _CONTEXT_LINES))
    groups: list[list[Opcode]] = []
    group: list[Opcode] = []
    for tag, i1, i2, j1, j2 in merged:
        if tag == "equal" and i2 - i1 > 2 * _CONTEXT_LINES:
            group.append((tag, i1, i1 + _CONTEXT_LINES, j1, j1 + _CONTEXT_LINES))
            groups.append(group)
            group = []
            i1, j1 = i2 - _CONTEXT_LINES, j2 - _CONTEXT_LINES
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        groups.append(group)
    return groups


def _shortest_edit_opcodes(old: list[str], new: list[str]) -> list[Opcode] | None:
    """Opcodes of a shortest edit script (Myers' greedy algorithm, git diff's default); None past a limit.

    Its time grows with the lines times the changes, so a few edits far apart in a long file are cheap, where
    difflib's SequenceMatcher (without its autojunk heuristic, which turns repeated lines into spurious changes)
    is quadratic in the lines that repeat (blank lines, `return None`, ...).
    """
    n, m = len(old), len(new)
    limit = min(n + m, _MAX_MYERS_EDITS)
    offset = limit + 1
    unreached = -1
    # furthest[offset + k]: the furthest x reached on diagonal k = x - y; the start is one insertion below k=1.
    furthest = array("l", [unreached]) * (2 * limit + 3)
    furthest[offset + 1] = 0
    # For the way back: after `edits` changes, on diagonal k, the x right after the last change (before the run
    # of equal lines) at steps[edits][(k + edits) // 2], negative (-x - 1) when that change was an insertion.
    steps: list[array] = []
    for edits in range(limit + 1):
        step = array("l", [0]) * (edits + 1)
        steps.append(step)
        for k in range(-edits, edits + 1, 2):
            if k < -m or k > n:
                furthest[offset + k] = unreached
                continue
            down = furthest[offset + k + 1]  # an insertion: from diagonal k+1, same x
            if down != unreached and down - k > m:
                down = unreached
            right = furthest[offset + k - 1]  # a deletion: from diagonal k-1, one x further
            right = right + 1 if right != unreached and right < n else unreached
            if down == unreached and right == unreached:
                furthest[offset + k] = unreached
                continue
            inserted = down >= right
            x = max(down, right)
            step[(k + edits) // 2] = -x - 1 if inserted else x
            y = x - k
            while x < n and y < m and old[x] == new[y]:
                x, y = x + 1, y + 1
            # Diagonals of one step read only those of the other parity, so writing in place is safe.
            furthest[offset + k] = x
            if x == n and y == m:
                return _opcodes_from_steps(steps, n, m)
    return None


def _opcodes_from_steps(steps: list[array], n: int, m: int) -> list[Opcode]:
    """The opcodes of the path that ends at (n, m), from the changes recorded on the way there."""
    moves: list[Opcode] = []
    x, y = n, m
    for edits in range(len(steps) - 1, -1, -1):
        k = x - y
        recorded = steps[edits][(k + edits) // 2]
        inserted = recorded < 0
        x_after, y_after = (-recorded - 1, -recorded - 1 - k) if inserted else (recorded, recorded - k)
        if x > x_after:
            moves.append(("equal", x_after, x, y_after, y))
        if edits == 0:
            break
        if inserted:
            moves.append(("insert", x_after, x_after, y_after - 1, y_after))
            x, y = x_after, y_after - 1
        else:
            moves.append(("delete", x_after - 1, x_after, y_after, y_after))
            x, y = x_after - 1, y_after
    moves.reverse()
    # The deletions and insertions between two runs of equal lines become one change (`-` lines, then `+`).
    opcodes: list[Opcode] = []
    for tag, i1, i2, j1, j2 in moves:
        if tag != "equal":
            if opcodes and opcodes[-1][0] != "equal":
                _, i1, _, j1, _ = opcodes.pop()
            tag = "replace" if i2 > i1 and j2 > j1 else "delete" if i2 > i1 else "insert"
        opcodes.append((tag, i1, i2, j1, j2))
    return opcodes


def _hunk_range(start: int, stop: int) -> str:
    """A hunk header's `start,length` (1-based); an empty range names the line before it, as diff does."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _diff_lines(prefix: str, lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        out.append(prefix + line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return out


# ---------------------------------------------------------------------------------------------------------------
# From a gold diff to edit blocks (expert demonstrations)


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
            blocks.append(EditBlock(path, "", _as_written("".join(new_lines))))
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
    file_lines = _split_lines(content)
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
    if any(_is_marker(line) for line in old_lines + new_lines):
        raise EditError(
            f"{path}: the hunk at line {hunk.source_start} has a line that reads as a block marker."
        )
    low, high = start, end
    while True:
        block = EditBlock(
            path,
            _as_written("".join(file_lines[low:high])),
            _as_written("".join(file_lines[low:start] + new_lines + file_lines[end:high])),
        )
        try:
            result = _apply_block(block, content)
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
        can_grow_up = low > 0 and not _is_marker(file_lines[low - 1])
        can_grow_down = high < len(file_lines) and not _is_marker(file_lines[high])
        if can_grow_up and (not can_grow_down or (start - low) <= (high - end)):
            low -= 1
        elif can_grow_down:
            high += 1
        else:
            raise EditError(
                f"{path}: no SEARCH text around the hunk at line {hunk.source_start} matches only there.",
                path,
            )


def _is_marker(line: str) -> bool:
    line = line.rstrip("\r\n")
    return any(pattern.fullmatch(line) for pattern in (_SEARCH_MARKER, _SEPARATOR, _REPLACE_MARKER))


def _as_written(text: str) -> str:
    """`text` as a parsed block holds it: `\\n` line ends, the last line ended too."""
    text = _unix_newlines(text)
    return text if not text or text.endswith("\n") else text + "\n"


def _unix_newlines(text: str) -> str:
    # `\r+` rather than `\r`, so that normalizing twice changes nothing ("a\r\r\n" would become "a\r\n").
    return re.sub(r"\r+\n", "\n", text)


def _same_but_final_newline(result: str, expected: str) -> bool:
    """Whether the texts are equal, but for a final newline that one has and the other not."""
    return (
        result == expected
        or result == _drop_final_newline(expected)
        or _drop_final_newline(result) == expected
    )


def _drop_final_newline(text: str) -> str:
    return re.sub(r"\r?\n\Z", "", text)


def render_edit_blocks(blocks: Iterable[EditBlock]) -> str:
    """The blocks in the documented format (fenced, `### path`), ready for a demonstration's answer."""
    rendered = []
    for block in blocks:
        suffix = block.path[block.path.rfind(".") :] if "." in block.path else ""
        rendered.append(
            f"```{_FENCE_LANGUAGES.get(suffix, '')}\n### {block.path}\n<<<<<<< SEARCH\n{_as_written(block.search)}"
            f"=======\n{_as_written(block.replace)}>>>>>>> REPLACE\n```\n"
        )
    return "\n".join(rendered)
