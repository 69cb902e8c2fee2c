"""Experiment tracking: the results table to Weights & Biases, beside the training stages' runs.

Offline by default, under `<directory>/wandb/` in the study's group, so `wandb sync` uploads a finished study
with its training runs; the CSVs stay the record on disk.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def log_to_wandb(experiment: str, rows: list[dict], compute: list[dict], project: str | None = None,
                 mode: str = "offline", directory: Path | None = None, group: str | None = None) -> bool:
    """Log the report's tables as one wandb run; False when tracking is disabled (or wandb is missing)."""
    if mode == "disabled" or importlib.util.find_spec("wandb") is None:
        return False
    import wandb

    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project or "repairrl", name=f"{experiment}-report", job_type="report", group=group,
        dir=str(directory) if directory is not None else None, mode="online" if mode == "online" else "offline",
        reinit="finish_previous",
    )
    try:
        columns = [k for k in (rows[0] if rows else {}) if k != "tool_use_by_kind"]
        run.log({"results": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
        for row in rows:
            prefix = f"{row['benchmark']}/{row['model']}"
            run.summary[f"{prefix}/resolve_rate"] = row["resolve_rate"]
            run.summary[f"{prefix}/non_empty_patch_rate"] = row["non_empty_patch_rate"]
        run.summary["gpu_hours"] = sum(r["gpu_hours"] for r in compute)
    finally:
        run.finish()
    return True
