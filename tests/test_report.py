"""The report: every number recomputed from fixture records, against hand-computed values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from repairrl.report import build, compute, metrics
from repairrl.report.__main__ import main as report_main

from .conftest import REPO_ROOT

TSV_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_wilson_interval_matches_hand_computation():
    # 2/10: centre (0.2 + z²/20) / (1 + z²/10), half-width z·sqrt(0.016 + z²/400) / (1 + z²/10)
    low, high = metrics.wilson_interval(2, 10)
    assert low == pytest.approx(0.0567, abs=1e-4) and high == pytest.approx(0.5098, abs=1e-4)
    low, high = metrics.wilson_interval(0, 16)
    assert low == 0.0 and high == pytest.approx(0.1936, abs=1e-4)  # z²/(16 + z²): not a zero-width interval
    assert metrics.wilson_interval(0, 0) == (0.0, 0.0)


BASE_TRAJECTORIES = [
    {  # the agent's record (workflow/schemas/trajectory.schema.yaml), the fields the report reads
        "instance_id": "t0",
        "tokens": {"context": 150, "completion": 50, "turns": 3},
        "tool_stats": {
            "calls": 4,
            "failures": 1,
            "invalid_calls": 1,
            "by_tool": {"bash": 4},
            "command_kinds": {"cat": 2, "git": 1},
        },
        "tool_calls": [
            {"turn": 1, "error": None},
            {"turn": 2, "error": None},
            {"turn": 2, "error": None},
            {"turn": 3, "error": "malformed JSON"},
        ],
        "diff": "diff",
    },
    {  # a single-turn episode (repairrl.singleturn): one model call, no tools
        "instance_id": "t1",
        "tokens": {"context": 250, "completion": 40, "turns": 1},
        "tool_stats": None,
        "tool_calls": [],
        "diff": "",
    },
]


def summary(resolved: int, empty: int, total: int = 10) -> dict:
    ids = [f"t{n}" for n in range(total)]
    return {
        "total_instances": total,
        "submitted_instances": total,
        "completed_instances": total - empty,
        "resolved_instances": resolved,
        "unresolved_instances": total - empty - resolved,
        "empty_patch_instances": empty,
        "error_instances": 0,
        "submitted_ids": ids,
        "resolved_ids": ids[:resolved],
        "empty_patch_ids": ids[total - empty :],
        "incomplete_ids": [],
        "error_ids": [],
        "schema_version": 2,
    }


def test_results_row_from_summary_and_trajectories():
    row = metrics.results_row("mini_eval_python", "base", summary(resolved=2, empty=3), BASE_TRAJECTORIES)
    assert row["resolve_rate"] == 0.2 and row["resolved"] == 2 and row["tasks"] == 10
    assert row["resolve_rate_ci_low"] == pytest.approx(0.0567, abs=1e-4)
    assert row["non_empty_patches"] == 7 and row["non_empty_patch_rate"] == 0.7
    # 4 calls reached a tool and 1 more was invalid in the first episode; the single-turn one made none
    assert (row["well_formed_tool_calls"], row["tool_calls"]) == (4, 5)
    # turns with a well-formed call: turns 1 and 2 of 3, then none of the single-turn episode's 1 turn
    assert (row["well_formed_tool_call_turns"], row["model_turns"], row["well_formed_tool_call_rate"]) == (2, 4, 0.5)
    assert row["mean_turns"] == 2  # 3 model calls, then 1
    assert row["mean_tokens"] == 200  # (150 + 250) / 2: the context after the last turn
    assert row["tool_use_by_kind"] == {"cat": 2, "git": 1}


def write_tsv(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TSV_HEADER + f"{seconds}\t0:30:00\t100\t200\t90\t95\t1\t1\t50\t10\n")


def test_gpu_hours_from_benchmark_files_and_the_slurm_profile(tmp_path):
    gpus = compute.gpus_per_rule(REPO_ROOT / "profiles" / "slurm" / "config.yaml")
    assert gpus["evaluate_shard"] == 1 and gpus["grpo"] == 3 and gpus["fetch"] == 0
    write_tsv(tmp_path / "evaluate_shard" / "mini_eval_python" / "base-0.tsv", 1800)
    write_tsv(tmp_path / "evaluate_shard" / "mini_eval_python" / "base-1.tsv", 3600)
    write_tsv(tmp_path / "grpo" / "base.tsv", 7200)
    write_tsv(tmp_path / "fetch" / "mini.tsv", 36)
    rows = {r["rule"]: r for r in compute.compute_table(tmp_path, gpus)}
    assert rows["evaluate_shard"]["jobs"] == 2 and rows["evaluate_shard"]["gpu_hours"] == pytest.approx(1.5)
    assert rows["grpo"]["gpu_hours"] == pytest.approx(6.0)
    assert rows["fetch"]["wall_hours"] == pytest.approx(0.01) and rows["fetch"]["gpu_hours"] == 0


@pytest.fixture
def experiment(tmp_path) -> Path:
    root = tmp_path / "results" / "embedded"
    runs = {
        ("mini_eval_python", "base"): (2, 3),
        ("mini_eval_python", "grpo"): (4, 1),
        ("mini_eval_java", "base"): (1, 0),
    }
    for (benchmark, model), (resolved, empty) in runs.items():
        model_dir = root / "eval" / benchmark / model
        (model_dir / "grading" / model / "t0").mkdir(parents=True)
        (model_dir / "grading" / model / "t0" / "report.json").write_text(
            json.dumps({"t0": {"resolved": True}})
        )
        (model_dir / "grading" / f"{model}.eval.json").write_text(json.dumps(summary(resolved, empty)))
        with open(model_dir / "trajectories.jsonl", "w") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in BASE_TRAJECTORIES)
    write_tsv(root / "benchmarks" / "evaluate_shard" / "mini_eval_python" / "base-0.tsv", 3600)
    (root / "sft").mkdir()
    (root / "sft" / "stats.json").write_text(
        json.dumps({"kept": 5, "kept_by_source": {"rollout": 1, "expert_demo": 4}})
    )
    return root


def test_report_from_records_on_disk(experiment):
    out = experiment / "report" / "report.md"
    profile = REPO_ROOT / "profiles" / "slurm" / "config.yaml"  # the jobs ran on SLURM
    assert report_main(["--experiment-dir", str(experiment), "--out", str(out), "--profile", str(profile)]) == 0
    text = out.read_text()
    results = json.loads((out.parent / "results.json").read_text())
    assert [(r["benchmark"], r["model"]) for r in results] == [
        ("mini_eval_java", "base"), ("mini_eval_python", "base"), ("mini_eval_python", "grpo"),
    ]  # fmt: skip
    with open(out.parent / "results_mini_eval_python.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["resolve_rate"]) for r in rows] == [0.2, 0.4]
    # grpo 40% vs base 20% on a mini split: any lift meets the criterion, but the CIs overlap
    assert (
        "| mini_eval_python | any lift in resolve rate over base | grpo vs base | +20.0 points | **met**"
        in text
    )
    assert "CIs overlap" in text
    assert "| mini_eval_java | any lift in resolve rate over base |" in text and "not evaluable" in text
    assert "20.0% [5.7%, 51.0%] (2/10)" in text
    assert "expert demonstrations" in text and "**Flag:**" in text
    assert "| evaluate_shard | 1 | 1.000 | 0.003 | 1 | 1.000 |" in text
    for name in ("resolve_rate.png", "episode_rates.png", "tool_use.png", "turns_tokens.png"):
        assert (out.parent / name).stat().st_size > 1000
        assert f"]({name})" in text


def test_swe_bench_verified_needs_five_points():
    def row(model: str, resolved: int) -> dict:
        return metrics.results_row("swe_bench_verified", model, summary(resolved, 0, total=500), [])

    checks = build.success_checks([row("base", 100), row("sft", 120)])  # +4 points
    assert checks[0]["met"] is False and checks[0]["lift"] == pytest.approx(0.04)
    checks = build.success_checks([row("base", 100), row("sft", 120), row("grpo", 125)])  # grpo: +5 points
    assert checks[0]["met"] is True and checks[0]["trained"]["model"] == "grpo"


def test_report_has_a_section_per_task_that_ran(experiment):
    """repo_repair at the experiment's root, file_repair and detection in folders of their own."""
    from repairrl.evaluate.__main__ import main as evaluate_main
    from repairrl.records import write_jsonl
    from repairrl.tasks import DetectionSample, write_samples

    file_repair = experiment / "file_repair" / "eval" / "mini_eval_python" / "sft"
    (file_repair / "grading").mkdir(parents=True)
    (file_repair / "grading" / "sft.eval.json").write_text(json.dumps(summary(1, 1, total=2)))
    answered = {"status": "ok", "tokens": {"context": 90, "completion": 30, "turns": 1}, "tool_stats": None,
                "tool_calls": [], "diff": ""}
    write_jsonl(file_repair / "journal" / "trajectories-0.jsonl", [
        {**answered, "instance_id": "t0", "answer_error": None, "diff": "diff"},
        {**answered, "instance_id": "t1", "answer_error": "NoMatchError: calc.py: ..."},
    ])
    # Detection: two pairs and one lone sample; base answers 'vulnerable' to everything, one answer unreadable.
    labels = {"p1-v": "vulnerable", "p1-b": "benign", "p2-v": "vulnerable", "p2-b": "benign", "lone": "benign"}
    samples = [DetectionSample(sample_id=s, dataset="mini_detection_eval", code="int f(void);", label=label,
                               cwe=[], project="demo", commit_id=None,
                               pair_id=s.split("-")[0] if "-" in s else None) for s, label in labels.items()]
    write_samples(experiment / "detection" / "samples.jsonl", samples)
    answers = {"p1-v": "vulnerable", "p1-b": "vulnerable", "p2-v": "vulnerable", "p2-b": "benign", "lone": None}
    model_dir = experiment / "detection" / "eval" / "mini_detection_eval" / "base"
    write_jsonl(model_dir / "predictions.jsonl", [
        {"instance_id": s, "model_name_or_path": "base", "model_patch": "", "answer": a} for s, a in answers.items()
    ])
    assert evaluate_main(["detection", "--tasks", str(experiment / "detection" / "samples.jsonl"),
                          "--predictions", str(model_dir / "predictions.jsonl"), "--out",
                          str(model_dir / "grading"), "--run-id", "eval"]) == 0

    out = experiment / "detection" / "report" / "report.md"
    assert report_main(["--experiment-dir", str(experiment), "--task", "detection", "--out", str(out)]) == 0
    text = out.read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:3] == ["## Repository repair (the agent in a sandbox)",
                            "## File-level repair (search/replace edits, one turn)",
                            "## Vulnerability detection (one turn)"]
    assert "| mini_eval_python | sft | 50.0% (1/2) |" in text  # edits applied
    # 3 of 5 right; 'vulnerable' predicted 3 times, 2 right: precision 66.7%, recall 100%
    assert "| mini_detection_eval | base | 5 | 60.0% | 20.0% | 66.7% / 100.0% / 80.0% |" in text
    # pair 1: both 'vulnerable' (P-V); pair 2: both right (P-C)
    assert "| mini_detection_eval | base | 2 | 50.0% | 50.0% | 0.0% | 0.0% |" in text
    results = json.loads((out.parent / "results.json").read_text())
    assert [(r["model"], r["accuracy"], r["pairs"]) for r in results] == [("base", 0.6, 2)]
    assert (out.parent / "detection_accuracy.png").stat().st_size > 1000


def test_grading_integrity_counts_from_outcomes_to_the_report(tmp_path):
    """Grading errors, test timeouts and test-infrastructure edits are counted per model from the outcome files
    (never folded into 'unresolved'), and the report shows them; another harness's summary says 'not counted'."""
    from repairrl.grading.run_evaluation import make_run_summary, validate_report
    from repairrl.tasks import Task

    tasks = [Task(instance_id=f"t{n}", dataset="d", repo="o/r", repo_url="u", base_commit="0" * 40,
                  problem_statement="p", gold_patch="", test_patch="", fail_to_pass=[], pass_to_pass=[])
             for n in range(5)]
    outcomes = {
        "t0": {"status": "resolved"},
        "t1": {"status": "unresolved", "test_infra_edits": ["conftest.py"]},
        "t2": {"status": "unresolved", "timed_out_tests": ["tests/test_a.py::test_loop"]},
        "t3": {"status": "error", "reason": "the test patch does not apply"},
    }
    model_dir = tmp_path / "eval" / "mini_eval_python" / "grpo" / "grading" / "grpo"
    for instance_id, outcome in outcomes.items():
        (model_dir / instance_id).mkdir(parents=True)
        (model_dir / instance_id / "outcome.json").write_text(json.dumps(outcome))
    predictions = {t.instance_id: {"model_patch": "diff --git a/x b/x\n"} for t in tasks}  # t4: never graded
    run_summary = make_run_summary(tasks, predictions, model_dir, "grpo", "eval")
    validate_report(run_summary, "run_summary")
    assert run_summary["grading_error_ids"] == ["t3", "t4"] and run_summary["test_timeout_ids"] == ["t2"]
    assert run_summary["test_infra_edits"] == {"t1": ["conftest.py"]}
    (model_dir.parent / "grpo.eval.json").write_text(json.dumps(run_summary))
    base_dir = tmp_path / "eval" / "mini_eval_python" / "base" / "grading"
    base_dir.mkdir(parents=True)
    (base_dir / "base.eval.json").write_text(json.dumps(summary(1, 0, total=5)))

    out = tmp_path / "report" / "report.md"
    assert report_main(["--experiment-dir", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| mini_eval_python | grpo | 2/5 (40.0%) | 1/5 (20.0%) | 1/5 (20.0%) |" in text
    assert "| mini_eval_python | base | not counted | not counted | not counted |" in text
    row = next(r for r in json.loads((out.parent / "results.json").read_text()) if r["model"] == "grpo")
    assert (row["grading_errors"], row["test_timeouts"], row["test_infra_edits"]) == (2, 1, 1)


def test_a_local_run_reports_no_gpu_hours_and_its_cpu_hours(experiment):
    """Without the SLURM profile the jobs ran under (the local executor), no job used a GPU."""
    out = experiment / "report" / "report.md"
    assert report_main(["--experiment-dir", str(experiment), "--out", str(out)]) == 0
    with open(out.parent / "compute.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["rule"] == "evaluate_shard" and float(row["gpu_hours"]) == 0 and row["gpus"] == "0"
    assert float(row["cpu_hours"]) == pytest.approx(10 / 3600)  # the TSV's cpu_time column
    assert "| evaluate_shard | 1 | 1.000 | 0.003 | 0 | 0.000 |" in out.read_text()


# --- training curves ---


def write_metrics(path: Path, rows: list[dict]) -> Path:
    """A metrics.csv as repairrl.training writes it: one row per step, blank where a step logged nothing."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


SFT_STEPS = [{"step": 1, "step_s": 0.5, "loss": 2.5, "mean_token_accuracy": 0.3},
             {"step": 2, "step_s": 0.5, "loss": 2.0, "mean_token_accuracy": 0.4},
             {"step": 3, "loss": 1.5}]  # a step restored from a checkpoint's log: no wall time, no accuracy
GRPO_STEPS = [{"step": s, "loss": 0.01 * s, "reward": 0.2 * s, "reward_std": 0.1, "clip_ratio_region_mean": 0.0,
               "clip_ratio_low_mean": 0.0, "clip_ratio_high_mean": 0.0, "turns_per_episode": 2 + s,
               "completions_mean_length": 100.0 * s} for s in (1, 2, 3)]


def test_training_curves_are_plotted_from_the_metrics_files(experiment, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep each figure to read its data back
    sft = write_metrics(experiment / "models" / "sft" / "metrics.csv", SFT_STEPS)
    grpo = write_metrics(experiment / "models" / "grpo" / "metrics.csv", GRPO_STEPS)
    out = experiment / "report" / "report.md"
    assert report_main(["--experiment-dir", str(experiment), "--out", str(out), "--sft-metrics", str(sft),
                        "--grpo-metrics", str(grpo)]) == 0
    text = out.read_text()
    for name in ("sft_curves.png", "grpo_curves.png"):
        assert (out.parent / name).stat().st_size > 1000 and f"]({name})" in text

    def lines(figure) -> list[list[tuple[float, float]]]:
        return [[tuple(map(float, p)) for p in line.get_xydata()] for ax in figure.axes for line in ax.lines]

    sft_figure = next(f for f in figures if f.texts and f.texts[0].get_text() == "SFT")
    grpo_figure = next(f for f in figures if f.texts and f.texts[0].get_text() == "GRPO")
    assert lines(sft_figure) == [[(1, 2.5), (2, 2.0), (3, 1.5)], [(1, 0.3), (2, 0.4)]]
    reward, loss, clip, *_, turns, tokens = lines(grpo_figure)  # clip: region, low, high
    assert reward == [(1, 0.2), (2, 0.4), (3, pytest.approx(0.6))]
    assert loss == [(1, 0.01), (2, 0.02), (3, 0.03)] and clip == [(1, 0.0), (2, 0.0), (3, 0.0)]
    assert turns == [(1, 3), (2, 4), (3, 5)] and tokens == [(1, 100), (2, 200), (3, 300)]
    band = grpo_figure.axes[0].collections[0].get_paths()[0].vertices  # reward ± std
    assert band[:, 1].min() == pytest.approx(0.1) and band[:, 1].max() == pytest.approx(0.7)


def test_grpo_curves_show_kl_when_logged_and_say_when_a_stage_logged_no_step(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from repairrl.report import plots

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    steps = [{**row, "kl": 0.001 * row["step"]} for row in GRPO_STEPS]
    plots.draw_grpo_curves(build.read_step_metrics(write_metrics(tmp_path / "grpo.csv", steps)), tmp_path)
    assert figures[0].axes[2].get_ylabel() == "KL to the reference"
    assert [y for _, y in figures[0].axes[2].lines[0].get_xydata()] == pytest.approx([0.001, 0.002, 0.003])
    (tmp_path / "empty.csv").write_text("step\n")  # a resumed run with no step left to do
    paths = plots.draw_sft_curves(build.read_step_metrics(tmp_path / "empty.csv"), tmp_path)
    assert next(iter(paths.values())).is_file()
    assert "no loss logged" in [t.get_text() for t in figures[1].axes[0].texts]
