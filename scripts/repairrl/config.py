"""Config validation: everything that can be checked before the first job, each problem on a line of its own.

Three layers, all run by the Snakefile at start-up (so `snakemake -n` fails on a bad config):
1. the schema (workflow/schemas/config.schema.yaml): keys, types, ranges;
2. the stages' own options: `sft.train` and `grpo.train` keys are the fields of the stage CLIs' argument
   dataclasses (ours and TRL's/transformers', read from their source files so no heavy import happens here);
3. references between sections and model sources: models and datasets named elsewhere exist, local model paths
   exist, hub ids look like `owner/name`.

Values given on the command line as nested YAML (`--config 'agent={max_tool_calls: 2}'`) reach Snakemake as
text; where the schema wants a number or a boolean, the text is read as YAML first.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from functools import cache
from pathlib import Path

from repairrl.records import load_schema


class ConfigError(ValueError):
    """The configuration is invalid; the message has one line per problem: the key, the value, what was expected."""


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The argument dataclasses of each stage CLI: (module, class) pairs whose fields are the stage's `train` keys.
STAGE_ARGUMENTS = {
    "sft": (("repairrl.sft.train", "SFTScriptArguments"), ("repairrl.sft.train", "RepairSFTConfig")),
    "grpo": (("repairrl.grpo.train", "GRPOScriptArguments"), ("repairrl.grpo.train", "RepairGRPOConfig")),
}
# Where classes that packages re-export lazily (so their __init__ does not define them) are defined.
LAZY_EXPORTS = {
    "SFTConfig": "trl.trainer.sft_config",
    "GRPOConfig": "trl.trainer.grpo_config",
    "TrainingArguments": "transformers.training_args",
}
TRAINED_MODELS = ("sft", "grpo")


def _describe(error) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "type":
        return f"key '{key}': expected {error.validator_value}, got {type(error.instance).__name__} ({error.instance!r})"
    if error.validator == "enum":
        return f"key '{key}': {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "required":
        return f"key '{key}': {error.message}"
    if error.validator == "additionalProperties":
        return f"key '{key}': {error.message} (check the spelling against the configuration reference in README.md)"
    hint = f" ({schema['description']})" if "description" in schema else ""
    return f"key '{key}': {error.message}{hint}"


def _read_text_values(config: dict, validator) -> None:
    """Replace text where the schema wants a number or a boolean by its YAML reading, where that fits."""
    import yaml

    wanted = {"integer": int, "number": (int, float), "boolean": bool}
    for error in validator.iter_errors(config):
        expected = error.validator_value if error.validator == "type" else None
        types = [expected] if isinstance(expected, str) else list(expected or [])
        if not isinstance(error.instance, str) or not error.absolute_path or not set(types) & wanted.keys():
            continue
        try:
            value = yaml.safe_load(error.instance)
        except yaml.YAMLError:
            continue
        if any(isinstance(value, wanted[t]) and not (t != "boolean" and isinstance(value, bool))
               for t in types if t in wanted):
            parent = config
            for part in list(error.absolute_path)[:-1]:
                parent = parent[part]
            parent[error.absolute_path[-1]] = value


def _module_file(module: str) -> Path | None:
    """The source file of `module`, found without importing it (nor its packages)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations)), *rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def dataclass_fields(module: str, class_name: str) -> frozenset[str]:
    """Field names of a dataclass and its bases, read from the source (annotated names of each class body)."""
    path = _module_file(module)
    tree = ast.parse(path.read_text(encoding="utf-8")) if path else ast.Module(body=[], type_ignores=[])
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if class_name not in classes:
        lazy = LAZY_EXPORTS.get(class_name)
        return dataclass_fields(lazy, class_name) if lazy and lazy != module else frozenset()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    imported = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join([*parts, *([node.module] if node.module else [])])
            imported.update({alias.asname or alias.name: source for alias in node.names})
    definition = classes[class_name]
    names = {n.target.id for n in definition.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    for base in definition.bases:
        if isinstance(base, ast.Name) and (base.id in classes or base.id in imported):
            names |= dataclass_fields(module if base.id in classes else imported[base.id], base.id)
    return frozenset(names)


def _stage_option_problems(config: dict) -> list[str]:
    problems = []
    for stage, classes in STAGE_ARGUMENTS.items():
        options = (config.get(stage) or {}).get("train") or {}
        known = frozenset().union(*(dataclass_fields(module, name) for module, name in classes))
        if not known:  # the stage's sources are not installed here: nothing to check against
            continue
        for key in options:
            if key not in known:
                close = sorted(k for k in known if _similar(key, k))[:3]
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                problems.append(f"key '{stage}.train.{key}': not an option of python -m repairrl.{stage}.train{hint}")
    return problems


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.8


def model_source_problem(source: str) -> str | None:
    """Why a model source cannot be loaded, or None: 'embedded', 'gguf:<existing file>', an existing local
    directory, or a hub id written as owner/name."""
    if source == "embedded":
        return None
    if source.startswith("gguf:"):
        file = os.path.expanduser(source[len("gguf:"):])
        return None if os.path.isfile(file) else f"GGUF file {file!r} does not exist"
    path = os.path.expanduser(source)
    if source.startswith(("/", ".", "~")) or os.path.exists(path):
        return None if os.path.isdir(path) else f"local model directory {path!r} does not exist"
    if not HUB_ID.match(source):
        return ("neither 'embedded', 'gguf:<file>', an existing directory, nor a hub id of the form owner/name "
                "(e.g. Qwen/Qwen3-14B)")
    return None


def _reference_problems(config: dict) -> list[str]:
    problems = []
    models = config.get("models") or {}
    for name, entry in models.items():
        problem = model_source_problem(str((entry or {}).get("source", "")))
        if problem:
            problems.append(f"key 'models.{name}.source': {entry.get('source')!r}: {problem}")
    datasets = config.get("datasets") or {}
    roles = {name: (entry or {}).get("role") for name, entry in datasets.items()}
    # A disabled stage's model is skipped by the evaluation (not an error): the name only has to be one we know.
    evaluable = set(models) | set(TRAINED_MODELS)
    for model in (config.get("evaluation") or {}).get("models") or []:
        if model not in evaluable:
            problems.append(f"key 'evaluation.models': {model!r} is neither a model of `models` nor a trained "
                            f"model (one of {sorted(evaluable)})")
    for dataset in ((config.get("evaluation") or {}).get("shards") or {}):
        if roles.get(dataset) != "eval":
            problems.append(f"key 'evaluation.shards.{dataset}': not a dataset with role eval "
                            f"(one of {sorted(n for n, r in roles.items() if r == 'eval')})")
    for stage in TRAINED_MODELS:
        dataset = (config.get(stage) or {}).get("dataset")
        if dataset is not None and roles.get(dataset) != "train":
            problems.append(f"key '{stage}.dataset': {dataset!r} is not a dataset with role train "
                            f"(one of {sorted(n for n, r in roles.items() if r == 'train')})")
    base_model = config.get("base_model")
    if base_model is not None and base_model not in models:
        problems.append(f"key 'base_model': {base_model!r} is not a model of `models` (one of {sorted(models)})")
    teacher = (config.get("sft") or {}).get("teacher")
    if teacher and not teacher.startswith(("http://", "https://")) and teacher not in models:
        problems.append(f"key 'sft.teacher': {teacher!r} is neither a model of `models` nor an endpoint URL")
    return problems


def validate_config(config: dict) -> None:
    """Check `config` (in place: text read as numbers where the schema wants numbers); raise ConfigError with one
    line per problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("config"))
    _read_text_values(config, validator)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    problems = [_describe(e) for e in errors]
    if not errors:  # the later checks assume the shapes the schema guarantees
        problems += _stage_option_problems(config) + _reference_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
