"""The code-repair agent: two tools (shell, apply_patch), tool-call parsing, the loop, and the batch runner.

Imports stay light (no torch): `python -m repairrl.agent --help` and the workflow's dry runs start fast.
"""

from repairrl.agent.loop import AgentConfig, run_episode
from repairrl.agent.parsing import ToolCall, parse_tool_calls
from repairrl.agent.tools import ToolError, ToolStats, Workspace, apply_patch, shell

__all__ = [
    "AgentConfig", "ToolCall", "ToolError", "ToolStats", "Workspace", "apply_patch",
    "parse_tool_calls", "run_episode", "shell",
]
