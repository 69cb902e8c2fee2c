"""GitBug-Java bug rows as tasks: `data/bugs/<pid>.json` of gitbugactions/gitbug-java, one JSON bug a line.

A row records three CI run groups in `actions_runs`: [0] the buggy commit as it is, [1] the buggy commit with the
test patch, [2] the fixed commit. Which group shows the bug depends on the row's `strategy`, as the tool itself
reads it (`Bug.info` in gitbug/bug.py):

    PASS_PASS  the buggy commit's own tests pass; the test patch adds or changes tests that fail: group 1
    FAIL_PASS  a test of the buggy commit already fails; there is no test patch and group 1 is null: group 0

`gitbug-java run` grades a patch against group 2: every test recorded there that was not skipped must run and
pass. So FAIL_TO_PASS is the tests failing in the failing group that pass in group 2, and PASS_TO_PASS the rest of
group 2's passing tests. Test ids are `classname#name`, as the tool prints and reports them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from repairrl.data.spec import DatasetSpec
from repairrl.tasks import Task

# gitbug/bug.py clones every bug from the gitbugactions organisation's fork of its repository (the forks keep
# the recorded commits reachable); it swaps the owner of the row's clone_url for that organisation.
FORK_ORGANISATION_URL = "https://github.com/gitbugactions/"
FAILING_RUN_GROUP = {"PASS_PASS": 1, "FAIL_PASS": 0}
FIXED_RUN_GROUP = 2
FAILED_RESULTS = ("Failure", "Error")
MESSAGE_LINES = 3
MESSAGE_CHARS = 500


class GitBugJavaRowError(ValueError):
    """A GitBug-Java row lacks a field or its runs do not show the bug; `load_tasks` reports it as a DatasetError."""


def fork_clone_url(clone_url: str) -> str:
    """The URL gitbug-java clones: the row's GitHub URL with its owner replaced by the gitbugactions fork."""
    return re.sub(r"https://github\.com/.*/", FORK_ORGANISATION_URL, clone_url)


def bug_id(row: dict) -> str:
    """The tool's bug id: `<owner>-<name>-<first 12 characters of the fixed commit>`."""
    return f"{row['repository'].replace('/', '-')}-{row['commit_hash'][:12]}"


def gitbug_test_id(test: dict) -> str:
    return f"{test['classname']}#{test['name']}"


def run_group_tests(group: list[dict] | None) -> dict[str, dict]:
    """Every test of a run group by id, the last recording winning (a group holds one run in the published data)."""
    return {gitbug_test_id(test): test for run in group or [] for test in run.get("tests") or []}


def recorded_outcome(test: dict) -> str:
    """`skipped` if any result skipped it (the tool leaves those out), `failed` if any failed, else `passed`."""
    results = [result.get("result") for result in test.get("results") or []]
    if "Skipped" in results:
        return "skipped"
    if any(result in FAILED_RESULTS for result in results):
        return "failed"
    return "passed" if results else "skipped"


def failing_run_group(row: dict, runs: list, where: str) -> int:
    strategy = row.get("strategy")
    if strategy is None:  # rows written before the field existed: the null group settles it
        return 1 if runs[1] else 0
    if strategy not in FAILING_RUN_GROUP:
        raise GitBugJavaRowError(
            f"{where}: unknown strategy {strategy!r} (one of {sorted(FAILING_RUN_GROUP)})"
        )
    group = FAILING_RUN_GROUP[strategy]
    if not runs[group]:
        raise GitBugJavaRowError(f"{where}: strategy {strategy} reads run group {group}, which is empty")
    return group


def _required(row: dict, name: str, where: str) -> Any:
    if row.get(name) is None:
        raise GitBugJavaRowError(f"{where}: missing field '{name}'")
    return row[name]


def _action_runs(row: dict, where: str) -> list:
    runs = _required(row, "actions_runs", where)
    if isinstance(runs, str):  # a flat copy of the table (Parquet, CSV) may keep the nested runs as JSON text
        try:
            runs = json.loads(runs)
        except json.JSONDecodeError as error:
            raise GitBugJavaRowError(
                f"{where}: field 'actions_runs' is a string but not JSON ({error})"
            ) from error
    if not isinstance(runs, list) or len(runs) != 3:
        raise GitBugJavaRowError(
            f"{where}: field 'actions_runs' must hold 3 run groups (buggy, buggy with the test patch, fixed)"
        )
    if not runs[FIXED_RUN_GROUP]:
        raise GitBugJavaRowError(f"{where}: the fixed version's run group (actions_runs[2]) is empty")
    return runs


def failure_summary(test: dict) -> str:
    """The first lines of a failing test's message, or its exception type where the run recorded no message."""
    for result in test.get("results") or []:
        if result.get("result") in FAILED_RESULTS:
            text = (result.get("message") or "").strip() or (result.get("type") or "").strip()
            summary = " ".join(line.strip() for line in text.splitlines()[:MESSAGE_LINES])
            return summary if len(summary) <= MESSAGE_CHARS else summary[:MESSAGE_CHARS] + " ..."
    return ""


def problem_statement(failing: list[dict]) -> str:
    """GitBug-Java has no issue text: the statement is the failing tests and their messages, as CI shows them."""
    lines = []
    for test in failing:
        summary = failure_summary(test)
        lines.append(f"- {gitbug_test_id(test)}: {summary}" if summary else f"- {gitbug_test_id(test)}")
    return (
        "The test suite fails on this version of the project.\n\nFailing tests:\n" + "\n".join(lines) + "\n"
    )


def gitbug_java_task(row: dict, spec: DatasetSpec, where: str) -> Task:
    """One GitBug-Java bug as a task: the buggy commit, the bug patch as gold, tests from the tool's run groups."""
    repository = _required(row, "repository", where)
    fixed_commit = _required(row, "commit_hash", where)
    runs = _action_runs(row, where)
    group = failing_run_group(row, runs, where)
    failing_tests = run_group_tests(runs[group])
    fixed_tests = run_group_tests(runs[FIXED_RUN_GROUP])
    fixed_passing = {tid for tid, test in fixed_tests.items() if recorded_outcome(test) == "passed"}
    failing = [
        test
        for tid, test in failing_tests.items()
        if recorded_outcome(test) == "failed" and tid in fixed_passing
    ]
    if not failing:
        raise GitBugJavaRowError(
            f"{where}: no test fails in run group {group} and passes on the fixed version; the row shows no bug"
        )
    fail_to_pass = sorted(gitbug_test_id(test) for test in failing)
    pass_to_pass = sorted(fixed_passing - set(fail_to_pass))
    bug_patch = row.get("bug_patch") or ""
    non_code_patch = row.get("non_code_patch") or ""
    clone_url = row.get("clone_url") or f"https://github.com/{repository}.git"
    return Task(
        instance_id=bug_id(row),
        dataset=spec.name,
        repo=repository,
        repo_url=fork_clone_url(clone_url),
        base_commit=_required(row, "previous_commit_hash", where),
        problem_statement=problem_statement(sorted(failing, key=gitbug_test_id)),
        # A bug without a code change is its non-code patch alone (the tool then applies none at checkout).
        gold_patch=bug_patch or non_code_patch,
        test_patch=row.get("test_patch") or "",
        fail_to_pass=fail_to_pass,
        pass_to_pass=pass_to_pass,
        language="java",
        test_framework="gitbug-java",
        split=spec.split,
        created_at=row.get("commit_timestamp") or None,
        extra={
            "fixed_commit": fixed_commit,
            "non_code_patch": non_code_patch,
            "strategy": row.get("strategy"),
            "failing_run_group": group,
        },
    )
