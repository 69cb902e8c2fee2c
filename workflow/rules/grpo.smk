# Stage 4: GRPO (GSPO / Dr.GRPO) with the agent in the loop, from the SFT model or the base model.


def grpo_init_model():
    init = stage("grpo")["init"]
    return "sft" if init == "sft" and stage_enabled("sft") else BASE_MODEL


def grpo_server(wildcards, input):
    """Full configs: the trainer runs under `python -m repairrl.grpo.server`, which starts TRL's vLLM server on
    the allocation's first GPU and the trainer on the others (indices into the job's own devices), each on ports
    free at start-up (a fixed `grpo.server.port` only if the config sets one). CPU runs generate in-process."""
    if stage("grpo")["generation"] != "vllm":
        return ""
    server = stage("grpo")["server"]
    port = f"--port {server['port']} " if server.get("port") else ""
    return (
        f"python -m repairrl.grpo.server --model {os.path.dirname(input.model)} "
        f"--server-gpus {server['gpus']} --trainer-gpus {server['trainer_gpus']} "
        f"{port}--log {TASK_LOGS}/grpo.vllm.log --"
    )


rule grpo:
    input:
        model=lambda wildcards: model_manifest(grpo_init_model()),
        tasks=lambda wildcards: task_path("data", stage_dataset("grpo"), "tasks.jsonl"),
        cache=lambda wildcards: dataset_cache(stage_dataset("grpo")),
    output:
        manifest=f"{TASK_DIR}/models/grpo/model.json",
        merged=directory(f"{TASK_DIR}/models/grpo/merged"),
        final=directory(f"{TASK_DIR}/models/grpo/final"),
        metrics=f"{TASK_DIR}/models/grpo/metrics.csv",
        episodes=f"{TASK_DIR}/models/grpo/episodes.jsonl",
        summary=f"{TASK_DIR}/models/grpo/train_summary.json",
    log:
        main=f"{TASK_LOGS}/grpo.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/grpo/grpo.tsv"
    # The training chain is the run's critical path: start it before evaluations that are ready at the same time.
    priority: 10
    params:
        model_dir=lambda wildcards, input: os.path.dirname(input.model),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        server=grpo_server,
        launcher=stage("grpo")["launcher"],
        algorithm=stage("grpo")["algorithm"],
        rewards=task_rewards(),
        episode=cli_flags(
            {
                "sandbox": config["agent"]["sandbox"],
                "episode_max_new_tokens": config["agent"].get("max_new_tokens"),
                "command_timeout": config["agent"].get("command_timeout_s"),
                "episode_timeout": config["agent"].get("timeout_s"),
                "sandbox_memory_mb": config["agent"].get("memory_mb"),
                "sandbox_cpus": config["agent"].get("cpus"),
                "sandbox_max_workdir_mb": config["agent"].get("max_workdir_mb"),
                "grading_budget": config["grading"]["budget_s"],
                "grading_test_timeout": config["grading"]["test_timeout_s"],
                "max_file_chars": config["agent"].get("max_file_chars") if TASK == "file_repair" else None,
            }
        ),
        train=cli_flags(stage("grpo")["train"]),
        tracking=tracking_flags("grpo"),
        cache_dir=CACHE["dir"],
    shell:
        # --resume continues the step count and data order of a killed or preempted run; checkpoints of another
        # model, task table or flags (checkpoints.fingerprint.json) are removed and training starts at step 0.
        "{params.server} {params.launcher} repairrl.grpo.train --task {TASK} --model {params.model_dir} --tasks {input.tasks} "
        "--cache-dir {params.cache_dir} --out {params.out_dir} --algorithm {params.algorithm} "
        "--rewards {params.rewards} --resume {params.episode} {params.tracking} {params.train} > {log.main} 2>&1"
