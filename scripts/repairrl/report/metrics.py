"""Numbers of the results table, computed from records on disk: grading summaries and agent trajectories.

Pure functions from plain dicts: `episode_stats` is the one place that reads trajectory records (the fields it
reads are listed there), `results_row` the one place that combines them with a run
summary (swebench's `make_run_report` keys) into a row of workflow/schemas/results.schema.yaml.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

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


def episode_stats(record: Mapping) -> dict:
    """The numbers of one episode the results row sums or averages.

    Every trajectory is written by `repairrl.trajectories.trajectory_record` (the agent's loop and the single-turn
    episodes alike), so the fields are those of workflow/schemas/trajectory.schema.yaml: `tokens.context` (the
    conversation's length after the last turn), `tokens.turns` (model calls), `tool_stats` (None for single-turn
    episodes and episodes that could not run) and `tool_calls`, one entry per call with its turn and error.
    """
    stats = record["tool_stats"] or {}
    calls = stats.get("calls", 0)
    return {
        "turns": record["tokens"]["turns"],
        "tokens": record["tokens"]["context"],
        "tool_use": Counter(stats.get("command_kinds", {})),
        # (well-formed calls, calls attempted): `calls` reached a tool, `invalid_calls` more never did (bad JSON,
        # unknown tool, bad arguments).
        "tool_calls": (calls, calls + stats.get("invalid_calls", 0)),
        # Model turns with at least one well-formed call: the rate the report shows is per turn, not per call, so
        # that a model that never calls a tool (the base model answering in prose) scores 0, not undefined.
        "well_formed_call_turns": len({call["turn"] for call in record["tool_calls"] if not call["error"]}),
    }


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


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
    good, attempted = sum(e["tool_calls"][0] for e in episodes), sum(e["tool_calls"][1] for e in episodes)
    call_turns, turns = sum(e["well_formed_call_turns"] for e in episodes), sum(e["turns"] for e in episodes)
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
        "model_turns": turns,
        "well_formed_tool_call_rate": rate(call_turns, turns),
        "mean_turns": _mean(e["turns"] for e in episodes),
        "mean_tokens": _mean(e["tokens"] for e in episodes),
        "tool_use_by_kind": dict(sorted(tool_use.items())),
        # Counted by repairrl's grader only (None from another harness): grades that are not what they seem.
        **{column: (len(summary[key]) if key in summary else None) for column, key in INTEGRITY_COUNTS.items()},
    }
