"""How SWE-bench and SWE-Gym tasks are graded: settled at fetch time, passed to swebench's harness, and refused
by the training stages where the local grader cannot compute the configured rewards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("swebench")

from repairrl.evaluate import harness
from repairrl.grading.rewards import RewardNotComputableError, check_rewards_computable
from repairrl.tasks import read_tasks
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.harness.log_parsers.python import parse_log_django, parse_log_pytest
from swebench.harness.utils import make_test_spec

ROOT = Path(__file__).resolve().parents[1]
BASE = "a" * 40
# A classic 12-column row's shape. The values are made up (no genuine rows are vendored yet, see the report);
# the test patch touches a django test module, so the directives and parser are django's.
TEST_PATCH = (
    "diff --git a/tests/utils_tests/test_dateparse.py b/tests/utils_tests/test_dateparse.py\n"
    "--- a/tests/utils_tests/test_dateparse.py\n+++ b/tests/utils_tests/test_dateparse.py\n"
    "@@ -1,2 +1,3 @@\n import unittest\n+import datetime\n \n"
)
GOLD = (
    "diff --git a/django/utils/dateparse.py b/django/utils/dateparse.py\n"
    "--- a/django/utils/dateparse.py\n+++ b/django/utils/dateparse.py\n"
    "@@ -1,2 +1,2 @@\n-import re\n+import re  # fixed\n \n"
)


def classic_row(**changes) -> dict:
    row = {
        "repo": "django/django", "instance_id": "django__django-0001", "base_commit": BASE, "patch": GOLD,
        "test_patch": TEST_PATCH, "problem_statement": "parse_duration() fails on negative durations",
        "hints_text": "", "created_at": "2019-02-16T07:44:50Z", "version": "3.0",
        "FAIL_TO_PASS": json.dumps(["test_negative (utils_tests.test_dateparse.DurationParseTests)"]),
        "PASS_TO_PASS": json.dumps(["test_days (utils_tests.test_dateparse.DurationParseTests)"]),
        "environment_setup_commit": "b" * 40,
    }  # fmt: skip
    return {**row, **changes}


def fetch(tmp_path: Path, rows: list[dict], fmt: str, **entry) -> subprocess.CompletedProcess:
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {"format": fmt, "source": {"path": str(source)}, **entry}
    return subprocess.run(
        [sys.executable, "-m", "repairrl.data.fetch", "--dataset", "d", "--spec", json.dumps(spec),
         "--out", str(tmp_path / "tasks.jsonl"), "--skipped", str(tmp_path / "skipped.jsonl")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip


def test_classic_row_gets_swebench_eval_script_and_django_parser(tmp_path):
    result = fetch(tmp_path, [classic_row()], "swe-bench")
    assert result.returncode == 0, result.stderr
    (task,) = read_tasks(tmp_path / "tasks.jsonl")
    row = classic_row()
    assert (task.repo, task.base_commit, task.gold_patch, task.test_patch) == (
        row["repo"], row["base_commit"], row["patch"], row["test_patch"])  # fmt: skip
    assert task.fail_to_pass == json.loads(row["FAIL_TO_PASS"]) and task.version == "3.0"
    assert task.test_framework == "swebench" and task.log_parser == "parse_log_django"
    assert task.image == "swebench/sweb.eval.x86_64.django_1776_django-0001:latest"
    script = task.eval_script
    assert "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 utils_tests.test_dateparse" in script
    assert script.index(": '>>>>> Start Test Output'") < script.index("runtests.py") < script.index(
        ": '>>>>> End Test Output'")  # fmt: skip
    assert f"git checkout {BASE} tests/utils_tests/test_dateparse.py" in script
    # swebench 5.x's own make_test_spec accepts the row the harness is given, and its script is ours (plus the
    # exit-code line it inserts), with the parser it looks up in its registry.
    (harness_row,) = harness.swebench_rows([task])
    spec = make_test_spec(harness_row)
    assert spec.log_parser in PARSER_REGISTRY and PARSER_REGISTRY[spec.log_parser] is parse_log_django
    ours = [line for line in script.strip().split("\n") if line not in ("#!/bin/bash", "set -uxo pipefail")]
    assert [line for line in spec.eval_script_list if "SWEBENCH_TEST_EXIT_CODE" not in line] == ours


def test_row_with_its_own_eval_script_keeps_it(tmp_path):
    own = "#!/bin/bash\n: '>>>>> Start Test Output'\npytest -rA\n: '>>>>> End Test Output'\n"
    row = classic_row(repo="owner/project", instance_id="owner__project-7", eval_script=own,
                      log_parser="parse_log_pytest", image="registry/img:1")  # fmt: skip
    assert fetch(tmp_path, [row], "swe-bench").returncode == 0
    (task,) = read_tasks(tmp_path / "tasks.jsonl")
    assert (task.eval_script, task.log_parser, task.image) == (own, "parse_log_pytest", "registry/img:1")


def test_ungradable_row_is_a_fetch_error_or_a_skip_with_the_reason(tmp_path):
    row = classic_row(repo="owner/project", instance_id="owner__project-7")
    result = fetch(tmp_path, [row], "swe-bench")
    assert result.returncode == 1
    assert "owner__project-7" in result.stderr and "no test spec for owner/project" in result.stderr
    assert fetch(tmp_path, [row, classic_row()], "swe-bench", on_bad_row="skip").returncode == 0
    (skipped,) = [json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert skipped["instance_id"] == "owner__project-7" and "cannot be graded" in skipped["reason"]
    assert [t.instance_id for t in read_tasks(tmp_path / "tasks.jsonl")] == ["django__django-0001"]


def swe_gym_row() -> dict:
    test_patch = ("diff --git a/tests/test_s3/test_s3.py b/tests/test_s3/test_s3.py\n"
                  "--- a/tests/test_s3/test_s3.py\n+++ b/tests/test_s3/test_s3.py\n@@ -1 +1,2 @@\n x = 1\n+y = 2\n")
    return classic_row(repo="getmoto/moto", instance_id="getmoto__moto-0001", version="4.1", test_patch=test_patch,
                       FAIL_TO_PASS=["tests/test_s3/test_s3.py::test_x"], PASS_TO_PASS=[])  # fmt: skip


def test_swe_gym_row_uses_swe_gym_specs_and_image(tmp_path):
    assert fetch(tmp_path, [swe_gym_row()], "swe-gym").returncode == 0
    (task,) = read_tasks(tmp_path / "tasks.jsonl")
    assert task.image == "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-0001:latest"
    assert task.log_parser == "parse_log_pytest" and "make init" in task.eval_script
    assert "pytest -n0 -rA tests/test_s3/test_s3.py" in task.eval_script


def test_swebench_harness_refuses_a_task_without_eval_script():
    from dataclasses import replace

    (task,) = [swebench_specs_task()]
    with pytest.raises(harness.HarnessError, match="no eval_script"):
        harness.swebench_rows([replace(task, eval_script=None)])


def swebench_specs_task():
    from repairrl.data.loaders import DatasetSpec, load_tasks

    return load_tasks(DatasetSpec(name="d", format="swe-bench"), rows=[classic_row()]).tasks[0]


DJANGO_LOG = """\
test_days (utils_tests.test_dateparse.DurationParseTests) ... ok
test_fractions_of_seconds (utils_tests.test_dateparse.DurationParseTests) ... ok
test_negative (utils_tests.test_dateparse.DurationParseTests) ... FAIL
test_parse_python_format (utils_tests.test_dateparse.DurationParseTests) ... ok
test_parse_date (utils_tests.test_dateparse.DateParseTests) ... ok

======================================================================
FAIL: test_negative (utils_tests.test_dateparse.DurationParseTests)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/testbed/tests/utils_tests/test_dateparse.py", line 112, in test_negative
    self.assertEqual(parse_duration(source), expected)
AssertionError: None != datetime.timedelta(days=-1, seconds=86399)

----------------------------------------------------------------------
Ran 5 tests in 0.002s

FAILED (failures=1)
"""


def test_django_log_is_read_by_django_parser_not_pytest_parser():
    spec = make_test_spec(harness.swebench_rows([swebench_specs_task()])[0])
    statuses = parse_log_django(DJANGO_LOG, spec)
    assert statuses["test_negative (utils_tests.test_dateparse.DurationParseTests)"] == "FAILED"
    assert statuses["test_days (utils_tests.test_dateparse.DurationParseTests)"] == "PASSED"
    assert sum(status == "PASSED" for status in statuses.values()) == 4
    # pytest's parser reads none of the tests (only the summary line "FAILED (failures=1)" as a bogus id).
    assert not set(parse_log_pytest(DJANGO_LOG, spec)) & set(statuses)


def test_resolved_on_swebench_tasks_is_refused_for_the_local_grader():
    task = swebench_specs_task()
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

    monkeypatch.setattr(train, "load_policy", no_model)
    code = train.main(["--model", str(tmp_path), "--tasks", str(tmp_path / "tasks.jsonl"), "--out",
                       str(tmp_path / "out"), "--rewards", "resolved=1.0", "--report-to", "none"])  # fmt: skip
    assert code == 1
    error = capsys.readouterr().err
    assert "reward 'resolved' cannot be computed for 1 of 1 tasks (getmoto__moto-0001)" in error
    assert "runs only pytest and junit4 tests" in error
