"""The report's figures (matplotlib, Agg backend: no display on cluster nodes)."""

from __future__ import annotations

from pathlib import Path

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


def _grouped(ax, rows: list[dict], value, error=None, ylabel: str = "") -> None:
    benchmarks = sorted({r["benchmark"] for r in rows})
    from repairrl.report.build import model_sort_key

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
    fig.tight_layout()
    fig.savefig(paths["Resolve rate (95% Wilson CI)"], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _grouped(axes[0], rows, lambda r: r["non_empty_patch_rate"], ylabel="non-empty patch rate")
    _grouped(axes[1], rows, lambda r: r["well_formed_tool_call_rate"], ylabel="well-formed tool-call rate")
    for ax in axes:
        ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(paths["Non-empty patch and well-formed tool-call rates"], dpi=120)
    plt.close(fig)

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
    fig.tight_layout()
    fig.savefig(paths["Tool use by command kind"], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _grouped(axes[0], rows, lambda r: r["mean_turns"], ylabel="turns per episode")
    _grouped(axes[1], rows, lambda r: r["mean_tokens"], ylabel="tokens per episode")
    fig.tight_layout()
    fig.savefig(paths["Turns and tokens per episode"], dpi=120)
    plt.close(fig)
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
    fig.tight_layout()
    fig.savefig(paths["Detection accuracy and pairwise accuracy (P-C)"], dpi=120)
    plt.close(fig)
    return paths
