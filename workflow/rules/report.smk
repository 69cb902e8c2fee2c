# The comparison report: every number recomputed from the records on disk.


def eval_summaries(wildcards):
    return [
        task_path("eval", dataset, model, "grading", f"{model}.eval.json")
        for dataset in datasets_with_role("eval")
        for model in eval_models()
    ]


def report_inputs(wildcards):
    """Everything the report reads, declared, so that deleting or redoing any of it redoes the report."""
    inputs = {
        "summaries": eval_summaries(wildcards),
        "predictions": [task_path("eval", dataset, model, "predictions.jsonl")
                        for dataset in datasets_with_role("eval") for model in eval_models()],
    }
    if stage_enabled("sft"):
        inputs["sft_stats"] = task_path("sft", "dataset_stats.json")
        inputs["sft_metrics"] = task_path("models", "sft", "metrics.csv")
    if stage_enabled("grpo"):
        inputs["grpo_metrics"] = task_path("models", "grpo", "metrics.csv")
    return inputs


def report_outputs():
    """report.md, the task's tables and its plots (tagged for `snakemake --report`)."""
    outputs = {
        "md": task_path("report", "report.md"),
        "table": report(task_path("report", "results.csv"), caption="../report/results.rst", category="Results"),
        "compute": report(task_path("report", "compute.csv"), caption="../report/compute.rst", category="Compute"),
    }
    plots = ["detection_accuracy"] if TASK == "detection" else ["resolve_rate", "episode_rates", "tool_use",
                                                                   "turns_tokens"]
    for plot in plots:
        outputs[plot] = report(task_path("report", f"{plot}.png"), caption=f"../report/{plot}.rst", category="Plots")
    for stage_name in ("sft", "grpo"):
        if stage_enabled(stage_name):
            outputs[f"{stage_name}_curves"] = report(task_path("report", f"{stage_name}_curves.png"),
                                                     caption=f"../report/{stage_name}_curves.rst",
                                                     category="Training")
    return outputs


def training_curves(wildcards, input):
    """The metrics.csv of each training stage that ran, for the report's training-curve plots."""
    return " ".join(f"--{name.replace('_', '-')} {input[name]}" for name in ("sft_metrics", "grpo_metrics")
                    if name in input.keys())


def gpu_profile(wildcards):
    """GPU counts come from the SLURM allocations the jobs ran in; the local executor gives them none."""
    plugin = workflow.executor_plugin
    return "--profile profiles/slurm/config.yaml" if plugin is not None and "slurm" in plugin.name else ""


rule report:
    input:
        unpack(report_inputs),
    output:
        **report_outputs(),
    log:
        f"{TASK_LOGS}/report.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/report/report.tsv"
    params:
        study_dir=STUDY_DIR,
        gpu_profile=gpu_profile,
        curves=training_curves,
        tracking=tracking_flags("report"),
    shell:
        "python -m repairrl.report --experiment-dir {params.study_dir} --task {TASK} --base-model {BASE_MODEL} "
        "{params.gpu_profile} {params.curves} {params.tracking} --out {output.md} > {log} 2>&1"
