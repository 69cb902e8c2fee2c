"""The trajectory record (workflow/schemas/trajectory.schema.yaml): one episode, whoever ran it.

The agent's loop (repairrl.agent) and the single-turn episodes (repairrl.singleturn) both write it, so
predictions, SFT data, GRPO and the report read every task kind the same way.
"""

from __future__ import annotations

from repairrl.tasks import Task

# Keys under which a record may carry its final patch, in order of preference: `model_patch` is swebench's
# prediction field, `diff` what the agent writes, the others what other agents' trajectories call it.
PATCH_KEYS = ("model_patch", "final_diff", "diff", "patch")


def episode_patch(record) -> str | None:
    """The episode's final diff, or None when the record carries none."""
    return next((record[key] for key in PATCH_KEYS if isinstance(record.get(key), str)), None)


def trajectory_record(task, sample: int, seed: int | None, model: str, *, stop_reason: str, error: str | None,
                      messages: list[dict], tool_calls: list[dict], tool_stats: dict | None, diff: str, trace,
                      tokens: dict, timings: dict, config: dict | None, status: str = "ok") -> dict:
    """One episode's record (workflow/schemas/trajectory.schema.yaml), whoever ran the episode."""
    return {
        "instance_id": task.instance_id, "repo": task.repo, "sample": sample, "seed": seed, "model": model,
        "status": status, "stop_reason": stop_reason, "error": error, "messages": messages,
        "tool_calls": tool_calls, "tool_stats": tool_stats, "diff": diff,
        "token_source": trace.source if trace is not None else "text_only",
        "token_ids": trace.token_ids if trace is not None else [],
        "loss_mask": trace.loss_mask if trace is not None else [],
        "logprobs": trace.logprobs if trace is not None else [],
        "tokens": tokens, "timings": timings, "config": config,
    }


def failed_record(task: Task, sample: int, model: str, error: str, seed: int | None = None) -> dict:
    """The record of an episode that could not run (no working copy, a crash): the stage records it and goes on."""
    return trajectory_record(
        task, sample, seed, model, status="failed", stop_reason="error", error=error, messages=[], tool_calls=[],
        tool_stats=None, diff="", trace=None, tokens={"context": 0, "completion": 0, "turns": 0},
        timings={"model_s": 0.0, "tool_s": 0.0, "command_s": 0.0, "diff_s": 0.0, "total_s": 0.0}, config=None,
    )
