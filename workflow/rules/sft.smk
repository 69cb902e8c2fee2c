# Stage 2-3: SFT data by best-of-N agent rollouts of a teacher, then LoRA SFT on the kept trajectories.
from repairrl.evaluate.predictions import sample_model_name

# The model name of the rollouts' predictions and of their grading, whichever model the teacher is.
ROLLOUT_MODEL = "teacher"


def tracking_flags(stage_name):
    """wandb for sft, grpo and the report: one group per study, offline runs under results/<exp>/wandb."""
    tracking = config["tracking"]
    flags = {"tracking": tracking["wandb"], "tracking_group": tracking.get("group", EXPERIMENT)}
    if stage_name == "report":  # the report writes under --experiment-dir, the study's folder
        flags["wandb_project"] = tracking["project"]
    else:
        flags.update(tracking_dir=STUDY_DIR, tracking_project=tracking["project"])
    return cli_flags(flags)


def sft_teacher():
    return stage("sft").get("teacher", BASE_MODEL)


def sft_rollout_shards(wildcards):
    return expand(
        f"{TASK_DIR}/sft/rollouts/predictions-{{shard}}.jsonl",
        shard=range(stage("sft")["shards"]),
    )


def sft_criterion():
    """Detection keeps the episodes that answered the right label; repair tasks use the configured criterion."""
    return "correct_label" if TASK == "detection" else stage("sft")["criterion"]


def sft_rollout_journals(wildcards, input):
    return " ".join(p.replace("/predictions-", "/trajectories-") for p in input.rollouts)


def sft_grades(grading_dir):
    """The run summaries of the rollouts' grading: one per sample, each graded as a model of its own."""
    return [f"{grading_dir}/{sample_model_name(ROLLOUT_MODEL, sample)}.eval.json" for sample in range(stage("sft")["samples"])]


def sft_dataset_inputs(wildcards):
    inputs = {"tasks": task_path("data", stage_dataset("sft"), "tasks.jsonl"), "rollouts": sft_rollout_shards(wildcards)}
    if stage("sft")["expert_demos"]:
        inputs["demos"] = task_path("sft", "expert_demos.jsonl")
    if sft_criterion() == "resolved":
        inputs["grading"] = task_path("sft", "grading")
    return inputs


rule sft_rollouts:
    input:
        tasks=lambda wildcards: task_path("data", stage_dataset("sft"), "tasks.jsonl"),
        cache=lambda wildcards: dataset_cache(stage_dataset("sft")),
        teacher=lambda wildcards: model_inputs(sft_teacher()),
    output:
        f"{TASK_DIR}/sft/rollouts/predictions-{{shard}}.jsonl",
    log:
        main=f"{TASK_LOGS}/sft_rollouts/{{shard}}.log",
        agent=f"{TASK_LOGS}/sft_rollouts/{{shard}}.agent.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/sft_rollouts/{{shard}}.tsv"
    # The training chain is the run's critical path: start it before evaluations that are ready at the same time.
    priority: 10
    params:
        # The journal is not an output: Snakemake deletes a failed job's outputs, and the journal is what
        # lets a killed shard resume where it stopped (only with the same teacher, tasks and agent flags).
        journal=lambda wildcards: task_path("sft", "rollouts", f"trajectories-{wildcards.shard}.jsonl"),
        num_shards=stage("sft")["shards"],
        serve=lambda wildcards: serve_flags(sft_teacher()),
        agent=lambda wildcards: agent_flags(sft_teacher(), {"samples": stage("sft")["samples"]}),
    shell:
        "python -m repairrl.evaluate shard --task {TASK} --tasks {input.tasks} --shard {wildcards.shard} "
        "--num-shards {params.num_shards} --model-name {ROLLOUT_MODEL} --trajectories {params.journal} --out {output} "
        "{params.serve} --agent-log {log.agent} -- {params.agent} > {log.main} 2>&1"


rule sft_expert_demos:
    input:
        tasks=lambda wildcards: task_path("data", stage_dataset("sft"), "tasks.jsonl"),
        cache=lambda wildcards: dataset_cache(stage_dataset("sft")),
    output:
        f"{TASK_DIR}/sft/expert_demos.jsonl",
    log:
        f"{TASK_LOGS}/sft_expert_demos.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/sft_expert_demos/sft_expert_demos.tsv"
    params:
        cache_dir=CACHE["dir"],
    shell:
        "python -m repairrl.sft.expert --task {TASK} --tasks {input.tasks} --cache-dir {params.cache_dir} "
        "--out {output} > {log} 2>&1"


rule sft_grade:
    # Criterion resolved: the rollouts' patches graded by the evaluation's grading command (grade_command), one
    # prediction per (task, sample). The folder is the output, so Snakemake clears it before a regrade and no
    # verdict of earlier rollouts survives.
    input:
        tasks=lambda wildcards: task_path("data", stage_dataset("sft"), "tasks.jsonl"),
        cache=lambda wildcards: dataset_cache(stage_dataset("sft")),
        rollouts=sft_rollout_shards,
    output:
        directory(f"{TASK_DIR}/sft/grading"),
    log:
        f"{TASK_LOGS}/sft_grade.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/sft_grade/sft_grade.tsv"
    params:
        journals=sft_rollout_journals,
        samples=stage("sft")["samples"],
        predictions=lambda wildcards, output: f"{output[0]}/predictions.jsonl",
        command=lambda wildcards, input, output, threads: grade_command(
            stage_dataset("sft"), input.tasks, f"{output[0]}/predictions.jsonl", output[0], threads
        ),
    threads: config["evaluation"]["workers"]
    shell:
        "(python -m repairrl.evaluate predictions --task {TASK} --tasks {input.tasks} --trajectories {params.journals} "
        "--model-name {ROLLOUT_MODEL} --samples {params.samples} --out {params.predictions} && {params.command}) > {log} 2>&1"


rule sft_dataset:
    input:
        unpack(sft_dataset_inputs),
    output:
        data=directory(f"{TASK_DIR}/sft/dataset"),
        stats=f"{TASK_DIR}/sft/dataset_stats.json",
    log:
        f"{TASK_LOGS}/sft_dataset.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/sft_dataset/sft_dataset.tsv"
    params:
        journals=sft_rollout_journals,
        demos=lambda wildcards, input: f"--expert-demos {input.demos}" if "demos" in input.keys() else "",
        threshold=stage("sft")["threshold"],
        criterion=sft_criterion(),
        grades=lambda wildcards, input: (
            "--grades " + " ".join(sft_grades(input.grading)) if "grading" in input.keys() else ""
        ),
    shell:
        "python -m repairrl.sft.dataset --task {TASK} --trajectories {params.journals} --tasks {input.tasks} "
        "--threshold {params.threshold} --criterion {params.criterion} {params.grades} {params.demos} "
        "--out {output.data} --stats {output.stats} > {log} 2>&1"


rule sft:
    input:
        model=model_manifest(BASE_MODEL),
        data=rules.sft_dataset.output.data,
    output:
        manifest=f"{TASK_DIR}/models/sft/model.json",
        merged=directory(f"{TASK_DIR}/models/sft/merged"),
        metrics=f"{TASK_DIR}/models/sft/metrics.csv",
        summary=f"{TASK_DIR}/models/sft/train_summary.json",
    log:
        f"{TASK_LOGS}/sft.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/sft/sft.tsv"
    # The training chain is the run's critical path: start it before evaluations that are ready at the same time.
    priority: 10
    params:
        model_dir=lambda wildcards, input: os.path.dirname(input.model),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        launcher=stage("sft")["launcher"],
        train=cli_flags(stage("sft")["train"]),
        tracking=tracking_flags("sft"),
    shell:
        # --resume continues a killed or preempted run from its last checkpoint; checkpoints of another model,
        # dataset or flags (checkpoints.fingerprint.json) are removed and training starts at step 0.
        "{params.launcher} repairrl.sft.train --model {params.model_dir} --dataset {input.data} "
        "--out {params.out_dir} --resume {params.tracking} {params.train} > {log} 2>&1"
