# Stage 5: evaluation of each model on each benchmark (agent rollouts per shard, then grading).


def eval_shard_predictions(wildcards):
    return expand(
        f"{TASK_DIR}/eval/{{dataset}}/{{model}}/shards/predictions-{{shard}}.jsonl",
        dataset=wildcards.dataset,
        model=wildcards.model,
        shard=range(eval_num_shards(wildcards.dataset)),
    )


def harness_flags():
    evaluation = config["evaluation"]
    flags = {
        "backend": evaluation["backend"],
        "container_backend": evaluation["container_backend"],
        "sandbox": config["agent"]["sandbox"],
        "timeout": evaluation["timeout_s"],
        "test_timeout": config["grading"]["test_timeout_s"],
        "gitbug_java_root": evaluation.get("gitbug_java_root"),
        "sif_dir": PATHS.get("sif_dir"),
    }
    return cli_flags(flags)


rule evaluate_shard:
    input:
        tasks=rules.fetch.output.tasks,
        cache=cache_inputs,
        model=lambda wildcards: model_inputs(wildcards.model),
    output:
        f"{TASK_DIR}/eval/{{dataset}}/{{model}}/shards/predictions-{{shard}}.jsonl",
    log:
        main=f"{TASK_LOGS}/evaluate_shard/{{dataset}}/{{model}}-{{shard}}.log",
        agent=f"{TASK_LOGS}/evaluate_shard/{{dataset}}/{{model}}-{{shard}}.agent.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/evaluate_shard/{{dataset}}-{{model}}-{{shard}}.tsv"
    # Below the training chain, above grading: the last model's episodes end the run, the others' grades wait.
    priority: 5
    params:
        # Not an output: a failed job's outputs are deleted, and this journal is what a killed shard resumes from;
        # it is resumed only for the same model weights, tasks and agent flags (its .fingerprint.json).
        journal=lambda wildcards: task_path(
            "eval", wildcards.dataset, wildcards.model, "journal", f"trajectories-{wildcards.shard}.jsonl"
        ),
        num_shards=lambda wildcards: eval_num_shards(wildcards.dataset),
        serve=lambda wildcards: serve_flags(wildcards.model),
        agent=lambda wildcards: agent_flags(
            wildcards.model, {"samples": config["evaluation"]["samples"]}
        ),
    shell:
        "python -m repairrl.evaluate shard --task {TASK} --tasks {input.tasks} --shard {wildcards.shard} "
        "--num-shards {params.num_shards} --model-name {wildcards.model} --trajectories {params.journal} "
        "--out {output} {params.serve} --agent-log {log.agent} -- {params.agent} > {log.main} 2>&1"


rule evaluate_predictions:
    input:
        tasks=rules.fetch.output.tasks,
        shards=eval_shard_predictions,
    output:
        f"{TASK_DIR}/eval/{{dataset}}/{{model}}/predictions.jsonl",
    log:
        f"{TASK_LOGS}/evaluate_predictions/{{dataset}}/{{model}}.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/evaluate_predictions/{{dataset}}-{{model}}.tsv"
    params:
        journals=lambda wildcards, input: " ".join(
            p.replace("/shards/predictions-", "/journal/trajectories-") for p in input.shards
        ),
    shell:
        "python -m repairrl.evaluate predictions --task {TASK} --tasks {input.tasks} --trajectories {params.journals} "
        "--model-name {wildcards.model} --out {output} > {log} 2>&1"


def grade_command(dataset, tasks, predictions, out_dir, threads):
    """Repair tasks run the tests through a harness backend; detection answers are scored against the labels.
    The one grading command, of the evaluations (rule grade) and of the SFT rollouts (rule sft_grade)."""
    if is_detection_dataset(dataset):
        return f"python -m repairrl.evaluate detection --tasks {tasks} --predictions {predictions} " \
            f"--out {out_dir} --run-id eval"
    return (
        f"python -m repairrl.evaluate harness --tasks {tasks} --predictions {predictions} "
        f"--out {out_dir} --run-id eval --cache-dir {CACHE['dir']} --workers {threads} {harness_flags()}"
    )


rule grade:
    input:
        tasks=rules.fetch.output.tasks,
        cache=cache_inputs,
        predictions=rules.evaluate_predictions.output,
    output:
        f"{TASK_DIR}/eval/{{dataset}}/{{model}}/grading/{{model}}.eval.json",
    log:
        f"{TASK_LOGS}/grade/{{dataset}}/{{model}}.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/grade/{{dataset}}-{{model}}.tsv"
    params:
        command=lambda wildcards, input, output, threads: grade_command(
            wildcards.dataset, input.tasks, input.predictions, os.path.dirname(output[0]), threads
        ),
    threads: config["evaluation"]["workers"]
    shell:
        "{params.command} > {log} 2>&1"
