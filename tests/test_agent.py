"""The agent's tools, tool-call parsing, loop and batch runner, with a scripted model and a subprocess shell."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Self

import pytest
from repairrl.agent.loop import AgentConfig, run_episode
from repairrl.agent.parsing import parse_tool_calls
from repairrl.agent.run import journal_path, run_tasks
from repairrl.agent.tools import ToolError, Workspace, apply_patch, command_kinds
from repairrl.models.backends import ScriptedBackend
from repairrl.records import read_journal, read_jsonl, validate_record
from repairrl.sandbox.base import CommandResult
from repairrl.tasks import Task

from .conftest import git, needs_bwrap


class SubprocessSandbox:
    """A bare `bash -c` in the working copy: enough to drive the real tools without a confinement."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)

    def run(self, command: str, timeout_s: float | None = None) -> CommandResult:
        started = time.monotonic()
        try:
            done = subprocess.run(["bash", "-c", command], cwd=self.workdir, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            return CommandResult(command, None, str(error.output or ""), time.monotonic() - started, timed_out=True)
        return CommandResult(command, done.returncode, done.stdout, time.monotonic() - started)

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def hermes(name: str, **arguments: str) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def episode(repo: Path, task: Task, script: list, **config) -> dict:
    record = run_episode(task, ScriptedBackend(script), SubprocessSandbox(repo), repo,
                         AgentConfig(repo_path="/repo", **config))
    validate_record(record, "trajectory")
    return record


def test_scripted_episode_fixes_the_bug_through_the_real_tools(buggy_repo):
    repo, task = buggy_repo
    script = [
        "Let me look.\n" + hermes("shell", cmd="cat calc.py"),
        {"content": "", "tool_calls": [{"id": "c7", "type": "function", "function": {
            "name": "shell", "arguments": json.dumps({"cmd": "grep -n 'a - b' calc.py | head -1"})}}]},
        hermes("apply_patch", path="calc.py", search="return a - b", replace="return a + b")
        + hermes("apply_patch", path="/repo/NOTES.md", search="", replace="fixed add\n"),
        "The bug is fixed.",
    ]
    record = episode(repo, task, script)
    assert record["stop_reason"] == "no_tool_call"
    assert "-    return a - b\n+    return a + b" in record["diff"]
    assert "new file mode" in record["diff"] and "+fixed add" in record["diff"]  # untracked file included
    assert "def add(a, b):" in record["messages"][3]["content"]  # cat's output was shown to the model
    assert record["messages"][5]["tool_call_id"] == "c7"
    stats = record["tool_stats"]
    assert stats["calls"] == 4 and stats["failures"] == 0
    assert stats["by_tool"]["shell"]["calls"] == 2 and stats["by_tool"]["apply_patch"]["calls"] == 2
    assert stats["command_kinds"]["cat"] == 1 and stats["command_kinds"]["grep"] == 1
    assert stats["command_kinds"]["other"] == 1  # head
    assert record["token_source"] == "text_only" and record["token_ids"] == []


def test_bad_tool_calls_become_errors_and_the_episode_continues(buggy_repo, tmp_path):
    repo, task = buggy_repo
    (tmp_path / "outside.py").write_text("return a - b\n")
    (repo / "escape.py").symlink_to(tmp_path / "outside.py")
    bad = [
        '<tool_call>{"name": "shell", "arguments": {"cmd": "ls"</tool_call>',  # malformed JSON
        hermes("browse", url="x"),  # unknown tool
        '<tool_call>{"name": "apply_patch", "arguments": {"path": "calc.py"}}</tool_call>',  # missing arguments
        hermes("shell", cmd="ls", cwd="/"),  # extra argument
        hermes("apply_patch", path="calc.py", search="return a * b", replace="x"),  # no match
        hermes("apply_patch", path="calc.py", search="return", replace="x"),  # ambiguous
        hermes("apply_patch", path="../outside.py", search="return a - b", replace="x"),  # ../ path
        hermes("apply_patch", path="/etc/hostname", search="a", replace="b"),  # absolute, outside
        hermes("apply_patch", path="escape.py", search="return a - b", replace="x"),  # symlink out
        hermes("shell", cmd="exit 3"),  # a failing command
    ]
    fix = hermes("apply_patch", path="calc.py", search="return a - b", replace="return a + b")
    record = episode(repo, task, [*bad, fix, "done"])
    results = [m["content"] for m in record["messages"] if m["role"] == "tool"]
    assert len(results) == len(bad) + 1
    for result in results[:9]:
        assert result.startswith("Error: "), result
    assert "not valid JSON" in results[0]
    assert "unknown tool 'browse'" in results[1]
    assert "missing argument(s) search, replace" in results[2]
    assert "unexpected argument(s) cwd" in results[3]
    assert "not found" in results[4]
    assert "occurs 2 times" in results[5]
    assert all("outside the repository" in r for r in results[6:9])
    assert "[exit code: 3]" in results[9]
    assert record["stop_reason"] == "no_tool_call"
    assert "+    return a + b" in record["diff"]
    assert (tmp_path / "outside.py").read_text() == "return a - b\n"
    stats = record["tool_stats"]
    assert stats["invalid_calls"] == 4 and stats["failures"] == 6 and stats["calls"] == 7
    assert sum(call["failed"] for call in record["tool_calls"]) == 10


def test_apply_patch_rejects_ambiguous_match_and_maps_the_mount_point(buggy_repo):
    repo, _ = buggy_repo
    workspace = Workspace(SubprocessSandbox(repo), repo, "/repo")
    with pytest.raises(ToolError, match="occurs 2 times"):
        apply_patch(workspace, "/repo/calc.py", "    return", "    yield")
    with pytest.raises(ToolError, match="inside .git"):
        apply_patch(workspace, ".git/config", "[core]", "[x]")
    assert apply_patch(workspace, "/repo/calc.py", "x + x", "2 * x").startswith("patched")
    assert "2 * x" in (repo / "calc.py").read_text()


def test_limits_end_the_episode_with_their_stop_reason(buggy_repo):
    repo, task = buggy_repo
    looping = [hermes("shell", cmd="ls")] * 10
    assert episode(repo, task, looping, max_tool_calls=3)["stop_reason"] == "max_tool_calls"
    assert episode(repo, task, looping, max_tokens=50)["stop_reason"] == "max_tokens"
    record = episode(repo, task, [hermes("shell", cmd="sleep 0.3")] * 10, timeout_s=0.5)
    assert record["stop_reason"] == "timeout" and record["tool_stats"]["calls"] <= 3


def test_command_kinds_come_from_each_pipeline_part():
    assert command_kinds("cat a.py | grep -n foo && python -m pytest -q; git diff") == [
        "cat", "grep", "pytest", "git"]
    assert command_kinds("FOO=1 timeout 10 python3 x.py || javac A.java") == ["python", "java"]
    assert command_kinds("find . -name '*.py' | xargs sed -n 1p") == ["find", "other"]
    assert command_kinds("cd /repo && mvn -q test && ls") == ["other", "java", "ls"]


def test_parse_tool_calls_reads_hermes_text_and_native_calls():
    (call,) = parse_tool_calls('x <tool_call>\n{"name": "shell", "arguments": {"cmd": "ls"}}\n</tool_call>')
    assert (call.name, call.arguments, call.error) == ("shell", {"cmd": "ls"}, None)
    native = [{"id": "a", "function": {"name": "shell", "arguments": '{"cmd": "pwd"}'}}]
    assert parse_tool_calls("<tool_call>ignored</tool_call>", native)[0].arguments == {"cmd": "pwd"}
    (cut,) = parse_tool_calls('<tool_call>{"name": "shell", "arguments": {"cmd": "ls"}}')  # unclosed at the end
    assert cut.error is None
    assert parse_tool_calls("no call here") == []
    assert parse_tool_calls(f"<think>maybe {hermes('shell', cmd='ls')}</think>No call.") == []
    assert parse_tool_calls('<tool_call>[1, 2]</tool_call>')[0].error
    assert "must be strings" in parse_tool_calls(hermes("shell", cmd=["ls"]))[0].error


def clone_worktree(task: Task, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", task.repo_url, str(dest)], check=True, capture_output=True)
    return dest


def test_run_tasks_records_failures_and_resume_skips_finished_pairs(buggy_repo, tmp_path):
    _, task = buggy_repo
    missing = Task(**{**task.to_record(), "instance_id": "gone-1", "repo_url": str(tmp_path / "nowhere")})
    backend = ScriptedBackend([hermes("apply_patch", path="calc.py", search="a - b", replace="a + b"), "done"])
    out = tmp_path / "out" / "trajectories.jsonl"

    def run(**kwargs) -> dict:
        return run_tasks([task, missing], backend, out, clone_worktree, lambda workdir, t: SubprocessSandbox(workdir),
                         samples=2, workers=3, progress=False, work_root=tmp_path, **kwargs)

    summary = run()
    assert summary == {"episodes": 4, "ran": 4, "skipped": 0, "failed": 2, "out": str(out)}
    records = read_jsonl(out)
    assert [(r["instance_id"], r["sample"]) for r in records] == [("calc-1", 0), ("calc-1", 1), ("gone-1", 0),
                                                                   ("gone-1", 1)]
    assert all("+    return a + b" in r["diff"] for r in records[:2])
    assert records[2]["status"] == "failed" and "CalledProcessError" in records[2]["error"]
    assert len(read_journal(journal_path(out))) == 4

    assert run()["ran"] == 0  # everything is in the journal
    assert len(read_journal(journal_path(out))) == 4
    assert run(retry_failed=True)["ran"] == 2  # only the failed pairs
    assert len(read_jsonl(out)) == 4
    assert not list(tmp_path.glob("repairrl-agent-*"))  # working copies cleaned up


@needs_bwrap
def test_scripted_episode_in_a_bwrap_sandbox_from_the_repository_cache(buggy_repo, tmp_path):
    from repairrl.repos import cache_tasks, materialize_worktree
    from repairrl.sandbox import make_sandbox

    _, task = buggy_repo
    task = Task(**{**task.to_record(), "repo_url": f"file://{task.repo_url}"})
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=Path(task.repo_url.removeprefix("file://")))
    cache = tmp_path / "cache"
    assert cache_tasks([task], cache)[0]["status"] == "ok"
    script = [hermes("shell", cmd="pwd && cat /repo/calc.py"),
              hermes("apply_patch", path="/repo/calc.py", search="a - b", replace="a + b"), "done"]
    out = tmp_path / "trajectories.jsonl"
    summary = run_tasks([task], ScriptedBackend(script), out,
                        lambda t, dest: materialize_worktree(cache, t, dest),
                        lambda workdir, t: make_sandbox("bwrap", workdir), progress=False, work_root=tmp_path)
    assert summary["failed"] == 0
    (record,) = read_jsonl(out)
    assert record["messages"][3]["content"].startswith("/repo\ndef add(a, b):")
    assert "You are a software engineer fixing an issue in the repository at /repo" in record["messages"][0]["content"]
    assert "+    return a + b" in record["diff"]
