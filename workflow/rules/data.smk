# Stage 1: models, the bundled mini benchmark, dataset fetch and the repository cache.


rule prepare_model:
    output:
        f"{STUDY_DIR}/models/{{model}}/model.json",
    wildcard_constraints:
        model="|".join(config["models"]),
    log:
        f"{LOGS}/{EXPERIMENT}/prepare_model/{{model}}.log",
    benchmark:
        f"{STUDY_DIR}/benchmarks/prepare_model/{{model}}.tsv"
    params:
        source=lambda wildcards: config["models"][wildcards.model]["source"],
        revision=lambda wildcards: cli_flags({"revision": config["models"][wildcards.model].get("revision")}),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m repairrl.models.prepare --name {wildcards.model} --source {params.source:q} "
        "--out {params.out_dir} {params.revision} > {log} 2>&1"


rule mini_benchmark:
    input:
        MINI_TASK_SOURCES,
    output:
        rows=f"{MINI_BENCHMARK_DIR}/tasks.jsonl",
        repos=directory(f"{MINI_BENCHMARK_DIR}/repos"),
    log:
        f"{LOGS}/mini_benchmark.log",
    benchmark:
        f"{RESULTS}/benchmarks/mini_benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m repairrl.data.mini_benchmark --out {MINI_BENCHMARK_DIR} > {log} 2>&1"


rule fetch:
    input:
        unpack(fetch_inputs),
    output:
        tasks=f"{TASK_DIR}/data/{{dataset}}/tasks.jsonl",
        skipped=f"{TASK_DIR}/data/{{dataset}}/skipped.jsonl",
    log:
        f"{TASK_LOGS}/fetch/{{dataset}}.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/fetch/{{dataset}}.tsv"
    params:
        spec=dataset_spec_json,
        path=local_source_path,
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m repairrl.data.fetch --dataset {wildcards.dataset} --spec {params.spec:q} {params.path} "
        "--out {output.tasks} --skipped {output.skipped} > {log} 2>&1"


rule cache:
    input:
        tasks=rules.fetch.output.tasks,
    output:
        f"{TASK_DIR}/data/{{dataset}}/cache.jsonl",
    log:
        f"{TASK_LOGS}/cache/{{dataset}}.log",
    benchmark:
        f"{TASK_DIR}/benchmarks/cache/{{dataset}}.tsv"
    params:
        cache_dir=CACHE["dir"],
        timeout=CACHE["fetch_timeout_s"],
        workers=CACHE["workers"],
    # Fetches wait on the network and the disk, not on the CPU: one core runs all `workers` of them. A job asking
    # for `workers` cores would wait until every core is free, behind the SFT rollouts on a 2-core machine.
    threads: 1
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m repairrl.repos --tasks {input.tasks} --cache-dir {params.cache_dir} --out {output} "
        "--workers {params.workers} --timeout {params.timeout} > {log} 2>&1"
