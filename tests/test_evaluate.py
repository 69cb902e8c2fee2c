"""Evaluation: predictions (read back by swebench), shards and resume, harness backends, GitBug-Java, vLLM lifecycle."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from repairrl.evaluate import gitbug, harness, predictions, serve
from repairrl.evaluate.__main__ import main as evaluate_main
from repairrl.records import append_jsonl, read_jsonl
from repairrl.tasks import Task, write_tasks


def make_task(instance_id: str, **overrides) -> Task:
    fields = {
        "instance_id": instance_id,
        "dataset": "fixture",
        "repo": "owner/project",
        "repo_url": "https://example.invalid/owner/project.git",
        "base_commit": "a" * 40,
        "problem_statement": "it is broken",
        "gold_patch": "",
        "test_patch": "",
        "fail_to_pass": ["tests/test_x.py::test_fixed"],
        "pass_to_pass": ["tests/test_x.py::test_kept"],
    }
    return Task(**{**fields, **overrides})


TASKS = [make_task(f"owner__project-{n}") for n in range(1, 9)]
PATCH = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"


# --- predictions ---


def test_predictions_are_read_back_by_swebench_loader(tmp_path):
    from swebench.harness.utils import get_predictions_from_file

    trajectories = [
        {"instance_id": TASKS[0].instance_id, "final_diff": PATCH, "stop_reason": "final_answer"},
        {"instance_id": TASKS[1].instance_id, "stop_reason": "max_turns"},  # no diff: an empty patch
    ]
    path = tmp_path / "predictions.jsonl"
    predictions.write_predictions(path, predictions.predictions_for(TASKS, trajectories, "org/model"))
    loaded = get_predictions_from_file(str(path), "unused", "test")
    assert loaded == [
        {"instance_id": TASKS[0].instance_id, "model_name_or_path": "org/model", "model_patch": PATCH},
        {"instance_id": TASKS[1].instance_id, "model_name_or_path": "org/model", "model_patch": ""},
    ]


def test_shards_partition_the_tasks_deterministically():
    shards = [predictions.select_shard(TASKS, i, 3) for i in range(3)]
    assert sorted(t.instance_id for s in shards for t in s) == sorted(t.instance_id for t in TASKS)
    assert shards == [predictions.select_shard(list(reversed(TASKS)), i, 3)[::-1] for i in range(3)]
    with pytest.raises(predictions.ShardError):
        predictions.select_shard(TASKS, 3, 3)


def test_resumed_shard_skips_finished_tasks(tmp_path):
    journal, out = tmp_path / "trajectories.jsonl", tmp_path / "predictions.jsonl"
    append_jsonl(journal, {"instance_id": TASKS[0].instance_id, "final_diff": PATCH})
    with open(journal, "a") as handle:
        handle.write('{"instance_id": "torn')  # a line cut by a killed writer
    asked: list[str] = []

    def run_episodes(pending):
        for task in pending:
            asked.append(task.instance_id)
            yield {"instance_id": task.instance_id, "final_diff": ""}

    summary = predictions.run_shard(TASKS[:3], run_episodes, journal, out, "m")
    assert asked == [t.instance_id for t in TASKS[1:3]]
    assert summary["skipped_finished"] == 1 and summary["ran"] == 2 and summary["missing"] == []
    assert [p["model_patch"] for p in read_jsonl(out)] == [PATCH, "", ""]
    asked.clear()
    predictions.run_shard(TASKS[:3], run_episodes, journal, out, "m")
    assert asked == []


def test_predictions_cli_merges_shard_trajectories(tmp_path):
    write_tasks(tmp_path / "tasks.jsonl", TASKS[:2])
    for n, task in enumerate(TASKS[:2]):
        append_jsonl(
            tmp_path / f"trajectories-{n}.jsonl", {"instance_id": task.instance_id, "model_patch": PATCH}
        )
    args = ["predictions", "--tasks", str(tmp_path / "tasks.jsonl"), "--model-name", "m", "--out"]
    args += [str(tmp_path / "p.jsonl"), "--trajectories", *(str(p) for p in sorted(tmp_path.glob("traj*")))]
    assert evaluate_main(args) == 0
    assert [p["instance_id"] for p in read_jsonl(tmp_path / "p.jsonl")] == [t.instance_id for t in TASKS[:2]]


# --- swebench backend ---


def test_swebench_command_line():
    command = harness.swebench_command(
        "data.jsonl", "preds.jsonl", "run1", "reports", max_workers=6, timeout_s=1800, python="python"
    )
    assert command == [
        "python", "-m", "swebench.harness.run_evaluation", "-d", "data.jsonl", "-s", "test", "-p", "preds.jsonl",
        "-id", "run1", "--max_workers", "6", "-t", "1800", "--report_dir", "reports",
    ]  # fmt: skip
    assert "--namespace" not in command and "--cache_level" not in command


def _swebench_fixture_run(root: Path, model: str, run_id: str) -> None:
    """What swebench's harness leaves behind: logs under its cwd, the summary under --report_dir."""
    model_dir = root / "logs" / "run_evaluation" / run_id / model.replace("/", "__")
    for instance_id, resolved in ((TASKS[0].instance_id, True), (TASKS[1].instance_id, False)):
        (model_dir / instance_id).mkdir(parents=True)
        report = {instance_id: {"patch_is_None": False, "patch_exists": True, "resolved": resolved}}
        (model_dir / instance_id / "report.json").write_text(json.dumps(report))
        (model_dir / instance_id / "test_output.txt").write_text("log")
    (root / "reports").mkdir()
    summary = {"resolved_ids": [TASKS[0].instance_id], "empty_patch_ids": [], "total_instances": 3}
    (root / "reports" / f"{model.replace('/', '__')}.{run_id}.json").write_text(json.dumps(summary))


def test_swebench_outputs_are_located_by_glob_and_collected(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    _swebench_fixture_run(work, "org/model", "run1")
    found = harness.locate_swebench_reports(work, "run1", "org/model")
    assert sorted(found) == [TASKS[0].instance_id, TASKS[1].instance_id]
    assert harness.locate_swebench_reports(work, "other-run") == {}
    summary_path = harness.locate_swebench_summary([work / "reports", work], "run1", "org/model")
    assert summary_path == work / "reports" / "org__model.run1.json"
    preds = [{"instance_id": TASKS[0].instance_id, "model_name_or_path": "org/model", "model_patch": PATCH}]
    summaries = harness.collect_swebench_run(work, "run1", preds, out)
    assert summaries["org/model"]["resolved_ids"] == [TASKS[0].instance_id]
    assert (out / "org__model" / TASKS[1].instance_id / "report.json").is_file()
    assert (out / "org__model.run1.json").is_file()


# --- apptainer backend ---


def test_apptainer_command_runs_the_instance_image_confined(tmp_path):
    assert (
        harness.instance_image("django__django-11099")
        == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    )
    command = harness.apptainer_command(harness.instance_image("django__django-11099"), tmp_path)
    assert command[:2] == ["apptainer", "exec"]
    for flag in ("--writable-tmpfs", "--cleanenv", "--containall"):
        assert flag in command
    assert command[command.index("--pwd") + 1] == "/testbed"
    assert command[command.index("--bind") + 1] == f"{tmp_path}:/repairrl"
    assert "docker://swebench/sweb.eval.x86_64.django_1776_django-11099:latest" in command
    script = harness.apptainer_script()
    assert script.index("git apply --verbose /repairrl/patch.diff") < script.index(
        "/bin/bash /repairrl/eval.sh"
    )


SWEBENCH_TASK = make_task(
    "owner__project-1",
    eval_script="#!/bin/bash\ncd /testbed\necho '>>>>> Start Test Output'\npytest -rA\necho '>>>>> End Test Output'\n",
    log_parser="parse_log_pytest",
    test_framework="swebench",
    version="1.0",
)


@pytest.mark.parametrize(
    ("statuses", "resolved"),
    [
        ({"test_fixed": "PASSED", "test_kept": "PASSED"}, True),
        ({"test_fixed": "FAILED", "test_kept": "PASSED"}, False),
    ],
)
def test_container_log_is_graded_by_swebench(tmp_path, statuses, resolved):
    lines = [f"{status} tests/test_x.py::{name}" for name, status in statuses.items()]
    log = tmp_path / "test_output.txt"
    log.write_text(
        ">>>>> Applied Patch\n>>>>> Start Test Output\n" + "\n".join(lines) + "\n>>>>> End Test Output\n"
    )
    prediction = {"instance_id": SWEBENCH_TASK.instance_id, "model_name_or_path": "m", "model_patch": PATCH}
    outcome = harness.grade_container_log(SWEBENCH_TASK, prediction, log, timed_out=False, duration_s=1.0)
    assert outcome.resolved is resolved and outcome.status == ("resolved" if resolved else "unresolved")
    assert outcome.report[SWEBENCH_TASK.instance_id]["resolved"] is resolved
    log.write_text(">>>>> Patch Apply Failed\n")
    assert (
        harness.grade_container_log(SWEBENCH_TASK, prediction, log, False, 1.0).status == "patch_apply_failed"
    )


# --- GitBug-Java ---


def test_gitbug_command_lines(tmp_path):
    """`gitbug-java run WORKDIR [--act_cache_dir=DIR] [--timeout=MINUTES]`; tests/test_gitbug_java.py checks these
    against the real CLI's parameters."""
    config = gitbug.GitBugJavaConfig(root=tmp_path, act_cache_dir=tmp_path / "act-cache", timeout_s=600)
    assert gitbug.checkout_command(config, "owner-project-abc", tmp_path / "w") == [
        "gitbug-java", "checkout", "owner-project-abc", str(tmp_path / "w"),
    ]  # fmt: skip
    (tmp_path / "gitbug-java").write_text("#!/bin/sh\n")  # the checkout's own script wins over PATH
    assert gitbug.run_command(config, tmp_path / "w") == [
        str(tmp_path / "gitbug-java"), "run", str(tmp_path / "w"),
        f"--act_cache_dir={tmp_path / 'act-cache'}", "--timeout=10",
    ]  # fmt: skip


GITBUG_TASK = make_task(
    "owner-project-0123456789ab",
    fail_to_pass=["com.x.FooTest#fixed"],
    pass_to_pass=["com.x.FooTest#kept", "com.x.BarTest#other"],
    test_framework="gitbug-java",
)


def write_gitbug_results(workdir: Path, **fields) -> None:
    results = {"expected_tests": 3, "executed_tests": 3, "skipped_tests": 0, "passing_tests": 3, "failing_tests": 0,
               "unexpected_tests": [], "missing_tests": [], "failed_tests": [],
               "run_outputs": [{"workflow_name": "w", "stdout": "", "stderr": ""}], **fields}  # fmt: skip
    (workdir / ".gitbug-java").mkdir(exist_ok=True)
    (workdir / ".gitbug-java" / "test-results.json").write_text(json.dumps(results))


def test_gitbug_run_output_is_parsed_into_a_swebench_report(tmp_path):
    write_gitbug_results(tmp_path, passing_tests=2, failing_tests=1,
                         failed_tests=[{"classname": "com.x.FooTest", "name": "kept"}])  # fmt: skip
    result = gitbug.parse_run_output(tmp_path, exit_code=1)
    assert result.failed_tests == ["com.x.FooTest#kept"] and not result.all_passed
    assert gitbug.verdict(result) == ("unresolved", None)
    report = gitbug.instance_report(GITBUG_TASK, PATCH, result)[GITBUG_TASK.instance_id]
    assert report["resolved"] is False
    assert report["tests_status"]["FAIL_TO_PASS"] == {"success": ["com.x.FooTest#fixed"], "failure": []}
    assert report["tests_status"]["PASS_TO_PASS"]["failure"] == ["com.x.FooTest#kept"]
    write_gitbug_results(tmp_path)
    passing = gitbug.parse_run_output(tmp_path, exit_code=0)
    assert gitbug.verdict(passing) == ("resolved", None)
    assert gitbug.instance_report(GITBUG_TASK, PATCH, passing)[GITBUG_TASK.instance_id]["resolved"] is True


def test_gitbug_missing_tests_fail_and_a_contradicting_exit_code_is_an_error(tmp_path):
    write_gitbug_results(tmp_path, executed_tests=2, passing_tests=2, missing_tests=["com.x.BarTest#other"])
    result = gitbug.parse_run_output(tmp_path, exit_code=1)
    assert gitbug.verdict(result) == ("unresolved", "1 expected tests did not run")
    assert gitbug.per_test_statuses(GITBUG_TASK, result)["com.x.BarTest#other"] == "FAILED"
    status, reason = gitbug.verdict(gitbug.parse_run_output(tmp_path, exit_code=0))
    assert status == "error" and "exited 0" in reason


def test_gitbug_unreadable_results_raise(tmp_path):
    with pytest.raises(gitbug.GitBugJavaError, match="wrote no .gitbug-java/test-results.json"):
        gitbug.parse_run_output(tmp_path, exit_code=1)
    (tmp_path / ".gitbug-java").mkdir()
    (tmp_path / ".gitbug-java" / "test-results.json").write_text('{"expected_tests": 3}')
    with pytest.raises(gitbug.GitBugJavaError, match="lacks executed_tests"):
        gitbug.parse_run_output(tmp_path, exit_code=1)


def test_gitbug_harness_refuses_a_checkout_that_is_not_set_up(tmp_path):
    config = gitbug.GitBugJavaConfig(root=tmp_path)
    with pytest.raises(gitbug.GitBugJavaError, match="gitbug-java setup"):
        gitbug.run_gitbug_harness([GITBUG_TASK], [], tmp_path / "out", "r", config=config)


# --- local backend: the mini benchmark, graded for real ---


def test_local_harness_grades_mini_tasks(tmp_path):
    from repairrl.data.mini_benchmark import build_benchmark, load_tasks
    from repairrl.repos import cache_tasks

    build_benchmark(tmp_path / "mini")
    tasks = [t for t in load_tasks(tmp_path / "mini") if t.instance_id in ("mini__pager-1", "mini__jstats-1")]
    assert len(tasks) == 2 and {harness.default_backend(t) for t in tasks} == {"local"}
    cache_tasks(tasks, tmp_path / "cache", workers=2)
    preds = [
        {
            "instance_id": tasks[0].instance_id,
            "model_name_or_path": "base",
            "model_patch": tasks[0].gold_patch,
        },
        {"instance_id": tasks[1].instance_id, "model_name_or_path": "base", "model_patch": ""},
    ]
    write_tasks(tmp_path / "tasks.jsonl", tasks)
    predictions.write_predictions(tmp_path / "preds.jsonl", preds)
    args = [
        "harness",
        "--tasks",
        str(tmp_path / "tasks.jsonl"),
        "--predictions",
        str(tmp_path / "preds.jsonl"),
    ]
    args += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--sandbox", "unsafe"]
    assert evaluate_main([*args, "--run-id", "eval", "--timeout", "120"]) == 0
    summary = json.loads((tmp_path / "out" / "base.eval.json").read_text())
    assert summary["resolved_ids"] == [tasks[0].instance_id]
    assert summary["empty_patch_ids"] == [tasks[1].instance_id]
    assert (tmp_path / "out" / "base" / tasks[0].instance_id / "report.json").is_file()


# --- vLLM lifecycle ---


def test_vllm_serve_command_line():
    config = serve.VLLMServerConfig(model="Qwen/Qwen3-14B", port=8123, lora_modules={"grpo": "/ckpt/grpo"})
    command = serve.vllm_serve_command(config)
    assert command[:3] == ["vllm", "serve", "Qwen/Qwen3-14B"]
    assert command[command.index("--port") + 1] == "8123"
    assert command[command.index("--lora-modules") + 1] == "grpo=/ckpt/grpo" and "--enable-lora" in command
    assert "--enable-auto-tool-choice" in command
    assert command[command.index("--tool-call-parser") + 1] == "hermes"
    assert "--enable-lora" not in serve.vllm_serve_command(serve.VLLMServerConfig(model="m"))


HEALTH_SERVER = textwrap.dedent(
    """
    import http.server, sys, time
    time.sleep(0.5)  # a server that takes a moment to load its model
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass
    print("serving", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_managed_server_waits_for_health_and_stops(tmp_path):
    port = _free_port()
    command = [sys.executable, "-c", HEALTH_SERVER, str(port)]
    url = f"http://127.0.0.1:{port}"
    with serve.managed_server(
        command, url, tmp_path / "server.log", startup_timeout_s=20, stop_grace_s=5
    ) as base:
        assert base == url and serve.is_healthy(url)
    assert not serve.is_healthy(url)
    assert "serving" in (tmp_path / "server.log").read_text()


def test_server_that_exits_fails_with_its_log_tail(tmp_path):
    command = [sys.executable, "-c", "print('CUDA out of memory'); raise SystemExit(3)"]
    started = time.monotonic()
    server = serve.managed_server(command, f"http://127.0.0.1:{_free_port()}", tmp_path / "s.log", 20)
    with pytest.raises(serve.ServerStartError, match="CUDA out of memory"), server:
        pass
    assert time.monotonic() - started < 10


def test_server_that_never_gets_healthy_times_out(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        with pytest.raises(serve.ServerStartError, match="not healthy after"):
            serve.wait_until_healthy(f"http://127.0.0.1:{_free_port()}", process, timeout_s=1, poll_s=0.2)
    finally:
        assert serve.stop_process(process, grace_s=5) is not None


def test_apptainer_uses_a_pulled_sif_image_when_one_exists(tmp_path):
    from repairrl.evaluate import harness

    image = harness.instance_image("astropy__astropy-12907")
    config = harness.ApptainerConfig(sif_dir=tmp_path)
    assert harness.apptainer_command(image, tmp_path, config)[-3] == f"docker://{image}"
    pulled = tmp_path / "sweb.eval.x86_64.astropy_1776_astropy-12907_latest.sif"
    pulled.write_text("")
    assert harness.apptainer_command(image, tmp_path, config)[-3] == str(pulled)


# --- resuming a shard: only the same model, tasks and agent flags ---


@pytest.fixture
def cached_calc_task(buggy_repo, tmp_path) -> tuple[Path, Path]:
    """The buggy calc task, fetched into a repository cache as the cache rule does: (tasks.jsonl, cache)."""
    from repairrl.repos import cache_tasks

    from .conftest import git

    _, task = buggy_repo
    task = Task(**{**task.to_record(), "repo_url": f"file://{task.repo_url}"})
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=Path(task.repo_url.removeprefix("file://")))
    assert cache_tasks([task], tmp_path / "cache")[0]["status"] == "ok"
    write_tasks(tmp_path / "tasks.jsonl", [task])
    return tmp_path / "tasks.jsonl", tmp_path / "cache"


def prepared_model(root: Path, weights: str) -> Path:
    """A model directory as prepare_model or a training stage leaves it: model.json and the weights it names."""
    (root / "hf").mkdir(parents=True, exist_ok=True)
    (root / "hf" / "model.safetensors").write_text(weights)
    (root / "model.json").write_text(json.dumps({"name": root.name, "kind": "local", "path": "hf"}))
    return root


def run_eval_shard(tmp_path: Path, tasks: Path, cache: Path, model: Path, capsys) -> tuple[dict, str]:
    """`python -m repairrl.evaluate shard` as the evaluate_shard rule runs it, the model served by a stub vLLM."""
    from .test_gpu_path import stub_vllm

    argv = ["shard", "--tasks", str(tasks), "--model-name", "sft",
            "--trajectories", str(tmp_path / "journal" / "trajectories-0.jsonl"),
            "--out", str(tmp_path / "shards" / "predictions-0.jsonl"), "--serve-model", str(model),
            "--vllm-executable", stub_vllm(tmp_path), "--startup-timeout", "60",
            "--agent-log", str(tmp_path / "0.agent.log"), "--",
            "--cache-dir", str(cache), "--sandbox", "unsafe-local", "--unsafe", "--no-progress", "--max-tool-calls", "2"]
    capsys.readouterr()
    assert evaluate_main(argv) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.mark.slow
def test_a_retrained_models_shard_runs_its_episodes_again_and_the_same_model_resumes(
    cached_calc_task, tmp_path, capsys
):
    from repairrl.agent.run import journal_path
    from repairrl.records import read_journal

    tasks, cache = cached_calc_task
    model = prepared_model(tmp_path / "models" / "sft", "weights of the first training")
    journal = tmp_path / "journal" / "trajectories-0.jsonl"
    first, _ = run_eval_shard(tmp_path, tasks, cache, model, capsys)
    assert first["ran"] == 1 and len(read_journal(journal)) == 1
    assert journal.with_name(journal.name + ".fingerprint.json").is_file()

    again, _ = run_eval_shard(tmp_path, tasks, cache, model, capsys)  # the same inputs: nothing to redo
    assert again["ran"] == 0 and again["skipped_finished"] == 1

    # A killed shard: its episode never reached either journal. The same inputs resume and run it alone.
    agent_journal = journal_path(journal.with_name(f".agent-{journal.name}"))
    journal.write_text("")
    agent_journal.write_text("")
    resumed, err = run_eval_shard(tmp_path, tasks, cache, model, capsys)
    assert resumed["ran"] == 1 and "not resuming" not in err

    prepared_model(model.parent / "sft", "weights of the second training")  # same manifest, new weights
    retrained, err = run_eval_shard(tmp_path, tasks, cache, model, capsys)
    assert retrained["ran"] == 1 and retrained["skipped_finished"] == 0
    assert "evaluate shard 0: not resuming" in err and "input model" in err
    assert len(read_journal(journal)) == 1 and len(read_journal(agent_journal)) == 1

    other = prepared_model(tmp_path / "models" / "grpo", "weights of the second training")
    assert run_eval_shard(tmp_path, tasks, cache, other, capsys)[0]["ran"] == 1  # a different model directory
