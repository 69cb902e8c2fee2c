"""The agent's two tools, `shell` and `apply_patch`, and the statistics they count as they run.

A tool is a plain function taking the episode's `Workspace` and the model's arguments and returning the text the
model sees. A problem the model can fix (no match, a path outside the repository) raises `ToolError`; `call_tool`
turns it into an error message for the model, so no tool input can end an episode.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from repairrl.sandbox.base import Sandbox

COMMAND_KINDS = ("ls", "cat", "grep", "find", "sed", "python", "pytest", "git", "java", "other")
_KIND_OF_PROGRAM = {
    "ls": "ls", "cat": "cat", "grep": "grep", "egrep": "grep", "rg": "grep", "find": "find", "sed": "sed",
    "python": "python", "python3": "python", "pytest": "pytest", "git": "git",
    "java": "java", "javac": "java", "mvn": "java", "gradle": "java",
}
# Pipeline and list operators; quotes are not parsed, which is fine for counting what kinds of commands ran.
_COMMAND_SEPARATOR = re.compile(r"\|\||&&|[|;\n&]")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class ToolError(Exception):
    """A tool call the model can correct; the message is shown to the model as the tool's result."""


@dataclass
class ToolStats:
    calls: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    invalid_calls: int = 0  # calls that never reached a tool: bad JSON, unknown tool, wrong arguments
    over_limit_calls: int = 0  # calls made after the episode's tool-call or time limit: answered, never run
    command_kinds: Counter = field(default_factory=Counter)

    def to_record(self) -> dict:
        return {
            "calls": sum(self.calls.values()),
            "failures": sum(self.failures.values()),
            "invalid_calls": self.invalid_calls,
            "over_limit_calls": self.over_limit_calls,
            "by_tool": {name: {"calls": self.calls[name], "failures": self.failures[name]} for name in TOOLS},
            "command_kinds": {kind: self.command_kinds[kind] for kind in COMMAND_KINDS},
        }


@dataclass
class Workspace:
    """What the tools act on: the sandbox, the working copy on the host, and where the sandbox mounts it."""

    sandbox: Sandbox
    workdir: Path
    repo_path: str = "/repo"
    command_timeout_s: float | None = None
    stats: ToolStats = field(default_factory=ToolStats)
    command_seconds: float = 0.0  # time spent inside sandbox commands, kept apart from the agent's own overhead


def command_kinds(command: str) -> list[str]:
    """The kind of each part of a shell command line, from the first word of each pipeline/list part."""
    kinds = []
    for part in _COMMAND_SEPARATOR.split(command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        words = [w for w in words if not _ENV_ASSIGNMENT.match(w)]
        # Wrappers (and timeout's duration) are skipped: the kind is the command they run.
        while words and (words[0] in ("sudo", "env", "time", "timeout", "nohup") or words[0][0].isdigit()):
            words = words[1:]
        if not words:
            continue
        program = os.path.basename(words[0])
        if re.fullmatch(r"python3?(\.\d+)?", program):
            program = "pytest" if words[1:3] == ["-m", "pytest"] else "python"
        kinds.append(_KIND_OF_PROGRAM.get(program, "other"))
    return kinds


def shell(workspace: Workspace, cmd: str) -> str:
    """Run a bash command in the repository; returns its output and exit code."""
    workspace.stats.command_kinds.update(command_kinds(cmd))
    result = workspace.sandbox.run(cmd, timeout_s=workspace.command_timeout_s)
    workspace.command_seconds += result.duration_s
    output = result.output.rstrip("\n")
    notes = []
    if result.truncated:
        notes.append("output truncated")
    # A timeout's reason is already in the output: the sandbox writes its own notice there.
    status = f"[exit code: {result.exit_code}]" if result.exit_code is not None else "[killed]"
    text = "\n".join(filter(None, [output, *(f"[{note}]" for note in notes), status]))
    if result.exit_code != 0:
        raise ToolError(text)  # shown to the model just the same; counted as a failure
    return text


def resolve_repo_path(workspace: Workspace, path: str) -> Path:
    """The host path of a file named by the model, refusing anything that ends up outside the working copy.

    Paths may be relative to the repository, or absolute under the sandbox's mount point (`/repo/...`) or the
    working copy's host path. Symlinks are resolved before the check, so a link pointing out is refused too.
    """
    root = workspace.workdir.resolve()
    mount = workspace.repo_path.rstrip("/") or "/"
    if os.path.isabs(path):
        if path == mount or path.startswith(mount + "/"):
            candidate = root / os.path.relpath(path, mount)
        elif Path(path).resolve().is_relative_to(root):
            candidate = Path(path)
        else:
            raise ToolError(f"path {path!r} is outside the repository {mount}; give a path inside it")
    else:
        candidate = root / path
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise ToolError(f"path {path!r} is outside the repository {mount}; give a path inside it")
    if resolved.is_relative_to(root / ".git"):
        raise ToolError(f"path {path!r} is inside .git; edit the source files instead")
    return resolved


def apply_patch(workspace: Workspace, path: str, search: str, replace: str) -> str:
    """Replace the one occurrence of `search` in the file at `path` with `replace`.

    An empty `search` on a file that does not exist creates it with `replace` as its content.
    """
    target = resolve_repo_path(workspace, path)
    if not target.exists():
        if search:
            raise ToolError(f"file {path!r} does not exist (to create it, call apply_patch with an empty search)")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(replace, encoding="utf-8")
        return f"created {path}"
    if not target.is_file():
        raise ToolError(f"{path!r} is not a regular file")
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ToolError(f"{path!r} is not a UTF-8 text file") from error
    if not search:
        raise ToolError(f"search text is empty but {path!r} exists; give text that occurs exactly once in the file")
    count = text.count(search)
    if count == 0:
        raise ToolError(
            f"search text not found in {path!r}; it must match the file exactly, including whitespace and "
            "indentation (look at the file again with cat or sed -n)"
        )
    if count > 1:
        raise ToolError(f"search text occurs {count} times in {path!r}; include more surrounding lines so it "
                        "matches exactly once")
    target.write_text(text.replace(search, replace, 1), encoding="utf-8")
    return f"patched {path} (1 replacement)"


TOOLS = {"shell": shell, "apply_patch": apply_patch}
# The argument names each tool takes from the model (everything after the workspace).
TOOL_PARAMETERS = {name: list(inspect.signature(fn).parameters)[1:] for name, fn in TOOLS.items()}

TOOL_SCHEMAS = [
    {
        "type": "function",
        "function": {
            "name": "shell",
            "description": "Run a bash command in the repository (the working directory) and return its output.",
            "parameters": {
                "type": "object",
                "properties": {"cmd": {"type": "string", "description": "the bash command line"}},
                "required": ["cmd"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "apply_patch",
            "description": "Replace the text `search`, which must occur exactly once in the file, with `replace`.",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "file path, relative to the repository"},
                    "search": {"type": "string", "description": "exact text to replace, including indentation"},
                    "replace": {"type": "string", "description": "the new text"},
                },
                "required": ["path", "search", "replace"],
            },
        },
    },
]


def _check_text(argument: str, value: str) -> None:
    """Refuse text no file or command can hold: a NUL byte, or a lone surrogate (a model can emit `\\ud800` in
    a tool call's JSON)."""
    if "\0" in value:
        raise ToolError(f"argument {argument!r} contains a NUL byte; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ToolError(f"argument {argument!r} is not valid Unicode text ({error.reason} at {error.start})") from None


def call_tool(workspace: Workspace, name: str, arguments: dict) -> tuple[str, bool]:
    """Run tool `name` with already validated arguments; returns (text for the model, whether it failed)."""
    workspace.stats.calls[name] += 1
    try:
        for argument, value in arguments.items():
            _check_text(argument, value)
        return TOOLS[name](workspace, **arguments), False
    except ToolError as error:
        workspace.stats.failures[name] += 1
        return f"Error: {error}" if name != "shell" else str(error), True
