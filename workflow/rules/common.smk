# Path helpers and input functions: the only place that knows where outputs live.
import json
import shlex
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from repairrl.tasks import DATA_FORMATS

RESULTS = config["results_dir"]
LOGS = config["logs_dir"]
EXPERIMENT = config["experiment"]
# What the study trains and measures: repo_repair (the agent in a sandbox), file_repair or detection (single-turn).
TASK = config["task"]
STUDY_DIR = f"{RESULTS}/{EXPERIMENT}"
# The tasks of a study share its base models. repo_repair, the main task, owns the study's folder; each
# single-turn task keeps its data, models, evaluations and report in a folder of its own inside it.
TASK_DIR = STUDY_DIR if TASK == "repo_repair" else f"{STUDY_DIR}/{TASK}"
TASK_LOGS = f"{LOGS}/{EXPERIMENT}" if TASK == "repo_repair" else f"{LOGS}/{EXPERIMENT}/{TASK}"
MINI_BENCHMARK_DIR = f"{RESULTS}/mini_benchmark"


def package_sources(folder):
    return sorted(str(p) for p in Path(workflow.basedir, "..", "scripts/repairrl", folder).resolve().rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


MINI_TASK_SOURCES = package_sources("data/mini")
DETECTION_MINI_SOURCES = [*package_sources("data/detection_mini"),
                          str(Path(workflow.basedir, "..", "scripts/repairrl/data/detection_mini.py").resolve())]
CACHE = config["cache"]
PATHS = config["paths"]
# Jobs inherit this process's environment (locally, and through `sbatch --export=ALL`), so one setting here puts
# every stage's hub downloads in the same shared cache.
if PATHS.get("hf_home"):
    os.environ["HF_HOME"] = os.path.abspath(PATHS["hf_home"])
# Task images converted once to SIF files: every apptainer sandbox and grader looks there before `docker://`.
if PATHS.get("sif_dir"):
    os.environ["REPAIRRL_SIF_DIR"] = os.path.abspath(PATHS["sif_dir"])


def task_datasets():
    """The datasets the study's task reads (by format): repair benchmarks, or vulnerability-detection sets."""
    return [name for name, entry in config["datasets"].items() if entry["format"] in DATA_FORMATS[TASK]]


def is_detection_dataset(dataset):
    return dataset_config(dataset)["format"] in DATA_FORMATS["detection"]


wildcard_constraints:
    dataset="|".join(task_datasets()) or "no-dataset-for-this-task",
    model="|".join([*config["models"], "sft", "grpo"]),
    shard=r"\d+",


def dataset_config(dataset):
    return config["datasets"][dataset]


def dataset_spec_json(wildcards):
    """The dataset's config entry for the fetch CLI, with the mini benchmark's local remotes filled in."""
    entry = dict(dataset_config(wildcards.dataset))
    if entry["source"].get("builtin") == "mini":
        repos = Path(MINI_BENCHMARK_DIR, "repos").resolve()
        entry.setdefault("repo_url_template", f"file://{repos}/{{repo_key}}.git")
    if TASK == "file_repair" and entry["role"] == "train":
        # File-level training data: the tasks whose gold patch changes one file.
        entry["filters"] = {**entry.get("filters", {}), "single_file_patch": True}
    return json.dumps(entry, sort_keys=True)


def fetch_inputs(wildcards):
    """Built-in datasets depend on the rule that builds them, a local file is an input (an edit refetches it);
    hub sources have no input file."""
    source = dataset_config(wildcards.dataset)["source"]
    if source.get("builtin") == "mini":
        return {"rows": f"{MINI_BENCHMARK_DIR}/tasks.jsonl", "repos": f"{MINI_BENCHMARK_DIR}/repos"}
    if source.get("builtin") == "detection_mini":  # rows built from the package's files: rerun when they change
        return {"sources": DETECTION_MINI_SOURCES}
    if source.get("path"):
        return {"local": source["path"]}
    return {}


def dataset_cache(dataset):
    """Repair tasks need their repositories in the cache; detection samples carry their code."""
    return [] if is_detection_dataset(dataset) else [task_path("data", dataset, "cache.jsonl")]


def cache_inputs(wildcards):
    return dataset_cache(wildcards.dataset)


def local_source_path(wildcards, input):
    return f"--path {input.rows}" if "rows" in input.keys() else ""


def task_path(*parts):
    return os.path.join(TASK_DIR, *parts)


def all_targets():
    targets = [model_manifest(model) for model in config["models"]]
    # Task tables are targets in their own right, not intermediates: a deleted table is rebuilt (and what
    # depends on it rerun) instead of being silently left missing while the cache status is up to date.
    for dataset in task_datasets():
        targets.append(task_path("data", dataset, "tasks.jsonl"))
        if not is_detection_dataset(dataset):
            targets.append(task_path("data", dataset, "cache.jsonl"))
    targets += [model_manifest(model) for model in TRAINED_MODELS if stage_enabled(model)]
    if datasets_with_role("eval") and eval_models():
        # What the report reads, too: Snakemake leaves a missing intermediate missing while the outputs built
        # from it exist, so deleted evaluations would be neither redone nor noticed by the report.
        for inputs in report_inputs(None).values():
            targets += [inputs] if isinstance(inputs, str) else inputs
        targets.append(task_path("report", "report.md"))
    return targets


# ---- models, stages and their command-line flags ------------------------------------------------------------

TRAINED_MODELS = ("sft", "grpo")
# The model SFT and GRPO train from, and the report's baseline. Its default depends on `models`, which a schema
# default cannot say, so it is filled in here, once.
BASE_MODEL = config.setdefault("base_model", next(iter(config["models"])))


def stage(name):
    return config[name]


def stage_enabled(name):
    return stage(name)["enabled"]


def model_manifest(model):
    """Manifest of a base model (prepare_model; shared by the study's tasks) or of a model a stage trains."""
    if model in TRAINED_MODELS:
        return task_path("models", model, "model.json")
    return os.path.join(STUDY_DIR, "models", model, "model.json")


def stage_dataset(name):
    """The train dataset of a stage: `<stage>.dataset`, else the task's only train dataset."""
    if stage(name).get("dataset"):
        return stage(name)["dataset"]
    train = datasets_with_role("train")
    if len(train) != 1:
        raise WorkflowError(
            f"{name}.dataset is not set and task {TASK!r} has {len(train)} train datasets ({', '.join(train)}): "
            f"name one in the config ({name}.dataset)"
        )
    return train[0]


def task_rewards():
    """The reward weights of the study's task (`rewards.<task>`), as `name=weight,...`."""
    weights = config.get("rewards", {}).get(TASK)
    if not weights:
        raise WorkflowError(f"no reward weights for task {TASK!r}: set rewards.{TASK} in the config")
    return ",".join(f"{name}={weight}" for name, weight in weights.items())


def model_dir(model):
    return os.path.dirname(model_manifest(model))


def eval_models():
    models = config["evaluation"].get("models", [BASE_MODEL, *TRAINED_MODELS])
    return [m for m in models if m not in TRAINED_MODELS or stage_enabled(m)]


def datasets_with_role(role):
    return [name for name in task_datasets() if dataset_config(name)["role"] == role]


def eval_num_shards(dataset):
    return config["evaluation"]["shards"].get(dataset, 1)


def cli_flags(options):
    """{"max_steps": 4, "lora": True, "gradient_checkpointing": False} -> "--max-steps 4 --lora
    --gradient-checkpointing false" for the stage CLIs (TRL-style parsers take `--flag false`)."""
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags += [flag, "false"]
        elif value is not None:
            flags += [flag, shlex.quote(str(value))]
    return " ".join(flags)


def agent_flags(model, overrides=None):
    """Flags of `python -m repairrl.agent` for `model`: in-process on CPU, or an endpoint served elsewhere."""
    agent = {**config["agent"], **(overrides or {})}
    flags = {
        "cache_dir": CACHE["dir"],
        "sandbox": agent["sandbox"],
        "max_tool_calls": agent.get("max_tool_calls"),
        "max_tokens": agent.get("max_tokens"),
        "max_new_tokens": agent.get("max_new_tokens"),
        "timeout": agent.get("timeout_s"),
        "command_timeout": agent.get("command_timeout_s"),
        "memory_mb": agent.get("memory_mb"),
        "cpus": agent.get("cpus"),
        "max_workdir_mb": agent.get("max_workdir_mb"),
        "temperature": agent.get("temperature"),
        "workers": agent.get("workers"),
        "batch_size": agent.get("batch_size"),
        "samples": agent.get("samples"),
        "task": TASK,
        "max_file_chars": agent.get("max_file_chars") if TASK == "file_repair" else None,
        "no_progress": True,
    }
    if model.startswith(("http://", "https://")):
        flags["base_url"] = model
    elif not serving_with_vllm():
        flags.update(backend="inprocess", model=model_dir(model))
    return cli_flags(flags)


def serving_with_vllm():
    return config["evaluation"]["serve"]


def serve_flags(model):
    """Full configs start `vllm serve` on the shard's own GPU; the embedded default generates in-process."""
    if not serving_with_vllm() or model.startswith(("http://", "https://")):
        return ""
    # Each shard's server gets a free port and its own log beside the shard's agent log.
    return f"--serve-model {model_dir(model)}"


def model_inputs(model):
    return [] if model.startswith(("http://", "https://")) else [model_manifest(model)]
