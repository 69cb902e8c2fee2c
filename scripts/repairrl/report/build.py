"""The comparison report of one experiment, from records on disk only, with a section per task that ran.

    results/<exp>/                                  the repo_repair task; results/<exp>/<task>/ for file_repair
                                                    and detection, each laid out as below
    <task dir>/eval/<benchmark>/<model>/...         run summary (<model>.<run>.json, found by its keys) and
                                                    trajectory journals (*trajector*.jsonl), anywhere below
    <task dir>/benchmarks/<rule>/*.tsv              Snakemake's benchmark files (compute table)
    <task dir>/sft/**/stats.json                    SFT data statistics (rows from expert demonstrations)
    --sft-metrics, --grpo-metrics                   the training stages' metrics.csv (training-curve plots)

Writes, for the task being reported: results.csv / results.json (workflow/schemas/results.schema.yaml, or
detection_results for detection), one results_<benchmark>.csv per benchmark, compute.csv, the plots (PNG) and
report.md beside them. report.md has a section for every task of the experiment that has evaluations.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from repairrl.records import atomic_write, read_journal, validate_record
from repairrl.report.compute import compute_table, gpus_per_rule
from repairrl.report.metrics import model_sort_key, rate, results_row

TASK_TITLES = {
    "repo_repair": "Repository repair (the agent in a sandbox)",
    "file_repair": "File-level repair (search/replace edits, one turn)",
    "detection": "Vulnerability detection (one turn)",
}
DETECTION_CSV_COLUMNS = (
    "benchmark", "model", "n", "accuracy", "format_failure_rate", "vulnerable_precision", "vulnerable_recall",
    "vulnerable_f1", "benign_precision", "benign_recall", "benign_f1", "pairs", "pair_correct", "pair_vulnerable",
    "pair_benign", "pair_reversed",
)  # fmt: skip
COMPUTE_COLUMNS = ("rule", "jobs", "wall_hours", "cpu_hours", "gpus", "gpu_hours")
SUMMARY_KEYS = {"resolved_ids", "submitted_ids", "empty_patch_ids", "total_instances"}
INSTANCE_FILES = {"report.json", "outcome.json"}
CSV_COLUMNS = (
    "benchmark", "model", "tasks", "resolved", "resolve_rate", "resolve_rate_ci_low", "resolve_rate_ci_high",
    "non_empty_patches", "non_empty_patch_rate", "errors", "episodes", "tool_calls", "well_formed_tool_calls",
    "well_formed_tool_call_turns", "model_turns", "well_formed_tool_call_rate", "mean_turns", "mean_tokens", "tool_use_by_kind",
    "grading_errors", "test_timeouts", "test_infra_edits",
)  # fmt: skip


def find_run_summary(model_dir: Path) -> dict | None:
    """The run summary under a model's evaluation directory: the JSON with make_run_report's keys."""
    for path in sorted(model_dir.rglob("*.json"), key=lambda p: (len(p.parts), str(p))):
        if path.name in INSTANCE_FILES:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and SUMMARY_KEYS <= data.keys():
            return data
    return None


def find_trajectories(model_dir: Path) -> list[dict]:
    records = []
    for path in sorted(model_dir.rglob("*.jsonl")):
        # Hidden files are the agent's own working output (repairrl.evaluate shard), already in the journal.
        if "traject" in path.name and not path.name.startswith("."):
            records += read_journal(path)
    return records


def collect_results(experiment_dir: Path) -> list[dict]:
    """One row per (benchmark, model) that has a run summary, benchmarks sorted, models base/sft/grpo first."""
    rows = []
    eval_dir = Path(experiment_dir) / "eval"
    if not eval_dir.is_dir():
        return rows
    for benchmark_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir()):
        models = sorted(
            (p for p in benchmark_dir.iterdir() if p.is_dir()), key=lambda p: model_sort_key(p.name)
        )
        for model_dir in models:
            summary = find_run_summary(model_dir)
            if summary is None:
                continue
            row = results_row(benchmark_dir.name, model_dir.name, summary, find_trajectories(model_dir))
            validate_record(row, "results", f"{benchmark_dir.name}/{model_dir.name}")
            rows.append(row)
    return rows


def task_dir(experiment_dir: Path, task: str) -> Path:
    """Where a task's outputs live: the experiment's folder for repo_repair, a folder inside it for the others."""
    return Path(experiment_dir) if task == "repo_repair" else Path(experiment_dir) / task


def tasks_with_results(experiment_dir: Path, current: str) -> list[str]:
    """The tasks of the experiment that have evaluations on disk (and the task being reported, always)."""
    return [t for t in TASK_TITLES if t == current or (task_dir(experiment_dir, t) / "eval").is_dir()]


def collect_detection_results(experiment_dir: Path) -> list[dict]:
    """One row per (benchmark, model) with a detection summary (python -m repairrl.evaluate detection)."""
    rows = []
    eval_dir = Path(experiment_dir) / "eval"
    for path in sorted(eval_dir.glob("*/*/grading/*.json")) if eval_dir.is_dir() else []:
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(summary, dict) or summary.get("task") != "detection":
            continue
        row = {"benchmark": path.parents[2].name, "model": path.parents[1].name}
        row.update({k: summary[k] for k in ("n", "accuracy", "format_failure_rate", "pairs", "pair_correct",
                                            "pair_vulnerable", "pair_benign", "pair_reversed")})
        for label, metrics in summary["per_class"].items():
            row.update({f"{label}_{name}": metrics[name] for name in ("precision", "recall", "f1")})
        validate_record(row, "detection_results", str(path))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["benchmark"], model_sort_key(r["model"])))


def edit_application(experiment_dir: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """file_repair: per (benchmark, model), how many answers' edits applied, out of the answers given."""
    counts = {}
    eval_dir = Path(experiment_dir) / "eval"
    for benchmark_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir()) if eval_dir.is_dir() else []:
        for model_dir in sorted(p for p in benchmark_dir.iterdir() if p.is_dir()):
            answered = [r for r in find_trajectories(model_dir) if r.get("status") == "ok" and r.get("tokens", {})
                        .get("turns")]
            applied = sum(1 for r in answered if not r.get("answer_error"))
            counts[(benchmark_dir.name, model_dir.name)] = (applied, len(answered))
    return counts


def sft_sources(experiment_dir: Path) -> dict | None:
    """kept_by_source of the SFT statistics ({rollout, expert_demo}), if SFT ran."""
    for path in sorted(Path(experiment_dir).glob("sft*/**/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("kept_by_source"), dict):
            return {"path": str(path), **data["kept_by_source"]}
    return None


def read_step_metrics(path: Path) -> list[dict]:
    """A training stage's metrics.csv (repairrl.training): one dict per step, numbers as floats and the
    columns a step did not log as None."""
    def number(value: str) -> float | None:
        try:
            return float(value) if value != "" else None
        except ValueError:
            return None

    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


# --- the study's success criterion ---


@dataclass(frozen=True)
class Criterion:
    min_lift: float  # absolute resolve-rate lift over the base model that counts as success; 0: any lift
    text: str

    def met(self, lift: float) -> bool:
        # Rates are ratios of counts: compare with a tolerance, so that 125/500 - 100/500 counts as 5 points.
        return lift > 1e-9 if self.min_lift == 0 else lift >= self.min_lift - 1e-9


def criterion_for(benchmark: str) -> Criterion:
    """SWE-bench Verified: >= +5 points; GitBug-Java and the mini eval splits: any lift."""
    name = benchmark.lower().replace("-", "_")
    if "swe_bench" in name or "verified" in name:
        return Criterion(0.05, ">= +5 points absolute resolve rate over base")
    return Criterion(0.0, "any lift in resolve rate over base")


def success_checks(rows: list[dict], base_model: str = "base") -> list[dict]:
    """Per benchmark: the most-trained model (grpo, else sft) against the base model (the config's base_model,
    which SFT and GRPO trained from), with the criterion's verdict."""
    checks = []
    for benchmark in sorted({r["benchmark"] for r in rows}):
        by_model = {r["model"]: r for r in rows if r["benchmark"] == benchmark}
        trained = next((by_model[m] for m in ("grpo", "sft") if m in by_model), None)
        base = by_model.get(base_model)
        criterion = criterion_for(benchmark)
        check = {"benchmark": benchmark, "criterion": criterion.text, "base_model": base_model, "base": base,
                 "trained": trained}
        if base is None or trained is None:
            check.update(lift=None, met=None, ci_overlap=None)
        else:
            lift = trained["resolve_rate"] - base["resolve_rate"]
            overlap = trained["resolve_rate_ci_low"] <= base["resolve_rate_ci_high"]
            check.update(lift=lift, met=criterion.met(lift), ci_overlap=overlap)
        checks.append(check)
    return checks


# --- writing ---


def _csv_value(value: object) -> object:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def write_csv(path: Path, rows: Iterable[dict], columns: Iterable[str]) -> None:
    columns = list(columns)
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in columns])


def write_tables(out_dir: Path, rows: list[dict], compute: list[dict]) -> list[Path]:
    written = [out_dir / "results.csv", out_dir / "results.json", out_dir / "compute.csv"]
    write_csv(out_dir / "results.csv", rows, CSV_COLUMNS)
    with atomic_write(out_dir / "results.json") as handle:
        handle.write(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    write_csv(out_dir / "compute.csv", compute, COMPUTE_COLUMNS)
    for benchmark in sorted({r["benchmark"] for r in rows}):
        path = out_dir / f"results_{benchmark}.csv"
        write_csv(path, (r for r in rows if r["benchmark"] == benchmark), CSV_COLUMNS)
        written.append(path)
    return written


def write_detection_tables(out_dir: Path, rows: list[dict], compute: list[dict]) -> list[Path]:
    write_csv(out_dir / "results.csv", rows, DETECTION_CSV_COLUMNS)
    with atomic_write(out_dir / "results.json") as handle:
        handle.write(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    write_csv(out_dir / "compute.csv", compute, COMPUTE_COLUMNS)
    return [out_dir / "results.csv", out_dir / "results.json", out_dir / "compute.csv"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _count_of(count: int | None, total: int) -> str:
    return "not counted" if count is None else f"{count}/{total} ({_pct(rate(count, total))})"


def repair_section(rows: list[dict], checks: list[dict], sft: dict | None,
                   edits: dict[tuple[str, str], tuple[int, int]] | None = None) -> list[str]:
    """Resolve rates, the success criterion, episode statistics and SFT data of a repair task."""
    lines = ["### Resolve rate (95% Wilson CI)", ""]
    models = sorted({r["model"] for r in rows}, key=model_sort_key)
    lines += ["| benchmark | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for benchmark in sorted({r["benchmark"] for r in rows}):
        cells = []
        for model in models:
            row = next((r for r in rows if r["benchmark"] == benchmark and r["model"] == model), None)
            cells.append(
                "—"
                if row is None
                else f"{_pct(row['resolve_rate'])} [{_pct(row['resolve_rate_ci_low'])}, "
                f"{_pct(row['resolve_rate_ci_high'])}] ({row['resolved']}/{row['tasks']})"
            )
        lines.append(f"| {benchmark} | " + " | ".join(cells) + " |")
    lines += ["", "### Success criterion", ""]
    lines += ["| benchmark | criterion | comparison | lift | verdict |", "| --- | --- | --- | --- | --- |"]
    for check in checks:
        if check["met"] is None:
            have = [check[m]["model"] for m in ("base", "trained") if check[m] is not None]
            verdict, comparison, lift = (
                "not evaluable",
                f"needs {check['base_model']} and sft/grpo (have: {', '.join(have) or 'none'})",
                "n/a",
            )
        else:
            verdict = "**met**" if check["met"] else "not met"
            if check["met"] and check["ci_overlap"]:
                verdict += " (CIs overlap: not significant)"
            trained = check["trained"]
            comparison = f"{trained['model']} vs {check['base_model']}"
            lift = f"{100 * check['lift']:+.1f} points"
        lines.append(f"| {check['benchmark']} | {check['criterion']} | {comparison} | {lift} | {verdict} |")
    lines += ["", "### Episodes", ""]
    lines += [
        (
            "| benchmark | model | non-empty patch | turns with a well-formed tool call | valid / attempted tool calls "
            "| turns / episode | tokens / episode | errors |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['benchmark']} | {row['model']} | {_pct(row['non_empty_patch_rate'])} "
            f"({row['non_empty_patches']}/{row['tasks']}) | {_pct(row['well_formed_tool_call_rate'])} "
            f"({row['well_formed_tool_call_turns']}/{row['model_turns']}) | "
            f"{row['well_formed_tool_calls']}/{row['tool_calls']} | {_num(row['mean_turns'])} | "
            f"{_num(row['mean_tokens'], 0)} | {row['errors']} |"
        )
    lines += ["", "### Grading integrity", ""]
    lines += [("Grades that are not plain verdicts: the grader could not grade, a test hit its timeout, or the patch "
              "edited test infrastructure (reset before the tests ran; README, Security)."), ""]
    lines += ["| benchmark | model | grading errors | test timeouts | test-infrastructure edits |",
              "| --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [_count_of(row[column], row["tasks"]) for column in ("grading_errors", "test_timeouts",
                                                                     "test_infra_edits")]
        lines.append(f"| {row['benchmark']} | {row['model']} | " + " | ".join(cells) + " |")
    if edits:
        lines += ["", "Answers whose search/replace edits applied to the files shown:", ""]
        lines += ["| benchmark | model | edits applied |", "| --- | --- | --- |"]
        for (benchmark, model), (applied, answered) in sorted(edits.items(), key=lambda item: (item[0][0], model_sort_key(item[0][1]))):
            rate = _pct(applied / answered if answered else None)
            lines.append(f"| {benchmark} | {model} | {rate} ({applied}/{answered}) |")
    lines += ["", "#### Tool use by command kind", ""]
    kinds = sorted({k for r in rows for k in r["tool_use_by_kind"]})
    if kinds:
        lines += [
            "| benchmark | model | " + " | ".join(kinds) + " |",
            "| --- | --- |" + " --- |" * len(kinds),
        ]
        for row in rows:
            counts = [str(row["tool_use_by_kind"].get(k, 0)) for k in kinds]
            lines.append(f"| {row['benchmark']} | {row['model']} | " + " | ".join(counts) + " |")
    else:
        lines.append("No tool statistics in the trajectories.")
    if sft is not None:
        lines += ["", "### SFT data", ""]
        lines.append(f"Rows kept: {sft.get('rollout', 0)} from rollouts, {sft.get('expert_demo', 0)} from scripted expert "
                     f"demonstrations ({sft['path']}).")  # fmt: skip
        if sft.get("expert_demo"):
            lines.append(
                "\n**Flag:** the SFT data includes expert demonstrations built from gold patches: SFT and GRPO "
                "results measure learning from those demos, not from the model's own successful rollouts alone."
            )
    return lines


def detection_section(rows: list[dict], sft: dict | None) -> list[str]:
    """Accuracy, per-class precision/recall and PrimeVul's pairwise metrics per benchmark and model."""
    lines = ["### Accuracy and per-class precision / recall", ""]
    if not rows:
        return lines + ["No detection evaluations yet."]
    lines += [("| benchmark | model | samples | accuracy | unreadable answers | vulnerable P / R / F1 "
              "| benign P / R / F1 |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        per_class = [" / ".join(_pct(row[f"{label}_{m}"]) for m in ("precision", "recall", "f1"))
                     for label in ("vulnerable", "benign")]
        lines.append(f"| {row['benchmark']} | {row['model']} | {row['n']} | {_pct(row['accuracy'])} | "
                     f"{_pct(row['format_failure_rate'])} | {per_class[0]} | {per_class[1]} |")
    lines += ["", "### Pairwise (vulnerable function and its patched version)", ""]
    lines += [("| benchmark | model | pairs | P-C (both right) | P-V (both vulnerable) | P-B (both benign) "
              "| P-R (both wrong) |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = " | ".join(_pct(row[k]) if row["pairs"] else "n/a"
                           for k in ("pair_correct", "pair_vulnerable", "pair_benign", "pair_reversed"))
        lines.append(f"| {row['benchmark']} | {row['model']} | {row['pairs']} | {cells} |")
    if sft is not None:
        lines += ["", "### SFT data", ""]
        lines.append(f"Rows kept: {sft.get('rollout', 0)} from rollouts with the right label, "
                     f"{sft.get('expert_demo', 0)} expert demonstrations built from the labels ({sft['path']}).")
    return lines


def compute_section(compute: list[dict]) -> list[str]:
    lines = ["### Compute", ""]
    if compute:
        lines += [
            "| rule | jobs | wall hours | CPU hours | GPUs per job | GPU-hours |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in compute:
            lines.append(
                f"| {row['rule']} | {row['jobs']} | {row['wall_hours']:.3f} | {row['cpu_hours']:.3f} | {row['gpus']} "
                f"| {row['gpu_hours']:.3f} |"
            )
        lines.append(
            f"| **total** | {sum(r['jobs'] for r in compute)} | {sum(r['wall_hours'] for r in compute):.3f} | "
            f"{sum(r['cpu_hours'] for r in compute):.3f} | | {sum(r['gpu_hours'] for r in compute):.3f} |"
        )
        lines.append(
            "\nGPU-hours = wall hours x the GPUs of the job's SLURM allocation (the profile's set-resources); jobs "
            "that ran on the local executor used none. CPU hours are the jobs' measured CPU time."
        )
    else:
        lines.append("No benchmark files yet.")
    return lines


def render_markdown(experiment: str, sections: dict[str, list[str]], plots: dict[str, str]) -> str:
    lines = [f"# Report: {experiment}", ""]
    lines += [
        "Every number below is computed from records on disk (run summaries, trajectories, benchmark files).",
        "",
    ]
    for task, section in sections.items():
        lines += [f"## {TASK_TITLES[task]}", "", f"Task `{task}`.", "", *section, ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{title}]({name})" for title, name in plots.items()]
    return "\n".join(lines) + "\n"





def build_report(
    experiment_dir: Path,
    out: Path,
    profile: Path | None,
    experiment: str | None = None,
    wandb_project: str | None = None,
    task: str = "repo_repair",
    sft_metrics: Path | None = None,
    grpo_metrics: Path | None = None,
    tracking_mode: str = "offline",
    tracking_group: str | None = None,
    base_model: str = "base",
) -> dict:
    """The report of `task` (its tables and plots) with a section for every task of the experiment that ran, and
    the training curves of the stages whose metrics.csv is given."""
    from repairrl.report import plots, tracking

    experiment_dir, out = Path(experiment_dir), Path(out)
    out_dir = out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    gpus = gpus_per_rule(profile) if profile is not None else {}
    sections, current = {}, {}
    for name in tasks_with_results(experiment_dir, task):
        directory = task_dir(experiment_dir, name)
        compute = compute_table(directory / "benchmarks", gpus)
        sft = sft_sources(directory)
        if name == "detection":
            rows, checks = collect_detection_results(directory), []
            sections[name] = detection_section(rows, sft)
        else:
            rows = collect_results(directory)
            checks = success_checks(rows, base_model)
            edits = edit_application(directory) if name == "file_repair" else None
            sections[name] = repair_section(rows, checks, sft, edits)
        sections[name] += ["", *compute_section(compute)]
        if name == task:
            current = {"rows": rows, "checks": checks, "compute": compute}
    rows, compute = current["rows"], current["compute"]
    if task == "detection":
        tables = write_detection_tables(out_dir, rows, compute)
        figures = plots.draw_detection(rows, out_dir) if rows else {}
    else:
        tables = write_tables(out_dir, rows, compute)
        figures = plots.draw_all(rows, out_dir) if rows else {}
    if sft_metrics is not None:
        figures.update(plots.draw_sft_curves(read_step_metrics(Path(sft_metrics)), out_dir))
    if grpo_metrics is not None:
        figures.update(plots.draw_grpo_curves(read_step_metrics(Path(grpo_metrics)), out_dir))
    name = experiment or (experiment_dir.name if task == "repo_repair" else f"{experiment_dir.name} ({task})")
    with atomic_write(out) as handle:
        handle.write(render_markdown(name, sections, {t: p.name for t, p in figures.items()}))
    if task != "detection":
        tracking.log_to_wandb(name, rows, compute, project=wandb_project, mode=tracking_mode,
                              directory=experiment_dir, group=tracking_group or experiment_dir.name)
    return {**current, "tables": tables, "plots": figures, "tasks": list(sections)}
