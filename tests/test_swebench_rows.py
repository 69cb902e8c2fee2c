"""How SWE-bench and SWE-Gym tasks are graded: settled at fetch time, passed to swebench's harness, and refused
by the training stages where the local grader cannot compute the configured rewards.

The rows, logs and expected scripts under tests/fixtures/swebench and tests/fixtures/swe_gym are genuine
(see their PROVENANCE.md): rows as published, scripts and parser names as swebench 4.1.0 and SWE-Gym's fork
produce them, logs and verdicts as a swebench harness run recorded them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("swebench")

from repairrl.data.swebench_specs import (
    SWE_GYM_PARSERS,
    SWE_GYM_SPECS,
    eval_spec,
    grading_recipe,
    make_eval_script,
)
from repairrl.evaluate import harness
from repairrl.grading.rewards import RewardNotComputableError, check_rewards_computable
from repairrl.tasks import read_tasks
from swebench.harness.constants import ResolvedStatus
from swebench.harness.grading import get_eval_tests_report, get_resolution_status
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.harness.log_parsers.python import parse_log_pytest
from swebench.harness.utils import make_test_spec

ROOT = Path(__file__).resolve().parents[1]
SWEBENCH = ROOT / "tests" / "fixtures" / "swebench"
SWE_GYM = ROOT / "tests" / "fixtures" / "swe_gym"
GENUINE_ROWS = [json.loads(line) for line in (SWEBENCH / "rows.jsonl").read_text().splitlines()]
ROW_IDS = [row["instance_id"] for row in GENUINE_ROWS]
EXPECTED_PARSERS = json.loads((SWEBENCH / "expected" / "log_parsers.json").read_text())


def genuine_row(source_id: str, /, **changes) -> dict:
    (row,) = [row for row in GENUINE_ROWS if row["instance_id"] == source_id]
    return {**row, **changes}


def fetch(tmp_path: Path, rows: list[dict] | Path, fmt: str, **entry) -> subprocess.CompletedProcess:
    """The fetch rule's CLI on ROWS (a file as it is, or rows written to one)."""
    source = rows
    if not isinstance(rows, Path):
        source = tmp_path / "rows.jsonl"
        source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {"format": fmt, "source": {"path": str(source)}, **entry}
    return subprocess.run(
        [sys.executable, "-m", "repairrl.data.fetch", "--dataset", "d", "--spec", json.dumps(spec),
         "--out", str(tmp_path / "tasks.jsonl"), "--skipped", str(tmp_path / "skipped.jsonl")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def genuine_tasks(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("fetch")
    result = fetch(tmp_path, SWEBENCH / "rows.jsonl", "swe-bench")
    assert result.returncode == 0, result.stderr
    return {task.instance_id: task for task in read_tasks(tmp_path / "tasks.jsonl")}


def as_list(value) -> list[str]:
    """SWE-bench's own rows carry the test lists JSON-encoded; some copies decode them."""
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.parametrize("instance_id", ROW_IDS)
def test_genuine_row_is_fetched_field_for_field(genuine_tasks, instance_id):
    row, task = genuine_row(instance_id), genuine_tasks[instance_id]
    assert (task.instance_id, task.repo, task.base_commit) == (
        row["instance_id"],
        row["repo"],
        row["base_commit"],
    )
    assert task.repo_url == f"https://github.com/{row['repo']}.git"
    assert (task.gold_patch, task.test_patch) == (row["patch"], row["test_patch"])
    assert task.problem_statement == row["problem_statement"]
    assert task.hints_text == (row["hints_text"] or None)
    assert (task.created_at, task.version) == (row["created_at"], row["version"])
    assert task.environment_setup_commit == row["environment_setup_commit"]
    assert task.fail_to_pass == as_list(row["FAIL_TO_PASS"]) and task.fail_to_pass
    assert task.pass_to_pass == as_list(row["PASS_TO_PASS"])
    assert (task.language, task.test_framework, task.split, task.dataset) == (
        "python",
        "swebench",
        "test",
        "d",
    )
    assert task.image == f"swebench/sweb.eval.x86_64.{instance_id.replace('__', '_1776_')}:latest"
    assert task.extra == {"eval_type": "pass_and_fail"}
    assert task.eval_script == (SWEBENCH / "expected" / f"{instance_id}.eval.sh").read_text()


@pytest.mark.parametrize("instance_id", ROW_IDS)
def test_eval_script_is_swebench_4_1_0s_byte_for_byte(instance_id):
    # 4.1.0 already prints the >>>>> Start/End Test Output markers 5.x's get_logs_eval needs: no differences.
    expected = (SWEBENCH / "expected" / f"{instance_id}.eval.sh").read_text()
    assert grading_recipe(genuine_row(instance_id)).eval_script == expected


@pytest.mark.parametrize("instance_id", ROW_IDS)
def test_log_parser_is_the_one_swebench_4_1_0_maps_the_repo_to(instance_id):
    # 5.x's registry names one function several ways (parse_log_scikit is 4.1.0's parse_log_pytest_v2): compare the
    # functions, and check the name is one the harness accepts.
    ours = grading_recipe(genuine_row(instance_id)).log_parser
    assert PARSER_REGISTRY[ours] is PARSER_REGISTRY[EXPECTED_PARSERS["log_parser"][instance_id]]
    assert EXPECTED_PARSERS["swebench"] == "4.1.0"


@pytest.mark.parametrize("instance_id", ROW_IDS)
def test_swebench_5_harness_takes_the_fetched_task_as_graded(genuine_tasks, instance_id):
    task = genuine_tasks[instance_id]
    (harness_row,) = harness.swebench_rows([task])
    spec = make_test_spec(harness_row)
    assert spec.log_parser == task.log_parser and spec.FAIL_TO_PASS == task.fail_to_pass
    # 5.x runs the row's script as it is, plus the line that records the test command's exit code.
    ours = [
        line
        for line in task.eval_script.strip().split("\n")
        if line not in ("#!/bin/bash", "set -uxo pipefail")
    ]
    assert [line for line in spec.eval_script_list if "SWEBENCH_TEST_EXIT_CODE" not in line] == ours


def test_row_with_its_own_eval_script_keeps_it(tmp_path):
    # A swebench 5.x-shape row: a genuine classic row plus the three columns 5.x rows carry (their values here are
    # stand-ins, not SWE-bench's).
    own = "#!/bin/bash\n: '>>>>> Start Test Output'\npytest -rA\n: '>>>>> End Test Output'\n"
    row = genuine_row("pytest-dev__pytest-11143", eval_script=own, log_parser="parse_log_pytest_v2",
                      image="registry/img:1")  # fmt: skip
    assert fetch(tmp_path, [row], "swe-bench").returncode == 0
    (task,) = read_tasks(tmp_path / "tasks.jsonl")
    assert (task.eval_script, task.log_parser, task.image) == (own, "parse_log_pytest_v2", "registry/img:1")


def test_ungradable_row_is_a_fetch_error_or_a_skip_with_the_reason(tmp_path):
    # A genuine row moved to a repository no spec table knows.
    row = genuine_row("django__django-16255", repo="owner/project", instance_id="owner__project-7")
    result = fetch(tmp_path, [row], "swe-bench")
    assert result.returncode == 1
    assert "owner__project-7" in result.stderr and "no test spec for owner/project" in result.stderr
    assert (
        fetch(tmp_path, [row, genuine_row("django__django-16255")], "swe-bench", on_bad_row="skip").returncode
        == 0
    )
    (skipped,) = [json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert skipped["instance_id"] == "owner__project-7" and "cannot be graded" in skipped["reason"]
    assert [t.instance_id for t in read_tasks(tmp_path / "tasks.jsonl")] == ["django__django-16255"]


def test_swe_gym_spec_tables_are_the_forks():
    fork = json.loads((SWE_GYM / "expected" / "fork_specs.json").read_text())
    ours = {repo.lower(): {v: spec for versions, spec in groups for v in versions.split()}
            for repo, groups in SWE_GYM_SPECS.items()}  # fmt: skip
    assert ours == fork["specs"]
    for repo, parser in fork["log_parser"].items():
        # The fork's pydantic parser is not in swebench's registry; SWE_GYM_PARSERS says which one stands in.
        expected = "parse_log_pytest_v2" if parser == "parse_log_pytest_pydantic" else parser
        assert SWE_GYM_PARSERS[repo] == expected and expected in PARSER_REGISTRY


def swe_gym_row() -> dict:
    # Made up: no genuine SWE-Gym row is vendored (see tests/fixtures/swe_gym/PROVENANCE.md). A genuine SWE-bench
    # row moved to moto, whose spec and image naming are SWE-Gym's.
    test_patch = (
        "diff --git a/tests/test_s3/test_s3.py b/tests/test_s3/test_s3.py\n"
        "--- a/tests/test_s3/test_s3.py\n+++ b/tests/test_s3/test_s3.py\n@@ -1 +1,2 @@\n x = 1\n+y = 2\n"
    )
    return genuine_row(
        "django__django-16255",
        repo="getmoto/moto",
        instance_id="getmoto__moto-0001",
        version="4.1",
        test_patch=test_patch,
        FAIL_TO_PASS=["tests/test_s3/test_s3.py::test_x"],
        PASS_TO_PASS=[],
    )


def test_swe_gym_row_uses_swe_gym_specs_and_image(tmp_path):
    assert fetch(tmp_path, [swe_gym_row()], "swe-gym").returncode == 0
    (task,) = read_tasks(tmp_path / "tasks.jsonl")
    assert task.image == "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-0001:latest"
    assert task.log_parser == "parse_log_pytest" and "make init" in task.eval_script
    assert "pytest -n0 -rA tests/test_s3/test_s3.py" in task.eval_script


def test_swebench_harness_refuses_a_task_without_eval_script():
    with pytest.raises(harness.HarnessError, match="no eval_script"):
        harness.swebench_rows([replace(django_task(), eval_script=None)])


def django_task():
    from repairrl.data.loaders import DatasetSpec, load_tasks

    return load_tasks(
        DatasetSpec(name="d", format="swe-bench"), rows=[genuine_row("django__django-16255")]
    ).tasks[0]


RECORDED_RUNS = ["django__django-13670", "django__django-11138"]


@pytest.mark.parametrize("instance_id", RECORDED_RUNS)
def test_recorded_django_log_grades_as_the_harness_graded_it(instance_id):
    # A swebench harness run's own test output and report (tests/fixtures/swebench/logs): the parser our
    # recipe names for django rows reads the log into the statuses that report was computed from.
    run = SWEBENCH / "logs" / instance_id
    report = json.loads((run / "report.json").read_text())[instance_id]
    parser = PARSER_REGISTRY[django_task().log_parser]
    statuses = parser((run / "test_output.txt").read_text(), None)
    tests = {kind: report["tests_status"][kind]["success"] + report["tests_status"][kind]["failure"]
             for kind in ("FAIL_TO_PASS", "PASS_TO_PASS")}  # fmt: skip
    graded = get_eval_tests_report(statuses, tests)
    assert graded == report["tests_status"]
    assert (get_resolution_status(graded) == ResolvedStatus.FULL.value) == report["resolved"]


def test_recorded_django_log_is_not_read_by_pytest_parser():
    log = (SWEBENCH / "logs" / "django__django-11138" / "test_output.txt").read_text()
    statuses = PARSER_REGISTRY["parse_log_django"](log, None)
    assert {"PASSED", "FAILED"} <= set(statuses.values())
    assert statuses["test_query_convert_timezones (timezones.tests.NewDatabaseTests)"] == "FAILED"
    assert not set(parse_log_pytest(log, None)) & set(statuses)


def test_recorded_eval_script_is_ours_but_for_the_markers_and_the_diff_line():
    # The script swebench's harness wrote for that run (before 4.x): same base commit and test patch give ours,
    # which adds 4.1.0's output markers and its `git -c core.fileMode=false diff`. django 3.0-3.2 share one spec.
    recorded = (SWEBENCH / "logs" / "django__django-13670" / "eval.sh").read_text()
    base_commit = re.search(r"^git diff (\w+)$", recorded, re.MULTILINE).group(1)
    test_patch = re.search(r"<<'EOF_114329324912'\n(.*)\nEOF_114329324912\n", recorded, re.DOTALL).group(1)
    ours = make_eval_script("django/django", base_commit, test_patch, eval_spec("django/django", "3.2"))
    ours = ours.replace(f"git -c core.fileMode=false diff {base_commit}", f"git diff {base_commit}")
    assert [line for line in ours.split("\n") if ">>>>> " not in line] == recorded.split("\n")


def test_resolved_on_swebench_tasks_is_refused_for_the_local_grader():
    task = django_task()
    with pytest.raises(RewardNotComputableError, match="drop 'resolved'"):
        check_rewards_computable({"similarity": 0.2, "resolved": 1.0}, "repo_repair", [task], "bwrap")
    check_rewards_computable({"similarity": 1.0, "resolved": 0.0}, "repo_repair", [task], "bwrap")


def test_grpo_main_stops_before_the_model_loads(tmp_path, monkeypatch, capsys):
    pytest.importorskip("trl")
    from repairrl.data.loaders import DatasetSpec, load_tasks
    from repairrl.grpo import train
    from repairrl.tasks import write_tasks

    tasks = load_tasks(DatasetSpec(name="gym", format="swe-gym", split="train"), rows=[swe_gym_row()]).tasks
    write_tasks(tmp_path / "tasks.jsonl", tasks)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(train, "load_for_training", no_model)
    code = train.main(["--model", str(tmp_path), "--tasks", str(tmp_path / "tasks.jsonl"), "--out",
                       str(tmp_path / "out"), "--rewards", "resolved=1.0", "--report-to", "none"])  # fmt: skip
    assert code == 1
    error = capsys.readouterr().err
    assert "reward 'resolved' cannot be computed for 1 of 1 tasks (getmoto__moto-0001)" in error
    assert "runs only pytest and junit4 tests" in error
