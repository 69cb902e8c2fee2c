"""`python -m repairrl.report --experiment-dir results/<exp> --out results/<exp>/report/report.md`

Writes report.md with its PNG plots and tables (results.csv, results.json, results_<benchmark>.csv,
compute.csv) beside it; see repairrl.report.build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repairrl.report.build import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repairrl.report", description="The experiment's comparison report."
    )
    parser.add_argument("--experiment-dir", required=True, type=Path, help="results/<experiment>")
    parser.add_argument("--task", choices=("repo_repair", "file_repair", "detection"), default="repo_repair",
                        help="the task whose tables and plots are written (every task that ran gets a section)")
    parser.add_argument("--out", required=True, type=Path, help="report.md; tables and plots go beside it")
    parser.add_argument("--profile", type=Path, help="the SLURM profile the jobs ran with (GPU counts per rule); "
                        "without it, no job used a GPU (the local executor)")
    parser.add_argument("--experiment", help="name shown in the report (default: the directory's name)")
    parser.add_argument("--wandb-project", help="wandb project (default: repairrl)")
    parser.add_argument("--tracking", choices=("offline", "online", "disabled"), default="offline",
                        help="the results to wandb: offline (under EXPERIMENT_DIR/wandb, beside the training "
                        "stages' runs), online or disabled")
    parser.add_argument("--tracking-group", help="wandb group of the study (default: the directory's name)")
    parser.add_argument("--base-model", default="base", help="the model SFT and GRPO trained from (the config's "
                        "base_model): the success criterion compares the trained models with it")
    parser.add_argument("--sft-metrics", type=Path, help="SFT's metrics.csv: plots its training curves")
    parser.add_argument("--grpo-metrics", type=Path, help="GRPO's metrics.csv: plots its training curves")
    args = parser.parse_args(argv)
    result = build_report(args.experiment_dir, args.out, args.profile, args.experiment, args.wandb_project,
                          args.task, sft_metrics=args.sft_metrics, grpo_metrics=args.grpo_metrics,
                          tracking_mode=args.tracking, tracking_group=args.tracking_group,
                          base_model=args.base_model)
    print(
        f"{len(result['rows'])} result rows, {len(result['compute'])} rules in the compute table -> {args.out}"
    )
    for check in result["checks"]:
        verdict = "not evaluable" if check["met"] is None else ("met" if check["met"] else "not met")
        print(f"  {check['benchmark']}: {check['criterion']}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
