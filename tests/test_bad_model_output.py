"""Bad input from the model: any bytes it produces become a tool error shown to it (and counted), the journal
always gets a record, and a torn journal line is skipped with a warning."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from repairrl.agent.run import journal_path, run_tasks
from repairrl.models.backends import OpenAIBackend, ScriptedBackend
from repairrl.records import read_journal, read_jsonl

from .test_agent import SubprocessSandbox, clone_worktree, hermes

LONE_SURROGATE_CALL = '<tool_call>{"name": "shell", "arguments": {"cmd": "echo \\ud800"}}</tool_call>'
PROBES = {
    "nul in a shell command": ([hermes("shell", cmd="echo a\0b")], "contains a NUL byte"),
    "nul in an apply_patch path": ([hermes("apply_patch", path="calc\0.py", search="", replace="x")],
                                   "contains a NUL byte"),
    "lone surrogate inside a tool call": ([LONE_SURROGATE_CALL], "is not valid Unicode text"),
}


def run(task, tmp_path: Path, script: list, backend=None, **config) -> tuple[dict, Path]:
    from repairrl.agent.loop import AgentConfig

    out = tmp_path / "trajectories.jsonl"
    summary = run_tasks([task], backend or ScriptedBackend(script), out, clone_worktree,
                        lambda workdir, t: SubprocessSandbox(workdir), config=AgentConfig(**config), progress=False,
                        work_root=tmp_path)
    assert summary["failed"] == 0
    (record,) = read_jsonl(out)
    return record, out


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_invalid_text_in_a_tool_call_is_a_counted_tool_error(buggy_repo, tmp_path, probe):
    _, task = buggy_repo
    script, message = PROBES[probe]
    record, out = run(task, tmp_path, [*script, hermes("shell", cmd="echo still here"), "done"])
    assert record["status"] == "ok" and record["stop_reason"] == "no_tool_call"
    first, second = record["tool_calls"]
    assert first["failed"] and message in first["output"]
    assert second["output"].startswith("still here")  # the episode went on
    assert record["tool_stats"]["failures"] == 1
    assert len(read_journal(journal_path(out))) == 1


def test_a_lone_surrogate_in_the_reply_is_recorded(buggy_repo, tmp_path):
    _, task = buggy_repo
    record, out = run(task, tmp_path, ["I think \ud800 this is done."])
    assert record["messages"][-1]["content"] == "I think ? this is done."
    assert read_journal(journal_path(out))[0]["instance_id"] == task.instance_id


def test_calls_beyond_the_limit_are_answered_not_run_and_counted(buggy_repo, tmp_path):
    _, task = buggy_repo
    reply = "".join(hermes("shell", cmd=f"echo {n} >> log.txt") for n in range(100))
    record, _ = run(task, tmp_path, [reply, "done"], max_tool_calls=30)
    assert record["stop_reason"] == "max_tool_calls"
    assert len(record["tool_calls"]) == 100  # every call has its answer in the conversation
    assert sum(1 for m in record["messages"] if m["role"] == "tool") == 100
    assert record["tool_stats"]["calls"] == 30 and record["tool_stats"]["over_limit_calls"] == 70
    assert all("not run: the episode has ended (max_tool_calls)" in c["output"] for c in record["tool_calls"][30:])
    assert record["diff"].endswith("\n+28\n+29\n")  # log.txt got the lines of the 30 calls that ran, no more


def test_a_journal_line_torn_inside_a_character_is_skipped_with_a_warning(buggy_repo, tmp_path):
    _, task = buggy_repo
    _, out = run(task, tmp_path, ["done"])
    journal = journal_path(out)
    torn = json.dumps({"instance_id": "x", "sample": 0, "text": "é"}, ensure_ascii=False).encode()
    with open(journal, "ab") as handle:
        handle.write(torn[: torn.index("é".encode()) + 1])  # cut between the two bytes of é
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable line"):
        assert [r["instance_id"] for r in read_journal(journal)] == [task.instance_id]
    with pytest.warns(RuntimeWarning):
        rerun, _ = run(task, tmp_path, ["done"])
    assert rerun["instance_id"] == task.instance_id


class InvalidUtf8Endpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose every reply carries bytes that are not UTF-8 inside its JSON."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        reply = {
            "id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "I fixed it BYTES. Done."}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }  # fmt: skip
        body = json.dumps(reply).encode().replace(b"BYTES", b"\xff\xfe")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_invalid_utf8_in_the_endpoints_reply_keeps_the_episode_and_its_conversation(buggy_repo, tmp_path):
    _, task = buggy_repo
    server = ThreadingHTTPServer(("127.0.0.1", 0), InvalidUtf8Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{server.server_port}/v1", model_name="m", max_retries=0)
        record, out = run(task, tmp_path, [], backend=backend)
    finally:
        server.shutdown()
    assert record["status"] == "ok" and record["stop_reason"] == "no_tool_call"
    assert record["messages"][-1]["content"] == "I fixed it \ufffd\ufffd. Done."
    assert read_journal(journal_path(out))[0]["instance_id"] == task.instance_id
