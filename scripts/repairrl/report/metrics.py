"""Numbers of the results table, computed from records on disk: grading summaries and agent trajectories.

Pure functions from plain dicts: `episode_stats` is the one place that reads the agent's trajectory records
(the field names it accepts are listed there), `results_row` the one place that combines them with a run
summary (swebench's `make_run_report` keys) into a row of workflow/schemas/results.schema.yaml.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

from repairrl.trajectories import episode_patch

Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal
MODEL_ORDER = ("base", "sft", "grpo")


def model_sort_key(model: str) -> tuple[int, str]:
    """Tables and plots show the models in training order (base, sft, grpo), then any others by name."""
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), model)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 0) for no trials.

    Chosen over the normal approximation because benchmarks here are small (16 mini tasks) and rates near 0:
    Wilson stays inside [0, 1] and does not collapse to a zero-width interval at 0 successes.
    """
    if trials <= 0:
        return 0.0, 0.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


# --- one trajectory record ---

TOKEN_HOLDERS = ("tokens", "token_counts", "usage")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def episode_tokens(record: Mapping) -> float | None:
    """Tokens of the episode.

    The agent's record (workflow/schemas/trajectory.schema.yaml) has `tokens.context`, the conversation's length
    after the last turn (prompt and every completion); otherwise a `total`, or prompt + completion counts, from
    `tokens`/`token_counts`/`usage` or the top level.
    """
    for key in TOKEN_HOLDERS:
        holder = record.get(key)
        if isinstance(holder, Mapping):
            for name in ("context", "total", "total_tokens"):
                if _number(holder.get(name)) is not None:
                    return _number(holder[name])
            parts = [_number(v) for k, v in holder.items() if "prompt" in k or "completion" in k]
            parts = [p for p in parts if p is not None]
            if parts:
                return sum(parts)
        elif _number(holder) is not None:
            return _number(holder)
    parts = [_number(record.get(k)) for k in ("prompt_tokens", "completion_tokens")]
    parts = [p for p in parts if p is not None]
    return sum(parts) if parts else None


def episode_turns(record: Mapping) -> float | None:
    """Model calls: `tokens.turns` (the agent's record) or `turns`, else the assistant messages."""
    tokens = record.get("tokens")
    if isinstance(tokens, Mapping) and _number(tokens.get("turns")) is not None:
        return _number(tokens["turns"])
    if _number(record.get("turns")) is not None:
        return _number(record["turns"])
    messages = record.get("messages")
    if isinstance(messages, list):
        return float(sum(1 for m in messages if isinstance(m, Mapping) and m.get("role") == "assistant"))
    return None


def tool_use_by_kind(record: Mapping) -> Counter:
    """Tool calls per command kind: the agent's `tool_stats.command_kinds` (shell commands by their first word);
    otherwise `tool_stats` itself as {kind: n} or {kind: {calls|count: n, ...}}."""
    counts: Counter = Counter()
    stats = record.get("tool_stats") or record.get("tool_use") or {}
    if isinstance(stats, Mapping):
        stats = stats.get("command_kinds", stats.get("by_kind", stats))
    if not isinstance(stats, Mapping):
        return counts
    for kind, value in stats.items():
        if isinstance(value, Mapping):
            value = next(
                (value[k] for k in ("calls", "count", "n") if _number(value.get(k)) is not None), None
            )
        if _number(value) is not None:
            counts[str(kind)] += int(value)
    return counts


def tool_call_counts(record: Mapping) -> tuple[int, int] | None:
    """(well-formed tool calls, tool calls attempted) of the episode, or None when the record does not say.

    The agent's record: `tool_stats.calls` reached a tool; `tool_stats.invalid_calls` more never did (bad JSON,
    unknown tool, bad arguments). Otherwise `tool_calls` ({well_formed, malformed}) or top-level
    `well_formed_tool_calls` / `malformed_tool_calls`; failing those, the tool calls in assistant messages.
    """
    stats = record.get("tool_stats")
    if isinstance(stats, Mapping) and _number(stats.get("calls")) is not None:
        calls = int(stats["calls"])
        return calls, calls + int(_number(stats.get("invalid_calls")) or 0)
    holder = record.get("tool_calls") if isinstance(record.get("tool_calls"), Mapping) else record
    good = _number(holder.get("well_formed", holder.get("well_formed_tool_calls")))
    bad = _number(holder.get("malformed", holder.get("malformed_tool_calls", holder.get("parse_errors"))))
    if good is None:
        messages = record.get("messages")
        if not isinstance(messages, list):
            return None
        good = float(sum(len(m.get("tool_calls") or []) for m in messages if isinstance(m, Mapping)))
    bad = bad or 0.0
    return int(good), int(good + bad)


def well_formed_call_turns(record: Mapping) -> int | None:
    """Model turns that made at least one well-formed tool call.

    The rate the report shows is per model turn, not per call: a model that never calls a tool (the base model
    answering in prose) has no calls at all, and a per-call rate would be undefined instead of 0.
    """
    calls = record.get("tool_calls")
    if isinstance(calls, list) and all(isinstance(c, Mapping) and "turn" in c for c in calls):
        return len({c["turn"] for c in calls if not c.get("error")})
    messages = record.get("messages")
    if isinstance(messages, list):
        return sum(1 for m in messages if isinstance(m, Mapping) and m.get("role") == "assistant" and m.get("tool_calls"))
    return None


def episode_stats(record: Mapping) -> dict:
    patch = episode_patch(record) or ""
    return {
        "instance_id": record.get("instance_id"),
        "turns": episode_turns(record),
        "tokens": episode_tokens(record),
        "tool_use": tool_use_by_kind(record),
        "tool_calls": tool_call_counts(record),
        "well_formed_call_turns": well_formed_call_turns(record),
        "non_empty_patch": bool(patch.strip()),
        "stop_reason": record.get("stop_reason"),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


# --- one (benchmark, model) row ---

# Results column -> the run summary's id list it counts (repairrl.grading.run_evaluation.make_run_summary).
INTEGRITY_COUNTS = {
    "grading_errors": "grading_error_ids",
    "test_timeouts": "test_timeout_ids",
    "test_infra_edits": "test_infra_edit_ids",
}


def results_row(benchmark: str, model: str, summary: Mapping, trajectories: list[Mapping]) -> dict:
    """A row of the results table from the run summary and the model's trajectories on this benchmark."""
    total = int(summary["total_instances"])
    resolved = len(summary["resolved_ids"])
    submitted = set(summary["submitted_ids"]) - set(summary.get("incomplete_ids", []))
    non_empty = len(submitted) - len(summary["empty_patch_ids"])
    low, high = wilson_interval(resolved, total)
    episodes = [episode_stats(r) for r in trajectories]
    calls = [e["tool_calls"] for e in episodes if e["tool_calls"] is not None]
    good, attempted = sum(c[0] for c in calls), sum(c[1] for c in calls)
    counted = [e for e in episodes if e["well_formed_call_turns"] is not None and e["turns"]]
    call_turns, turns = sum(e["well_formed_call_turns"] for e in counted), sum(e["turns"] for e in counted)
    tool_use: Counter = Counter()
    for episode in episodes:
        tool_use.update(episode["tool_use"])
    return {
        "benchmark": benchmark,
        "model": model,
        "tasks": total,
        "resolved": resolved,
        "resolve_rate": rate(resolved, total),
        "resolve_rate_ci_low": low,
        "resolve_rate_ci_high": high,
        "non_empty_patches": non_empty,
        "non_empty_patch_rate": rate(non_empty, total),
        "errors": int(summary.get("error_instances", len(summary.get("error_ids", [])))),
        "episodes": len(episodes),
        "tool_calls": attempted,
        "well_formed_tool_calls": good,
        "well_formed_tool_call_turns": call_turns,
        "model_turns": int(turns),
        "well_formed_tool_call_rate": rate(call_turns, int(turns)),
        "mean_turns": _mean(e["turns"] for e in episodes),
        "mean_tokens": _mean(e["tokens"] for e in episodes),
        "tool_use_by_kind": dict(sorted(tool_use.items())),
        # Counted by repairrl's grader only (None from another harness): grades that are not what they seem.
        **{column: (len(summary[key]) if key in summary else None) for column, key in INTEGRITY_COUNTS.items()},
    }
