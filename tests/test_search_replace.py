"""Search/replace edit blocks: parsing a model's answer, applying it to files, and the diffs both ways."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from repairrl.singleturn.diffs import diff_from_answer, diff_to_edit_blocks, edit_blocks_to_diff
from repairrl.singleturn.search_replace import (
    EDIT_FORMAT_INSTRUCTIONS,
    AmbiguousMatchError,
    EditBlock,
    EditError,
    EditFormatError,
    NoMatchError,
    apply_edit_blocks,
    parse_edit_blocks,
    render_edit_blocks,
)

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "repairrl tests",
    "GIT_AUTHOR_EMAIL": "tests@repairrl.invalid",
    "GIT_COMMITTER_NAME": "repairrl tests",
    "GIT_COMMITTER_EMAIL": "tests@repairrl.invalid",
}

CALCULATOR = """\
import math


def divide(a, b):
    return a / b


def root(x):
    return math.sqrt(x)
"""


def block(search: str, replace: str, path: str = "calc.py") -> str:
    return f"### {path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def git(*args: str, cwd: Path, stdin: str | None = None) -> str:
    completed = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout


def committed_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    git("init", "-q", cwd=root)
    write_files(root, files)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def write_files(root: Path, files: dict[str, str]) -> None:
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content.encode())


def git_apply(repo: Path, patch: str) -> None:
    git("apply", "--check", "-", cwd=repo, stdin=patch)
    git("apply", "-", cwd=repo, stdin=patch)


def read_back(repo: Path, paths) -> dict[str, str]:
    return {path: (repo / path).read_bytes().decode() for path in paths}


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def test_parse_reads_fenced_agentless_blocks_and_ignores_prose():
    answer = (
        "The division does not check for zero.\n\n```python\n"
        + block("def divide(a, b):\n    return a / b\n", "def divide(a, b):\n    return a / b if b else 0\n")
        + "```\n\nThat should fix it.\n"
    )
    assert parse_edit_blocks(answer) == [
        EditBlock(
            "calc.py",
            "def divide(a, b):\n    return a / b\n",
            "def divide(a, b):\n    return a / b if b else 0\n",
        )
    ]


def test_parse_accepts_aider_bare_path_before_the_fence():
    answer = "pkg/calc.py\n```python\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n```\n"
    assert parse_edit_blocks(answer) == [EditBlock("pkg/calc.py", "x = 1\n", "x = 2\n")]


@pytest.mark.parametrize("count", [5, 7, 9])
def test_parse_accepts_miscounted_markers(count):
    answer = f"### a.py\n{'<' * count} SEARCH\nx = 1\n{'=' * count}\nx = 2\n{'>' * count} REPLACE\n"
    assert parse_edit_blocks(answer) == [EditBlock("a.py", "x = 1\n", "x = 2\n")]


def test_parse_reads_several_files_and_several_blocks_per_file():
    answer = (
        block("a\n", "A\n", "one.py") + "\n" + block("b\n", "B\n", "two.py") + block("c\n", "C\n", "two.py")
    )
    assert [(b.path, b.search) for b in parse_edit_blocks(answer)] == [
        ("one.py", "a\n"),
        ("two.py", "b\n"),
        ("two.py", "c\n"),
    ]


def test_parse_gives_a_block_right_after_another_the_same_path():
    answer = (
        block("a\n", "A\n", "one.py") + "```\n\n```python\n<<<<<<< SEARCH\nb\n=======\nB\n>>>>>>> REPLACE\n"
    )
    assert [b.path for b in parse_edit_blocks(answer)] == ["one.py", "one.py"]


def test_parse_reads_an_empty_search_and_crlf_answers():
    answer = block("", "print('hi')\n", "new.py").replace("\n", "\r\n")
    assert parse_edit_blocks(answer) == [EditBlock("new.py", "", "print('hi')\n")]


def test_parse_rejects_a_block_without_separator():
    answer = "### calc.py\n<<<<<<< SEARCH\ndef divide(a, b):\n>>>>>>> REPLACE\n"
    with pytest.raises(EditFormatError, match=r"no `=======`.*") as error:
        parse_edit_blocks(answer)
    assert "calc.py" in str(error.value) and "def divide(a, b):" in str(error.value)


def test_parse_rejects_a_block_without_replace_marker():
    answer = "### calc.py\n<<<<<<< SEARCH\ndef divide(a, b):\n=======\ndef div(a, b):\n```\n"
    with pytest.raises(EditFormatError, match="no `>>>>>>> REPLACE`") as error:
        parse_edit_blocks(answer)
    assert "calc.py" in str(error.value) and "def divide(a, b):" in str(error.value)


def test_parse_rejects_a_new_block_before_the_previous_one_ends():
    answer = "### a.py\n<<<<<<< SEARCH\nx\n=======\ny\n" + block("z\n", "w\n", "a.py")
    with pytest.raises(EditFormatError, match="before `>>>>>>> REPLACE`"):
        parse_edit_blocks(answer)
    nested = "### a.py\n<<<<<<< SEARCH\nx\n" + block("z\n", "w\n", "a.py")
    with pytest.raises(EditFormatError, match="second `<<<<<<< SEARCH`"):
        parse_edit_blocks(nested)


def test_parse_rejects_a_block_without_path():
    answer = "Here is the fix:\n```python\n<<<<<<< SEARCH\nreturn a / b\n=======\nreturn a // b\n>>>>>>> REPLACE\n```\n"
    with pytest.raises(EditFormatError, match="no file path") as error:
        parse_edit_blocks(answer)
    assert "return a / b" in str(error.value)


def test_parse_rejects_an_answer_without_blocks():
    with pytest.raises(EditFormatError, match="no edit blocks"):
        parse_edit_blocks("I think the bug is in divide(), but I am not sure how to fix it.")


def test_parse_rejects_a_replace_marker_without_search():
    with pytest.raises(EditFormatError, match="without a `<<<<<<< SEARCH`"):
        parse_edit_blocks("### a.py\n<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n")


def test_instructions_example_parses():
    [example] = parse_edit_blocks(EDIT_FORMAT_INSTRUCTIONS)
    assert example.path == "src/calculator.py" and "ZeroDivisionError" in example.replace


# ---------------------------------------------------------------------------------------------------------------
# Applying


def test_apply_replaces_an_exact_match():
    blocks = [
        EditBlock(
            "calc.py", "def divide(a, b):\n    return a / b\n", "def divide(a, b):\n    return a // b\n"
        )
    ]
    assert apply_edit_blocks({"calc.py": CALCULATOR}, blocks) == {
        "calc.py": CALCULATOR.replace("a / b", "a // b")
    }


def test_apply_ignores_trailing_whitespace():
    blocks = [
        EditBlock(
            "calc.py", "def divide(a, b):   \n    return a / b\t\n", "def divide(a, b):\n    return 0\n"
        )
    ]
    assert apply_edit_blocks({"calc.py": CALCULATOR}, blocks)["calc.py"] == CALCULATOR.replace("a / b", "0")


@pytest.mark.parametrize("indent", ["", "  ", "        "], ids=["less", "two-spaces", "more"])
def test_apply_matches_a_uniformly_reindented_search_and_reindents_the_replace(indent):
    search = f"{indent}def divide(a, b):\n{indent}    return a / b\n"
    replace = f"{indent}def divide(a, b):\n{indent}    if b == 0:\n{indent}        return 0\n{indent}    return a / b\n"
    [new] = apply_edit_blocks({"calc.py": CALCULATOR}, [EditBlock("calc.py", search, replace)]).values()
    expected = "def divide(a, b):\n    if b == 0:\n        return 0\n    return a / b\n"
    assert new == CALCULATOR.replace("def divide(a, b):\n    return a / b\n", expected)


def test_apply_rejects_an_indentation_that_differs_unevenly():
    search = "def divide(a, b):\nreturn a / b\n"
    with pytest.raises(NoMatchError):
        apply_edit_blocks({"calc.py": CALCULATOR}, [EditBlock("calc.py", search, "pass\n")])


def test_apply_tolerates_blank_lines_at_the_ends_of_the_search():
    search = "\n\ndef root(x):\n    return math.sqrt(x)\n\n"
    replace = "\n\ndef root(x):\n    return x**0.5\n\n"
    [new] = apply_edit_blocks({"calc.py": CALCULATOR}, [EditBlock("calc.py", search, replace)]).values()
    assert new == CALCULATOR.replace("math.sqrt(x)", "x**0.5")


def test_apply_rejects_an_exact_match_found_twice():
    content = "x = 1\nprint(x)\nx = 1\n"
    with pytest.raises(AmbiguousMatchError, match=r"a\.py.*'x = 1'.*2 places"):
        apply_edit_blocks({"a.py": content}, [EditBlock("a.py", "x = 1\n", "x = 2\n")])


def test_apply_rejects_a_whitespace_tolerant_match_found_twice():
    content = "if a:\n    x = 1\nif b:\n        x = 1\n"
    with pytest.raises(AmbiguousMatchError, match="ignoring whitespace"):
        apply_edit_blocks({"a.py": content}, [EditBlock("a.py", "  x = 1\n", "  x = 2\n")])


def test_apply_does_not_match_inside_a_line():
    content = "total_x = 1\n"
    with pytest.raises(NoMatchError):
        apply_edit_blocks({"a.py": content}, [EditBlock("a.py", "x = 1\n", "x = 2\n")])


def test_apply_error_for_a_missing_match_names_the_file_and_the_search():
    blocks = [EditBlock("calc.py", "\ndef multiply(a, b):\n    return a * b\n", "")]
    with pytest.raises(NoMatchError, match=r"calc\.py.*'def multiply\(a, b\):'") as error:
        apply_edit_blocks({"calc.py": CALCULATOR}, blocks)
    assert error.value.path == "calc.py"


def test_apply_rejects_a_path_not_among_the_files():
    with pytest.raises(
        NoMatchError, match=r"calc2\.py: not among the files given \(calc\.py\).*'import math'"
    ):
        apply_edit_blocks({"calc.py": CALCULATOR}, [EditBlock("calc2.py", "import math\n", "")])


def test_apply_edits_several_files():
    files = {"a.py": "A = 1\n", "b.py": "B = 1\n", "c.py": "C = 1\n"}
    blocks = [EditBlock("b.py", "B = 1\n", "B = 2\n"), EditBlock("a.py", "A = 1\n", "A = 2\n")]
    assert apply_edit_blocks(files, blocks) == {"a.py": "A = 2\n", "b.py": "B = 2\n"}


def test_apply_applies_blocks_of_one_file_in_order():
    blocks = [
        EditBlock("calc.py", "    return a / b\n", "    return safe_divide(a, b)\n"),
        # Only exists once the first block is applied.
        EditBlock("calc.py", "    return safe_divide(a, b)\n", "    return safe_divide(a, b, default=0)\n"),
        EditBlock("calc.py", "import math\n", "import math\n\nfrom safety import safe_divide\n"),
    ]
    [new] = apply_edit_blocks({"calc.py": CALCULATOR}, blocks).values()
    assert "from safety import safe_divide\n" in new and "safe_divide(a, b, default=0)" in new


def test_apply_creates_a_file_for_an_empty_search_on_a_new_path():
    blocks = [
        EditBlock("pkg/new.py", "", "VALUE = 1\n"),
        EditBlock("pkg/new.py", "VALUE = 1\n", "VALUE = 2\n"),
    ]
    assert apply_edit_blocks({"calc.py": CALCULATOR}, blocks) == {"pkg/new.py": "VALUE = 2\n"}


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.py", "pkg/../../outside.py"])
def test_apply_refuses_to_create_a_file_outside_the_repository(path):
    with pytest.raises(NoMatchError, match="relative to the repository root"):
        apply_edit_blocks({"calc.py": CALCULATOR}, [EditBlock(path, "", "x = 1\n")])


def test_apply_rejects_an_empty_search_on_an_existing_file():
    with pytest.raises(AmbiguousMatchError, match=r"calc\.py.*empty"):
        apply_edit_blocks({"calc.py": CALCULATOR}, [EditBlock("calc.py", "\n", "x = 1\n")])


def test_apply_keeps_a_missing_final_newline():
    files = {"a.txt": "one\ntwo\nthree"}
    assert apply_edit_blocks(files, [EditBlock("a.txt", "three\n", "3\n")]) == {"a.txt": "one\ntwo\n3"}
    assert apply_edit_blocks(files, [EditBlock("a.txt", "two\nthree\n", "")]) == {"a.txt": "one"}


def test_apply_keeps_crlf_line_endings():
    files = {"a.txt": "one\r\ntwo\r\nthree\r\n"}
    assert apply_edit_blocks(files, [EditBlock("a.txt", "two\n", "2\nand a half\n")]) == {
        "a.txt": "one\r\n2\r\nand a half\r\nthree\r\n"
    }


# ---------------------------------------------------------------------------------------------------------------
# Diffs that git applies


def test_diff_of_an_answer_applies_with_git(tmp_path):
    files = {"calc.py": CALCULATOR, "docs/release notes.txt": "no final newline", "same.py": "x = 1\n"}
    answer = (
        "Two fixes and a test.\n```python\n"
        + block("    return a / b\n", "    if b == 0:\n        return 0\n    return a / b\n")
        + "```\n```\n"
        + block("no final newline\n", "still no final newline\n", "docs/release notes.txt")
        + "```\n```python\n"
        + block("x = 1\n", "x = 1\n", "same.py")
        + block("", "from calc import divide\n\nassert divide(1, 0) == 0\n", "tests/test_calc.py")
        + "```\n"
    )
    diff = diff_from_answer(files, answer)
    assert "same.py" not in diff  # unchanged files produce nothing
    assert "new file mode 100644\n--- /dev/null\n+++ b/tests/test_calc.py\n" in diff
    assert "\\ No newline at end of file" in diff
    repo = committed_repo(tmp_path / "repo", files)
    git_apply(repo, diff)
    expected = apply_edit_blocks(files, parse_edit_blocks(answer))
    assert read_back(repo, expected) == expected
    assert expected["docs/release notes.txt"] == "still no final newline"


def test_diff_is_empty_when_nothing_changes():
    assert edit_blocks_to_diff({"a.py": "x = 1\n"}, [EditBlock("a.py", "x = 1\n", "x = 1\n")]) == ""


def test_diff_lists_files_sorted_by_path():
    files = {"b.py": "b\n", "a.py": "a\n"}
    diff = edit_blocks_to_diff(files, [EditBlock("b.py", "b\n", "B\n"), EditBlock("a.py", "a\n", "A\n")])
    assert diff.index("a/a.py") < diff.index("a/b.py")


def test_diff_has_three_lines_of_context_and_separate_hunks(tmp_path):
    content = "".join(f"line {number}\n" for number in range(1, 31))
    blocks = [EditBlock("f.txt", "line 2\n", "line two\n"), EditBlock("f.txt", "line 25\n", "")]
    diff = edit_blocks_to_diff({"f.txt": content}, blocks)
    assert "@@ -1,5 +1,5 @@\n line 1\n-line 2\n+line two\n line 3\n line 4\n line 5\n" in diff
    assert "@@ -22,7 +22,6 @@\n" in diff
    repo = committed_repo(tmp_path / "repo", {"f.txt": content})
    git_apply(repo, diff)
    assert read_back(repo, ["f.txt"]) == apply_edit_blocks({"f.txt": content}, blocks)


def test_diff_of_an_edit_to_an_empty_file_and_of_an_empty_new_file_applies(tmp_path):
    files = {"empty.py": ""}
    blocks = [EditBlock("empty.py", "", "x = 1\n"), EditBlock("pkg/__init__.py", "", "")]
    diff = edit_blocks_to_diff(files, blocks)
    assert "@@ -0,0 +1 @@\n+x = 1\n" in diff
    repo = committed_repo(tmp_path / "repo", files)
    git_apply(repo, diff)
    assert read_back(repo, ["empty.py", "pkg/__init__.py"]) == {"empty.py": "x = 1\n", "pkg/__init__.py": ""}


def test_diff_is_the_one_git_diff_writes(tmp_path):
    content = "".join(f"value_{number} = {number}\n" for number in range(40))
    blocks = [
        EditBlock("v.py", "value_3 = 3\n", "value_3 = 30\nextra = 1\n"),
        EditBlock("v.py", "value_20 = 20\nvalue_21 = 21\n", ""),
        EditBlock("v.py", "value_39 = 39\n", "value_39 = 39"),
    ]
    ours = edit_blocks_to_diff({"v.py": content}, blocks)
    repo = committed_repo(tmp_path / "repo", {"v.py": content})
    write_files(repo, apply_edit_blocks({"v.py": content}, blocks))
    theirs = git("diff", cwd=repo)
    # git names the enclosing function after a hunk's range (`@@ -1,7 +1,8 @@ def f():`); git apply ignores it.
    theirs = re.sub(r"^(@@ [^@]* @@).*$", r"\1", theirs, flags=re.MULTILINE)
    assert ours == "".join(line for line in theirs.splitlines(True) if not line.startswith("index "))


def test_diff_of_edits_far_apart_in_a_long_repetitive_file_stays_small():
    content = "".join(
        f"def f{n}(x):\n    if x is None:\n        return None\n    return x\n\n" for n in range(2000)
    )
    blocks = [
        EditBlock("f.py", "def f10(x):\n", "def f10(x, y):\n"),
        EditBlock("f.py", "def f1990(x):\n", "def f1990(x, y):\n"),
    ]
    diff = edit_blocks_to_diff({"f.py": content}, blocks)
    changed = [line for line in diff.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++")]
    assert diff.count("@@ -") == 2
    assert changed == ["-def f10(x):", "+def f10(x, y):", "-def f1990(x):", "+def f1990(x, y):"]


# ---------------------------------------------------------------------------------------------------------------
# From a gold diff back to blocks


def gold_diff(tmp_path: Path, before: dict[str, str], after: dict[str, str]) -> str:
    repo = committed_repo(tmp_path / "gold", before)
    write_files(repo, after)
    git("add", "-A", cwd=repo)
    return git("diff", "--cached", cwd=repo)


def assert_round_trip(
    tmp_path: Path, before: dict[str, str], gold: str, after: dict[str, str]
) -> list[EditBlock]:
    blocks = diff_to_edit_blocks(before, gold)
    assert parse_edit_blocks(render_edit_blocks(blocks)) == blocks
    repo = committed_repo(tmp_path / "replay", before)
    git_apply(repo, edit_blocks_to_diff(before, blocks))
    assert read_back(repo, after) == after
    return blocks


def test_gold_diff_round_trips_through_edit_blocks(tmp_path):
    before = {
        "calc.py": CALCULATOR + "".join(f"\n\ndef f{n}():\n    return {n}\n" for n in range(8)),
        "README": "x\n",
    }
    after = {
        "calc.py": before["calc.py"]
        .replace("return a / b", "return a / b if b else 0")
        .replace("return 6", "return 60"),
        "README": "x\ny\n",
        "pkg/new.py": "NEW = True\n",
    }
    gold = gold_diff(tmp_path, before, after)
    blocks = assert_round_trip(tmp_path, before, gold, after)
    assert [b.path for b in blocks] == ["README", "calc.py", "calc.py", "pkg/new.py"]
    # The hunk as git wrote it, three lines of context each side: unique already, so not extended.
    assert blocks[1].search == "\n\ndef divide(a, b):\n    return a / b\n\n\ndef root(x):\n"
    assert blocks[3] == EditBlock("pkg/new.py", "", "NEW = True\n")
    rendered = render_edit_blocks(blocks)
    assert rendered.startswith("```\n### README\n<<<<<<< SEARCH\nx\n=======\nx\ny\n>>>>>>> REPLACE\n```\n")


def test_gold_hunk_that_is_not_unique_is_extended_until_it_is(tmp_path):
    repeated = "    if value is None:\n        return None\n    return value\n"
    before = {"conv.py": f"def to_int(value):\n{repeated}\n\ndef to_str(value):\n{repeated}"}
    after = {"conv.py": before["conv.py"][: -len("    return value\n")] + "    return str(value)\n"}
    gold = gold_diff(tmp_path, before, after)
    [hunk_block] = assert_round_trip(tmp_path, before, gold, after)
    # git's three lines of context are the same in both functions; the block reaches `def to_str`.
    assert hunk_block.search.startswith("def to_str(value):\n")
    with pytest.raises(AmbiguousMatchError):
        apply_edit_blocks(before, [EditBlock("conv.py", repeated, repeated)])


def test_gold_diff_without_context_round_trips(tmp_path):
    before = {"a.txt": "same\nsame\nsame\n", "b.txt": "end"}
    after = {"a.txt": "same\nsame\nnew\nsame\n", "b.txt": "start\nend"}
    repo = committed_repo(tmp_path / "gold", before)
    write_files(repo, after)
    gold = git("diff", "-U0", cwd=repo)
    assert_round_trip(tmp_path, before, gold, after)


def test_gold_diff_of_a_deleted_file_is_rejected(tmp_path):
    gold = (
        "diff --git a/a.py b/a.py\ndeleted file mode 100644\n--- a/a.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n"
    )
    with pytest.raises(EditError, match="deleted"):
        diff_to_edit_blocks({"a.py": "x\n"}, gold)


# Few distinct lines, some alike but for indentation, so hunks repeat and whitespace-tolerant matches compete.
LINES = st.sampled_from(["x = 1", "    x = 1", "", "pass", "def f():", "    return x", "  # note"])


@st.composite
def file_and_edit(draw) -> tuple[str, str]:
    old = draw(st.lists(LINES, min_size=1, max_size=25))
    new = list(old)
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(new)))
        end = draw(st.integers(start, min(len(new), start + 3)))
        new[start:end] = draw(st.lists(LINES, max_size=3))
    return "".join(f"{line}\n" for line in old), "".join(f"{line}\n" for line in new)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file_and_edit(), st.sampled_from([0, 1, 3]))
def test_random_edits_round_trip_through_edit_blocks(edit, context):
    old, new = edit
    body = "".join(
        difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/f.py", "b/f.py", n=context)
    )
    if not body:
        return
    blocks = diff_to_edit_blocks({"f.py": old}, f"diff --git a/f.py b/f.py\n{body}")
    assert parse_edit_blocks(render_edit_blocks(blocks)) == blocks
    assert apply_edit_blocks({"f.py": old}, blocks)["f.py"] == new
