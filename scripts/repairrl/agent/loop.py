"""The agent loop: the model reads the issue, calls tools until it answers without one, and its edits are the diff.

One episode = one task, one sandboxed working copy, one model session. The record it returns serves SFT data
generation (messages), GRPO (token ids, loss mask, logprobs) and evaluation (the final diff) alike.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from repairrl.agent.parsing import parse_tool_calls
from repairrl.agent.tools import TOOL_SCHEMAS, Workspace, call_tool
from repairrl.models.backends import ChatBackend, EndpointUnavailableError, ModelError
from repairrl.repos import WorktreeDiffError, snapshot_git_dir, worktree_diff
from repairrl.sandbox.base import Sandbox, SandboxError, SandboxLimitError
from repairrl.tasks import Task
from repairrl.trajectories import trajectory_record

STOP_REASONS = ("no_tool_call", "max_tool_calls", "max_tokens", "timeout", "model_error", "sandbox_limit", "error")

SYSTEM_PROMPT = """\
You are a software engineer fixing an issue in the repository at {repo_path}, the working directory of your shell.

You have two tools:
- shell(cmd): run a bash command in the repository; you see its output and exit code.
- apply_patch(path, search, replace): replace the text `search`, which must occur exactly once in the file at \
`path` (relative to the repository), with `replace`. An empty `search` creates a new file.

Call a tool by writing a JSON object inside <tool_call></tool_call> tags, one block per call, for example:
<tool_call>{{"name": "shell", "arguments": {{"cmd": "grep -rn 'def parse' ."}}}}</tool_call>
<tool_call>{{"name": "apply_patch", "arguments": {{"path": "pkg/util.py", "search": "return a - b", \
"replace": "return a + b"}}}}</tool_call>

Find the cause of the issue, fix it with apply_patch, and run the tests to check the fix. When you are done, \
answer without a tool call: your changes to the repository are the result."""


@dataclass(frozen=True)
class AgentConfig:
    max_tool_calls: int = 30
    max_tokens: int = 32768  # the conversation's length in tokens: prompt, tool results and everything generated
    timeout_s: float = 1800.0  # wall time of one episode, model and tools together
    command_timeout_s: float = 120.0
    repo_path: str = "/repo"  # where the sandbox shows the working copy, if the sandbox does not say
    max_diff_bytes: int = 2_000_000  # a longer final diff is no answer (a generated file, a dump): recorded as such
    system_prompt: str = SYSTEM_PROMPT  # formatted with repo_path


def _limit_reached(started: float, config: AgentConfig, tool_calls: int) -> str | None:
    if time.monotonic() - started >= config.timeout_s:
        return "timeout"
    if tool_calls >= config.max_tool_calls:
        return "max_tool_calls"
    return None


def run_episode(task: Task, backend: ChatBackend, sandbox: Sandbox, workdir: Path, config: AgentConfig = AgentConfig(),
                sample: int = 0, seed: int | None = None) -> dict:
    """Run one episode of `task` in `sandbox` (whose working copy is `workdir` on the host); returns its record.

    `workdir` must be as the host made it (no command run in it yet): its git metadata is copied out first, and
    the final diff is computed through that copy, so nothing the agent writes into `.git` reaches host git.
    """
    started = time.monotonic()
    workdir = Path(workdir)
    host_metadata = Path(tempfile.mkdtemp(prefix=".repairrl-base-git-", dir=workdir.parent))
    try:
        git_dir = snapshot_git_dir(workdir, host_metadata / "git")
        return _run_episode(task, backend, sandbox, workdir, git_dir, config, sample, seed, started)
    finally:
        shutil.rmtree(host_metadata, ignore_errors=True)


def _run_episode(task: Task, backend: ChatBackend, sandbox: Sandbox, workdir: Path, git_dir: Path,
                 config: AgentConfig, sample: int, seed: int | None, started: float) -> dict:
    # Backends say where they show the working copy (bwrap: /repo; unsafe-local: its host path).
    repo_path = getattr(sandbox, "mount_point", None) or config.repo_path
    workspace = Workspace(sandbox, workdir, repo_path)
    messages = [
        {"role": "system", "content": config.system_prompt.format(repo_path=repo_path)},
        {"role": "user", "content": task.problem_statement},
    ]
    session = backend.start_session(tools=TOOL_SCHEMAS, seed=seed)
    tool_log: list[dict] = []
    model_s = tool_s = 0.0
    context_tokens = completion_tokens = turns = 0
    stop_reason, error = None, None
    executed = 0  # tool calls that ran or were refused as malformed: what max_tool_calls counts
    try:
        while stop_reason is None:
            if time.monotonic() - started >= config.timeout_s:
                stop_reason = "timeout"
                break
            if context_tokens >= config.max_tokens:
                stop_reason = "max_tokens"
                break
            tick = time.monotonic()
            try:
                turn = session.generate(messages, max_new_tokens=config.max_tokens - context_tokens)
            except EndpointUnavailableError:
                raise  # the server is gone: not this episode's result (the caller reruns it)
            except ModelError as model_error:
                stop_reason, error = "model_error", str(model_error)
                break
            model_s += time.monotonic() - tick
            turns += 1
            context_tokens, completion_tokens = turn.context_tokens, completion_tokens + turn.completion_tokens
            # Whatever bytes the model produced, the record holds text that can be written (lone surrogates -> ?).
            content = turn.content.encode("utf-8", errors="replace").decode("utf-8")
            assistant = {"role": "assistant", "content": content}
            if turn.tool_calls:
                assistant["tool_calls"] = turn.tool_calls
            messages.append(assistant)
            calls = parse_tool_calls(content, turn.tool_calls)
            if not calls:
                stop_reason = "max_tokens" if turn.finish_reason == "length" else "no_tool_call"
                break
            for call in calls:
                tick = time.monotonic()
                limit = stop_reason or _limit_reached(started, config, executed)
                if limit:
                    # Every call gets an answer, so the conversation stays well-formed; none of these runs.
                    stop_reason = limit
                    workspace.stats.over_limit_calls += 1
                    output, failed = f"Error: not run: the episode has ended ({limit})", True
                elif call.error:
                    executed += 1
                    workspace.stats.invalid_calls += 1
                    output, failed = f"Error: {call.error}", True
                else:
                    remaining_s = config.timeout_s - (time.monotonic() - started)
                    workspace.command_timeout_s = max(1.0, min(config.command_timeout_s, remaining_s))
                    executed += 1
                    try:
                        output, failed = call_tool(workspace, call.name, call.arguments)
                    except SandboxError as sandbox_error:
                        # A total of the episode was reached (the working copy's size), or the sandbox cannot
                        # start again: no later command could run, so the episode ends here.
                        stop_reason = "sandbox_limit" if isinstance(sandbox_error, SandboxLimitError) else "error"
                        error = str(sandbox_error)
                        output, failed = f"Error: {sandbox_error}", True
                seconds = time.monotonic() - tick
                tool_s += seconds
                messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name or "", "content": output})
                tool_log.append({"turn": turns, "id": call.id, "name": call.name, "arguments": call.arguments,
                                 "error": call.error, "failed": failed, "output": output,
                                 "seconds": round(seconds, 4)})
            stop_reason = stop_reason or _limit_reached(started, config, executed)
    finally:
        session.close()
    diff_started = time.monotonic()
    diff = ""
    if stop_reason != "sandbox_limit":  # an oversized working copy is not diffed
        try:
            diff = worktree_diff(git_dir, workdir, task.base_commit)
        except WorktreeDiffError as diff_error:
            error = error or str(diff_error)
    diff_bytes = len(diff.encode("utf-8"))
    if diff_bytes > config.max_diff_bytes:
        error = error or (f"the final diff is {diff_bytes} bytes, over max_diff_bytes ({config.max_diff_bytes}): "
                          "recorded as no patch")
        diff = ""
    return trajectory_record(
        task, sample, seed, backend.model_name, stop_reason=stop_reason, error=error, messages=messages,
        tool_calls=tool_log, tool_stats=workspace.stats.to_record(), diff=diff, trace=session.trace,
        tokens={"context": context_tokens, "completion": completion_tokens, "turns": turns},
        timings={
            "model_s": round(model_s, 4),
            "tool_s": round(tool_s, 4),
            "command_s": round(workspace.command_seconds, 4),
            "diff_s": round(time.monotonic() - diff_started, 4),
            "total_s": round(time.monotonic() - started, 4),
        },
        # The system prompt is messages[0]; the mount point is the one the model was shown.
        config={**{k: v for k, v in asdict(config).items() if k != "system_prompt"}, "repo_path": repo_path},
    )
