import json

import pytest
from repairrl.data.loaders import DatasetError, DatasetSpec, load_tasks
from repairrl.tasks import read_tasks, write_tasks

COMMIT = "a" * 40


def swe_bench_row(instance_id="owner__proj-1", **overrides):
    row = {
        "instance_id": instance_id,
        "repo": "owner/proj",
        "base_commit": COMMIT,
        "problem_statement": "Calling f() crashes.",
        "patch": "diff --git a/f.py b/f.py\n",
        "test_patch": "diff --git a/test_f.py b/test_f.py\n",
        # SWE-bench ships these as JSON-encoded strings.
        "FAIL_TO_PASS": json.dumps(["test_f.py::test_crash"]),
        "PASS_TO_PASS": json.dumps(["test_f.py::test_ok", "test_f.py::test_other"]),
        "version": "1.0",
        "created_at": "2024-01-01T00:00:00Z",
        "hints_text": "",
        "environment_setup_commit": COMMIT,
        # The new row shape (swebench 5.x): the row says how it is graded, as owner/proj has no swebench spec.
        "eval_script": "#!/bin/bash\npytest -rA test_f.py\n",
        "log_parser": "parse_log_pytest",
        "image": "example/owner-proj:1.0",
    }
    row.update(overrides)
    return row


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec_for(path, **kw):
    return DatasetSpec(name="verified", format="swe-bench", path=str(path), **kw)


def test_local_swe_bench_file_decodes_json_encoded_lists(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [swe_bench_row()])
    result = load_tasks(spec_for(path))
    (task,) = result.tasks
    assert task.fail_to_pass == ["test_f.py::test_crash"]
    assert task.pass_to_pass == ["test_f.py::test_ok", "test_f.py::test_other"]
    assert task.repo_url == "https://github.com/owner/proj.git"
    assert task.gold_patch.startswith("diff --git a/f.py")
    assert task.dataset == "verified"


def test_swe_gym_style_plain_lists_are_accepted(tmp_path):
    row = swe_bench_row(FAIL_TO_PASS=["t::a"], PASS_TO_PASS=[])
    path = write_rows(tmp_path / "rows.jsonl", [row])
    (task,) = load_tasks(DatasetSpec(name="gym", format="swe-gym", path=str(path))).tasks
    assert task.fail_to_pass == ["t::a"] and task.pass_to_pass == []


def test_parquet_file_loads_like_jsonl(tmp_path):
    import pandas as pd

    path = tmp_path / "rows.parquet"
    pd.DataFrame([swe_bench_row()]).to_parquet(path)
    (task,) = load_tasks(spec_for(path)).tasks
    assert task.instance_id == "owner__proj-1"


def test_missing_field_is_an_error_naming_row_and_field(tmp_path):
    bad = swe_bench_row("owner__proj-2")
    del bad["base_commit"]
    path = write_rows(tmp_path / "rows.jsonl", [swe_bench_row(), bad])
    with pytest.raises(DatasetError, match=r"row 1 \(owner__proj-2\): missing field 'base_commit'"):
        load_tasks(spec_for(path))


def test_missing_field_is_skipped_with_reason_when_config_allows(tmp_path):
    bad = swe_bench_row("owner__proj-2")
    del bad["problem_statement"]
    path = write_rows(tmp_path / "rows.jsonl", [swe_bench_row(), bad])
    result = load_tasks(spec_for(path, on_bad_row="skip"))
    assert [t.instance_id for t in result.tasks] == ["owner__proj-1"]
    (skipped,) = result.skipped
    assert skipped["instance_id"] == "owner__proj-2" and "problem_statement" in skipped["reason"]


def test_list_field_that_is_not_json_is_reported(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [swe_bench_row(FAIL_TO_PASS="[test_a")])
    with pytest.raises(DatasetError, match=r"field 'FAIL_TO_PASS' is a string but not JSON"):
        load_tasks(spec_for(path))


def test_malformed_commit_hash_fails_schema_check(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [swe_bench_row(base_commit="not-a-hash")])
    with pytest.raises(DatasetError, match=r"base_commit"):
        load_tasks(spec_for(path))


def test_filters_by_repo_id_and_limit(tmp_path):
    rows = [
        swe_bench_row("owner__proj-1"),
        swe_bench_row("other__lib-1", repo="other/lib"),
        swe_bench_row("owner__proj-2"),
        swe_bench_row("owner__proj-3"),
    ]
    path = write_rows(tmp_path / "rows.jsonl", rows)
    assert [t.instance_id for t in load_tasks(spec_for(path, repos=["other/lib"])).tasks] == ["other__lib-1"]
    picked = load_tasks(spec_for(path, instance_ids=["owner__proj-3", "owner__proj-1"])).tasks
    assert [t.instance_id for t in picked] == ["owner__proj-1", "owner__proj-3"]
    assert len(load_tasks(spec_for(path, limit=2)).tasks) == 2


def test_duplicate_instance_is_an_error_or_skipped_as_configured(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [swe_bench_row(), swe_bench_row()])
    with pytest.raises(DatasetError, match=r"row 1 \(owner__proj-1\): duplicate instance_id 'owner__proj-1'"):
        load_tasks(spec_for(path))
    result = load_tasks(spec_for(path, on_bad_row="skip"))
    assert len(result.tasks) == 1 and result.skipped[0]["reason"] == "duplicate instance_id"


def test_a_bad_line_of_a_local_file_is_named_or_skipped_as_configured(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = json.dumps(swe_bench_row())
    path.write_text(good + "\n" + good[: len(good) // 2] + "\n")  # the last line cut off by a kill
    with pytest.raises(DatasetError, match=r"rows\.jsonl, line 2: "):
        load_tasks(spec_for(path))
    result = load_tasks(spec_for(path, on_bad_row="skip"))
    assert len(result.tasks) == 1 and result.skipped[0]["row"] == 2 and "line 2" in result.skipped[0]["reason"]


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_tasks(spec_for(tmp_path / "nope.jsonl"))


def gitbug_row():
    def run(results):
        return [{"tests": [{"classname": "org.x.WrapTest", "name": n, "results": [{"result": r, "message": m}]}
                           for n, r, m in results]}]

    return {
        "repository": "davidmoten/word-wrap",
        "clone_url": "https://github.com/davidmoten/word-wrap.git",
        "commit_hash": "e59eedf0bac7d5ca7ee0062f3816c7ac5c3de4e0",
        "previous_commit_hash": "930eb5e91a40f00a6782e939606d6c1d397629e0",
        "commit_timestamp": "2023-01-31T22:16:05Z",
        "bug_patch": "diff --git a/W.java b/W.java\n",
        "test_patch": "diff --git a/WT.java b/WT.java\n",
        "non_code_patch": "",
        "actions_runs": [
            run([("testOld", "Passed", "")]),
            run([("testOld", "Passed", ""), ("testStatelessness", "Failure", "expected:<hello> but was:<hi>"),
                 ("testSkipped", "Skipped", "")]),
            run([("testOld", "Passed", ""), ("testStatelessness", "Passed", ""), ("testSkipped", "Skipped", "")]),
        ],
    }


def test_gitbug_java_rows_map_to_tasks(tmp_path):
    path = write_rows(tmp_path / "bugs.jsonl", [gitbug_row()])
    (task,) = load_tasks(DatasetSpec(name="gitbug", format="gitbug-java", path=str(path))).tasks
    assert task.instance_id == "davidmoten-word-wrap-e59eedf0bac7"
    assert task.base_commit == "930eb5e91a40f00a6782e939606d6c1d397629e0"
    assert task.fail_to_pass == ["org.x.WrapTest#testStatelessness"]
    assert task.pass_to_pass == ["org.x.WrapTest#testOld"]
    assert "expected:<hello>" in task.problem_statement
    assert task.language == "java" and task.test_framework == "gitbug-java"


def test_task_table_round_trips(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [swe_bench_row()])
    tasks = load_tasks(spec_for(path)).tasks
    write_tasks(tmp_path / "tasks.jsonl", tasks)
    assert read_tasks(tmp_path / "tasks.jsonl") == tasks


@pytest.mark.parametrize(("field", "value", "message"), [
    ("base_commit", "abc1234", r"field 'base_commit': 'abc1234' does not match"),
    ("FAIL_TO_PASS", [1, 2], r"field 'FAIL_TO_PASS' must be a list of test ids \(strings\), but item 0 is int 1"),
])
def test_a_bad_field_is_named_with_what_was_expected(tmp_path, field, value, message):
    path = write_rows(tmp_path / "rows.jsonl", [{**swe_bench_row(), field: value}])
    with pytest.raises(DatasetError, match=message):
        load_tasks(spec_for(path))
