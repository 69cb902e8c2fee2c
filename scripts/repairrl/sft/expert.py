"""Scripted expert: a demonstration episode per training task, built from its gold patch.

The embedded model (SmolLM2-135M) never reaches the SFT threshold on its own, so best-of-N rollouts would leave
the SFT set empty. The expert shows it the shape of a good episode instead, with the agent's two tools:

    user: the problem statement
    assistant: <tool_call>{"name": "shell", "arguments": {"cmd": "cat <path>"}}</tool_call>          (each file)
    tool: the file's text
    assistant: <tool_call>{"name": "apply_patch", "arguments": {"path": ..., "search": ..., "replace": ...}}
    tool: the edit's result                                                                          (each hunk)
    assistant: a short answer, no tool call: the episode ends

`search` is a gold hunk's old side (context and removed lines), `replace` its new side (context and added lines).

The episode's messages are assembled here, without a model or a sandbox, in the structure the agent's loop
records (hermes `<tool_call>` text in assistant content, tool results as `tool` messages), with the tool results
produced by the agent's own tool functions; `expert_tool_calls` is the same script as tool calls.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repairrl.records import write_jsonl
from repairrl.tasks import TASK_KINDS, Task, read_task_table

SHELL_TOOL = "shell"
APPLY_PATCH_TOOL = "apply_patch"
EXPERT_SOURCE = "expert_demo"


def agent_system_prompt(repo_path: str = "/repo") -> str:
    """The agent's own system prompt, as its loop formats it, so demos start like real episodes."""
    from repairrl.agent.loop import SYSTEM_PROMPT

    return SYSTEM_PROMPT.format(repo_path=repo_path)


class ExpertDemoError(ValueError):
    """A gold patch cannot be turned into a scripted demonstration (new, deleted or binary file, bad hunk)."""


@dataclass(frozen=True)
class HunkEdit:
    """One gold hunk as an `apply_patch` call."""

    path: str
    search: str
    replace: str


@dataclass(frozen=True)
class FileEdits:
    path: str
    hunks: tuple[HunkEdit, ...]


def gold_edits(gold_patch: str) -> list[FileEdits]:
    """The gold patch as `apply_patch` edits, file by file, hunks in patch order."""
    from unidiff import PatchSet
    from unidiff.errors import UnidiffParseError

    try:
        patch_set = PatchSet(gold_patch)
    except (UnidiffParseError, ValueError, IndexError) as error:
        raise ExpertDemoError(f"the gold patch is not a unified diff: {error}") from error
    files = []
    for patched in patch_set:
        path = patched.path
        if patched.is_added_file or patched.is_removed_file or patched.is_binary_file:
            # The demo opens a file with `cat` and edits it in place: a file that does not exist on one side
            # has no such episode (an `apply_patch` that creates files would be the agent's call to make).
            raise ExpertDemoError(f"{path}: added, removed or binary files have no scripted demonstration")
        hunks = []
        for hunk in patched:
            search = "".join(line.value for line in hunk if line.is_context or line.is_removed)
            replace = "".join(line.value for line in hunk if line.is_context or line.is_added)
            hunks.append(HunkEdit(path=path, search=search, replace=replace))
        files.append(FileEdits(path=path, hunks=tuple(hunks)))
    if not files:
        raise ExpertDemoError("the gold patch changes no file")
    return files


def tool_call_text(name: str, arguments: dict) -> str:
    """A tool call the way the agent writes one in an assistant message (hermes style)."""
    return (
        "<tool_call>"
        + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        + "</tool_call>"
    )


def expert_tool_calls(edits: list[FileEdits]) -> list[dict]:
    """The expert's script: for each file, `cat` it, then one `apply_patch` per hunk.

    Each item is `{"name", "arguments"}`; a ScriptedBackend replays them as assistant messages.
    """
    calls: list[dict] = []
    for file_edits in edits:
        calls.append({"name": SHELL_TOOL, "arguments": {"cmd": f"cat {file_edits.path}"}})
        for hunk in file_edits.hunks:
            calls.append(
                {
                    "name": APPLY_PATCH_TOOL,
                    "arguments": {"path": hunk.path, "search": hunk.search, "replace": hunk.replace},
                }
            )
    return calls


def final_answer(edits: list[FileEdits]) -> str:
    paths = ", ".join(file_edits.path for file_edits in edits)
    return f"I fixed the bug described in the issue by editing {paths}."


class _HostShell:
    """A `Sandbox` for the expert's own commands only (`cat <gold path>`): trusted, so run on the host."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def run(self, command: str, timeout_s: float | None = None):
        from repairrl.sandbox.base import CommandResult

        started = time.monotonic()
        completed = subprocess.run(
            ["bash", "-c", command], cwd=self.workdir, capture_output=True, timeout=timeout_s, check=False
        )
        output = (completed.stdout + completed.stderr).decode("utf-8", errors="replace")
        return CommandResult(command, completed.returncode, output, time.monotonic() - started)

    def close(self) -> None:
        pass


def expert_demo_messages(
    task: Task,
    read_file: Callable[[str], str],
    system_prompt: str | None = None,
) -> list[dict]:
    """The demo episode's messages (role/content dicts).

    Tool results come from the agent's own tool functions (`repairrl.agent.tools.call_tool`) run on a scratch
    copy of the touched files, so they read exactly as in a real episode; an edit the tool rejects (a search text
    that is missing or not unique) fails the demo instead of teaching a failing call.
    """
    from repairrl.agent.tools import Workspace, call_tool

    edits = gold_edits(task.gold_patch)
    messages = [
        {"role": "system", "content": system_prompt or agent_system_prompt()},
        {"role": "user", "content": task.problem_statement},
    ]
    with tempfile.TemporaryDirectory(prefix="expert-") as scratch:
        workdir = Path(scratch)
        for file_edits in edits:
            target = workdir / file_edits.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(read_file(file_edits.path), encoding="utf-8")
        workspace = Workspace(sandbox=_HostShell(workdir), workdir=workdir, repo_path=str(workdir))
        for call in expert_tool_calls(edits):
            messages.append({"role": "assistant", "content": tool_call_text(call["name"], call["arguments"])})
            result, failed = call_tool(workspace, call["name"], call["arguments"])
            if failed:
                raise ExpertDemoError(f"{call['name']} failed on the gold patch: {result}")
            messages.append({"role": "tool", "content": result})
    messages.append({"role": "assistant", "content": final_answer(edits)})
    return messages


def expert_demo(task: Task, read_file: Callable[[str], str], system_prompt: str | None = None) -> dict:
    """A trajectory-like record of the demo: what `repairrl.sft.dataset` reads with `--expert-demos`."""
    return {
        "instance_id": task.instance_id,
        "repo": task.repo,
        "source": EXPERT_SOURCE,
        "messages": expert_demo_messages(task, read_file, system_prompt),
        "model_patch": task.gold_patch,
        "stop_reason": "no_tool_call",
    }


def single_turn_demo(kind: str, item, cache_dir: Path | None) -> dict:
    """The answer a single-turn task wants, after the same prompt its episodes see."""
    from repairrl.singleturn.episode import make_environment

    environment = make_environment(kind, cache_dir)
    prompt = environment.prompt(item)
    if kind == "file_repair":
        from repairrl.singleturn.file_repair import expert_answer

        answer = expert_answer(item, prompt.context)
    else:
        weakness = f"The function has a {', '.join(item.cwe)} weakness." if item.cwe else "The function is unsafe."
        reason = weakness if item.label == "vulnerable" else "The function checks what it needs to; I see no flaw."
        answer = f"{reason}\n<answer>{item.label}</answer>"
    return {
        "instance_id": item.instance_id,
        "repo": item.repo,
        "source": EXPERT_SOURCE,
        "messages": [*prompt.messages, {"role": "assistant", "content": answer}],
        "model_patch": item.gold_patch if kind == "file_repair" else "",
        "stop_reason": "no_tool_call",
    }


def build_expert_demos(tasks: list, cache_dir: Path | None, kind: str = "repo_repair") -> tuple[list[dict], list[dict]]:
    """(demos, failures): a task whose gold patch has no scripted demo is recorded with its reason."""
    from repairrl.repos import RepoFetchError, base_file_reader
    from repairrl.singleturn.file_repair import FileRepairError
    from repairrl.singleturn.search_replace import EditError

    demos, failures = [], []
    for task in tasks:
        try:
            if kind == "repo_repair":
                demos.append(expert_demo(task, base_file_reader(cache_dir, task)))
            else:
                demos.append(single_turn_demo(kind, task, cache_dir))
        except (ExpertDemoError, RepoFetchError, FileRepairError, EditError, OSError) as error:  # recorded; go on
            failures.append({"instance_id": task.instance_id, "error": f"{type(error).__name__}: {error}"})
    return demos, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted expert demonstrations built from gold patches.")
    parser.add_argument(
        "--tasks", required=True, type=Path, help="task table (tasks.jsonl) of the training set"
    )
    parser.add_argument("--cache-dir", type=Path, help="repository cache (results/cache/repos); repair tasks")
    parser.add_argument("--task", choices=TASK_KINDS, default="repo_repair")
    parser.add_argument("--out", required=True, type=Path, help="demos.jsonl to write")
    args = parser.parse_args(argv)
    demos, failures = build_expert_demos(read_task_table(args.tasks, args.task), args.cache_dir, args.task)
    write_jsonl(args.out, demos)
    for failure in failures:
        print(f"{failure['instance_id']}: no demonstration: {failure['error']}", file=sys.stderr)
    print(json.dumps({"demos": len(demos), "failed": len(failures)}))
    return 0 if demos else 1


if __name__ == "__main__":
    sys.exit(main())
