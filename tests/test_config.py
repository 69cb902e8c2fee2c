import copy
from pathlib import Path

import pytest
import yaml
from repairrl.config import ConfigError, validate_config

from .conftest import REPO_ROOT

CONFIGS = [REPO_ROOT / "config" / "config.yaml", *sorted((REPO_ROOT / "config" / "experiments").glob("*.yaml"))]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    validate_config(load(path))


def test_error_names_the_key_and_the_expected_type():
    config = load(CONFIGS[0])
    config["cache"]["workers"] = "four"
    with pytest.raises(ConfigError, match=r"key 'cache\.workers': expected integer, got str"):
        validate_config(config)


def test_error_names_a_bad_enum_value_and_the_choices():
    config = load(CONFIGS[0])
    config["datasets"]["mini_train"]["format"] = "swebench"
    with pytest.raises(ConfigError, match=r"key 'datasets\.mini_train\.format': 'swebench' is not one of"):
        validate_config(config)


def test_misspelled_key_is_rejected():
    config = load(CONFIGS[0])
    config["datasets"]["mini_train"]["filter"] = {"limit": 2}
    with pytest.raises(ConfigError, match=r"'filter' was unexpected"):
        validate_config(config)


def test_missing_required_section_is_named():
    config = copy.deepcopy(load(CONFIGS[0]))
    del config["datasets"]
    with pytest.raises(ConfigError, match=r"'datasets' is a required property"):
        validate_config(config)


def test_bad_experiment_name_is_rejected():
    config = load(CONFIGS[0])
    config["experiment"] = "my study/1"
    with pytest.raises(ConfigError, match=r"key 'experiment'"):
        validate_config(config)


def set_key(config: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return config


# The bad configurations found by probing the dry run (issue "Bad input"): key, value, the line expected.
BAD_CONFIGS = {
    "unknown top-level key": ("evalution", {"models": ["base"]}, r"Additional properties are not allowed \('evalution'"),
    "typo in sft.train": ("sft.train.max_stpes", 3, (r"key 'sft\.train\.max_stpes': not an option of python -m "
                          r"repairrl\.sft\.train; did you mean max_steps")),
    "typo in grpo.train": ("grpo.train.num_generation", 2, r"key 'grpo\.train\.num_generation': not an option"),
    "model source typo": ("models.base.source", "embeded", r"key 'models\.base\.source': 'embeded': neither"),
    "missing local model": ("models.base.source", "/nonexistent/model", (r"local model directory '/nonexistent/model'"
                            r" does not exist")),
    "missing gguf": ("models.base.source", "gguf:/nonexistent.gguf", r"GGUF file '/nonexistent\.gguf' does not"),
    "negative max_steps": ("grpo.train.max_steps", -1, r"key 'grpo\.train\.max_steps': -1 is less than the minimum"),
    "negative threshold": ("sft.threshold", -5, r"key 'sft\.threshold': -5 is less than the minimum of 0"),
    "unknown evaluated model": ("evaluation.models", ["base", "gpt5"], r"key 'evaluation\.models': 'gpt5' is neither"),
    "unknown sharded dataset": ("evaluation.shards", {"nope": 2}, r"key 'evaluation\.shards\.nope': not a dataset"),
    "unknown sft dataset": ("sft.dataset", "nope", r"key 'sft\.dataset': 'nope' is not a dataset with role train"),
    "unknown base model": ("base_model", "qwen", r"key 'base_model': 'qwen' is not a model of `models`"),
}


@pytest.mark.parametrize("probe", sorted(BAD_CONFIGS))
def test_each_bad_configuration_is_named_on_its_own_line(probe):
    key, value, expected = BAD_CONFIGS[probe]
    with pytest.raises(ConfigError, match=expected):
        validate_config(set_key(load(CONFIGS[0]), key, value))


def test_nested_values_given_as_text_on_the_command_line_are_read_as_numbers():
    # What Snakemake makes of --config 'agent={max_tool_calls: 2}' and --config 'rewards={repo_repair: {resolved: 1}}'
    config = load(CONFIGS[0])
    config["agent"]["max_tool_calls"] = "2"
    config["rewards"]["repo_repair"] = {"resolved": "1.0"}
    config["sft"]["enabled"] = "false"
    validate_config(config)
    assert config["agent"]["max_tool_calls"] == 2 and config["rewards"]["repo_repair"]["resolved"] == 1.0
    assert config["sft"]["enabled"] is False
    config["agent"]["max_tool_calls"] = "two"
    with pytest.raises(ConfigError, match=r"key 'agent\.max_tool_calls': expected integer, got str \('two'\)"):
        validate_config(config)


def test_the_dry_run_fails_with_one_line_per_problem(tmp_path):
    import subprocess
    import sys

    config = load(CONFIGS[0])
    for probe in ("typo in sft.train", "model source typo", "unknown evaluated model", "unknown sft dataset"):
        key, value, _ = BAD_CONFIGS[probe]
        set_key(config, key, value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    done = subprocess.run([str(snakemake), "-n", "--configfile", str(path), "--config", "agent={max_tool_calls: 2}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip().startswith("key '")]
    assert [line.split("'")[1] for line in lines] == ["sft.train.max_stpes", "models.base.source",
                                                      "evaluation.models", "sft.dataset"], done.stderr


def test_the_schema_states_every_default_the_rules_read():
    """The Snakefile fills a config in with the schema's defaults (snakemake.utils.validate, set_default): a
    config of the required keys alone comes out with every section, and still valid."""
    from snakemake.utils import validate

    config = {key: load(CONFIGS[0])[key] for key in ("experiment", "results_dir", "models", "datasets", "cache")}
    config["cache"] = {"dir": "results/cache/repos"}
    validate(config, str(REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    assert (config["task"], config["logs_dir"], config["cache"]["workers"]) == ("repo_repair", "logs", 4)
    assert (config["sft"]["threshold"], config["sft"]["criterion"], config["sft"]["shards"]) == (0.8, "similarity", 1)
    assert config["grpo"]["server"] == {"gpus": "0", "trainer_gpus": "1,2"}, "defaults reach nested sections"
    assert config["evaluation"]["workers"] == 2 and config["agent"] == {"sandbox": "bwrap"}
    validate_config(config)
