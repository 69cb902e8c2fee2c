"""The report's figures (matplotlib, Agg backend: no display on cluster nodes)."""

from __future__ import annotations

import math
from pathlib import Path

from repairrl.report.metrics import model_sort_key

FIGURES = {
    "Resolve rate (95% Wilson CI)": "resolve_rate.png",
    "Non-empty patch and well-formed tool-call rates": "episode_rates.png",
    "Tool use by command kind": "tool_use.png",
    "Turns and tokens per episode": "turns_tokens.png",
}


DETECTION_FIGURES = {"Detection accuracy and pairwise accuracy (P-C)": "detection_accuracy.png"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)  # pyplot keeps every open figure alive otherwise


def _grouped(ax, rows: list[dict], value, error=None, ylabel: str = "") -> None:
    benchmarks = sorted({r["benchmark"] for r in rows})
    models = sorted({r["model"] for r in rows}, key=model_sort_key)
    width = 0.8 / max(1, len(models))
    for index, model in enumerate(models):
        xs, ys, errs = [], [], [[], []]
        for position, benchmark in enumerate(benchmarks):
            row = next((r for r in rows if r["benchmark"] == benchmark and r["model"] == model), None)
            if row is None or value(row) is None:
                continue
            xs.append(position + (index - (len(models) - 1) / 2) * width)
            ys.append(value(row))
            if error is not None:
                low, high = error(row)
                errs[0].append(max(0.0, value(row) - low))
                errs[1].append(max(0.0, high - value(row)))
        ax.bar(xs, ys, width, label=model, yerr=errs if error is not None and xs else None, capsize=3)
    ax.set_xticks(range(len(benchmarks)), benchmarks, rotation=15)
    ax.set_ylabel(ylabel)
    ax.legend()


def draw_all(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    plt = _pyplot()
    out_dir = Path(out_dir)
    paths = {title: out_dir / name for title, name in FIGURES.items()}

    fig, ax = plt.subplots(figsize=(7, 4))
    _grouped(ax, rows, lambda r: r["resolve_rate"], lambda r: (r["resolve_rate_ci_low"], r["resolve_rate_ci_high"]),
             "resolve rate")  # fmt: skip
    ax.set_ylim(0, 1)
    _save(plt, fig, paths["Resolve rate (95% Wilson CI)"])

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _grouped(axes[0], rows, lambda r: r["non_empty_patch_rate"], ylabel="non-empty patch rate")
    _grouped(axes[1], rows, lambda r: r["well_formed_tool_call_rate"], ylabel="well-formed tool-call rate")
    for ax in axes:
        ax.set_ylim(0, 1)
    _save(plt, fig, paths["Non-empty patch and well-formed tool-call rates"])

    kinds = sorted({k for r in rows for k in r["tool_use_by_kind"]})
    fig, ax = plt.subplots(figsize=(max(6, len(kinds) * 0.9), 4))
    labels = [f"{r['benchmark']}/{r['model']}" for r in rows]
    width = 0.8 / max(1, len(rows))
    for index, (label, row) in enumerate(zip(labels, rows, strict=True)):
        xs = [k + (index - (len(rows) - 1) / 2) * width for k in range(len(kinds))]
        ax.bar(xs, [row["tool_use_by_kind"].get(kind, 0) for kind in kinds], width, label=label)
    ax.set_xticks(range(len(kinds)), kinds, rotation=30)
    ax.set_ylabel("tool calls")
    if rows:
        ax.legend(fontsize="small")
    _save(plt, fig, paths["Tool use by command kind"])

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _grouped(axes[0], rows, lambda r: r["mean_turns"], ylabel="turns per episode")
    _grouped(axes[1], rows, lambda r: r["mean_tokens"], ylabel="tokens per episode")
    _save(plt, fig, paths["Turns and tokens per episode"])
    return paths


def draw_detection(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """Accuracy and pairwise accuracy per benchmark and model, side by side."""
    plt = _pyplot()
    paths = {title: Path(out_dir) / name for title, name in DETECTION_FIGURES.items()}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _grouped(axes[0], rows, lambda r: r["accuracy"], ylabel="accuracy")
    _grouped(axes[1], rows, lambda r: r["pair_correct"] if r["pairs"] else None, ylabel="pairwise accuracy (P-C)")
    for ax in axes:
        ax.set_ylim(0, 1)
    _save(plt, fig, paths["Detection accuracy and pairwise accuracy (P-C)"])
    return paths


SFT_CURVES = {"SFT training loss per step": "sft_curves.png"}
GRPO_CURVES = {"GRPO per step: reward, loss, KL or clip ratio, episode length": "grpo_curves.png"}


def _series(rows: list[dict], column: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that logged `column`."""
    points = [(r["step"], r[column]) for r in rows if r.get(column) is not None and not math.isnan(r[column])]
    return [s for s, _ in points], [v for _, v in points]


def _curve(ax, rows: list[dict], column: str, ylabel: str, label: str | None = None) -> bool:
    steps, values = _series(rows, column)
    if steps:
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return bool(steps)


def _whole_steps(fig) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 1.5


def _nothing_logged(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} logged", ha="center", va="center", transform=ax.transAxes, color="gray")


def draw_sft_curves(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """SFT's loss per step, and the token accuracy on the assistant turns where TRL logged it."""
    plt = _pyplot()
    (title, name), = SFT_CURVES.items()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if not _curve(axes[0], rows, "loss", "training loss"):
        _nothing_logged(axes[0], "loss")
    if not _curve(axes[1], rows, "mean_token_accuracy", "token accuracy (trained tokens)"):
        _nothing_logged(axes[1], "token accuracy")
    fig.suptitle("SFT")
    _whole_steps(fig)
    path = Path(out_dir) / name
    _save(plt, fig, path)
    return {title: path}


def draw_grpo_curves(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """GRPO per step: reward mean with its std across the group, loss, KL (when beta > 0, else the clip ratio:
    TRL logs no KL without a reference model), and episode length in turns and completion tokens."""
    plt = _pyplot()
    (title, name), = GRPO_CURVES.items()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    reward, loss, policy, length = axes.flat

    steps, means = _series(rows, "reward")
    if steps:
        stds = dict(zip(*_series(rows, "reward_std"), strict=True))
        low = [m - stds.get(s, 0.0) for s, m in zip(steps, means, strict=True)]
        high = [m + stds.get(s, 0.0) for s, m in zip(steps, means, strict=True)]
        reward.plot(steps, means, marker="o" if len(steps) < 30 else None, markersize=3, label="mean")
        reward.fill_between(steps, low, high, alpha=0.25, label="± std")
        reward.legend(fontsize="small")
    else:
        _nothing_logged(reward, "reward")
    reward.set_xlabel("step")
    reward.set_ylabel("reward")

    if not _curve(loss, rows, "loss", "loss"):
        _nothing_logged(loss, "loss")

    if _series(rows, "kl")[0]:
        _curve(policy, rows, "kl", "KL to the reference")
    elif _series(rows, "clip_ratio_region_mean")[0]:
        _curve(policy, rows, "clip_ratio_region_mean", "clip ratio", "clipped (region)")
        _curve(policy, rows, "clip_ratio_low_mean", "clip ratio", "clipped low")
        _curve(policy, rows, "clip_ratio_high_mean", "clip ratio", "clipped high")
        policy.legend(fontsize="small")
    else:
        _nothing_logged(policy, "KL or clip ratio")

    has_turns = _curve(length, rows, "turns_per_episode", "turns per episode", "turns")
    tokens = length.twinx()
    steps, values = _series(rows, "completions_mean_length")
    if steps:
        tokens.plot(steps, values, color="tab:orange", linestyle="--", label="completion tokens")
        tokens.set_ylabel("completion tokens per episode")
    if not (has_turns or steps):
        _nothing_logged(length, "episode length")

    fig.suptitle("GRPO")
    _whole_steps(fig)
    path = Path(out_dir) / name
    _save(plt, fig, path)
    return {title: path}
