"""Compute used per rule: wall and CPU time from Snakemake's benchmark TSVs; GPU-hours from the GPU counts of the
SLURM allocations the jobs ran in (the profile's), and none for jobs that ran on the local executor."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml


def gpus_per_rule(profile_path: str | Path) -> dict[str, int]:
    """rule -> GPUs of its allocation (`set-resources.<rule>.gpu`); rules without one use none."""
    profile = yaml.safe_load(Path(profile_path).read_text(encoding="utf-8")) or {}
    resources = profile.get("set-resources") or {}
    return {rule: int((values or {}).get("gpu", 0)) for rule, values in resources.items()}


def benchmark_seconds(path: str | Path, column: str = "s") -> float:
    """Seconds of one job: the mean of a column (`s`: wall time, `cpu_time`: CPU time) over Snakemake's repeats."""
    with open(path, encoding="utf-8") as handle:
        values = []
        for row in csv.DictReader(handle, delimiter="\t"):
            try:
                values.append(float(row.get(column) or ""))
            except ValueError:  # "NA" where the platform could not measure it
                continue
    return sum(values) / len(values) if values else 0.0


def compute_table(benchmarks_dir: str | Path, gpus: dict[str, int]) -> list[dict]:
    """One row per rule: jobs, wall hours, CPU hours, GPUs per job and GPU-hours (wall hours x GPUs per job)."""
    rows = []
    root = Path(benchmarks_dir)
    if not root.is_dir():
        return rows
    for rule_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(rule_dir.rglob("*.tsv"))
        if not files:
            continue
        hours = sum(benchmark_seconds(f) for f in files) / 3600
        gpu = gpus.get(rule_dir.name, 0)
        rows.append(
            {
                "rule": rule_dir.name,
                "jobs": len(files),
                "wall_hours": hours,
                "cpu_hours": sum(benchmark_seconds(f, "cpu_time") for f in files) / 3600,
                "gpus": gpu,
                "gpu_hours": hours * gpu,
            }
        )
    return rows
