"""How a SWE-bench-shaped task is graded: eval script, log parser, instance image and eval type, per row.

swebench 5.x's harness (`swebench.harness.utils.make_test_spec`) takes these from the row and builds nothing:
rows of the new shape carry `eval_script`, `image`, `log_parser` and `eval_type`. The classic 12-column rows
(princeton-nlp/SWE-bench_Verified) and SWE-Gym's rows carry none of them, and swebench 5.x no longer ships the
per-repo/version tables (MAP_REPO_VERSION_TO_SPECS) that built them. So the tables are kept here (in
swebench_specs.yaml beside this module), reduced to the three keys an eval script reads (`test_cmd`,
`eval_commands`, `install`), versions grouped by identical spec:

    SWEBENCH_SPECS  swebench 4.1.0 (PyPI), swebench/harness/constants/python.py (MIT), the last release with them
    SWE_GYM_SPECS   SWE-Gym's environment constants: github.com/SWE-Gym/SWE-Bench-Fork
                    @242429c188fcfd06aad13fce9a54d450470bf0ac swebench/harness/constants.py, the 11 repositories
                    SWE-Gym adds (its entries for SWE-bench's repositories are SWE-bench's)

`make_eval_script` is swebench 4.1.0's `make_eval_script_list_py` joined as its `TestSpec.eval_script` (with the
`>>>>> Start/End Test Output` markers 5.x's `get_logs_eval` requires), plus SWE-Gym's mypy test selection
(`-k "case or case"` from the test patch's `[case ...]` headers). For SWE-Gym's repositories it is the fork's
script but for three lines' worth: the fork predates the markers, shows the working tree with a plain `git diff`
(4.1.0 adds `-c core.fileMode=false`; informational only), and finds the test files to reset with the regex
`--- a/(.*)` where 4.1.0 parses the patch (the same files for any ordinary patch). The log parser is named as
swebench 5.x's registry (`swebench.harness.log_parsers.PARSER_REGISTRY`) names it.

tests/test_swebench_rows.py holds these to genuine rows: byte-for-byte against the scripts swebench 4.1.0 writes
for them, and table-for-table against the fork's constants (tests/fixtures/*/PROVENANCE.md).

Instance images: SWE-bench's are `swebench/sweb.eval.x86_64.<id, "__" -> "_1776_">:latest`; SWE-Gym's are
published as `xingyaoww/sweb.eval.x86_64.<id, "__" -> "_s_", lower case>:latest` (All-Hands-AI/OpenHands,
evaluation/benchmarks/swe_bench/SWE-Gym.md and run_infer.py's `get_instance_docker_image`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

# Changed files that are not test directives (swebench.harness.constants.NON_TEST_EXTS).
NON_TEST_EXTS = (".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")
START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
HEREDOC_DELIMITER = "EOF_114329324912"
ENV_NAME = "testbed"
REPO_DIRECTORY = "/testbed"
SOURCES = ("swe-bench", "swe-gym")

# The two tables, data rather than code: {repo: [(space-separated versions, spec), ...]}.
SPECS_FILE = Path(__file__).with_name("swebench_specs.yaml")


def _read_spec_tables() -> dict[str, dict[str, list[tuple[str, dict]]]]:
    with open(SPECS_FILE, encoding="utf-8") as handle:
        tables = yaml.safe_load(handle)
    return {
        source: {
            repo: [(group.pop("versions"), group) for group in groups] for repo, groups in table.items()
        }
        for source, table in tables.items()
    }


_TABLES = _read_spec_tables()
SWEBENCH_SPECS = _TABLES["swe-bench"]
SWE_GYM_SPECS = _TABLES["swe-gym"]

# SWE-Gym's fork maps its repositories to swebench's pytest parser under new names, except pydantic's
# (pytest's, also stripping colour codes and `[...]` after FAILED): pytest_v2, which strips colour codes, is the
# registry's nearest.
SWE_GYM_PARSERS = {
    "getmoto/moto": "parse_log_pytest", "python/mypy": "parse_log_pytest", "pandas-dev/pandas": "parse_log_pytest",
    "pydantic/pydantic": "parse_log_pytest_v2", "dask/dask": "parse_log_pytest", "iterative/dvc": "parse_log_pytest",
    "conan-io/conan": "parse_log_pytest", "modin-project/modin": "parse_log_pytest",
    "project-monai/monai": "parse_log_pytest", "facebookresearch/hydra": "parse_log_pytest",
    "bokeh/bokeh": "parse_log_pytest",
}


class UngradableTaskError(ValueError):
    """A row carries no eval script and no spec builds one: its tests could never be run."""


@dataclass(frozen=True)
class GradingRecipe:
    eval_script: str
    log_parser: str  # a key of swebench.harness.log_parsers.PARSER_REGISTRY
    image: str
    eval_type: str  # pass_and_fail | fail_only


def _by_version(table: dict[str, list[tuple[str, dict]]]) -> dict[str, dict[str, dict]]:
    return {repo.lower(): {v: spec for versions, spec in groups for v in versions.split()}
            for repo, groups in table.items()}


_SPECS = {"swe-bench": _by_version(SWEBENCH_SPECS)}
_SPECS["swe-gym"] = {**_SPECS["swe-bench"], **_by_version(SWE_GYM_SPECS)}


def eval_spec(repo: str, version: str | None, source: str = "swe-bench") -> dict | None:
    """The spec the eval script is built from; None where the tables have no test command for REPO/VERSION."""
    spec = _SPECS[source].get(repo.lower(), {}).get("" if version is None else str(version))
    return spec if spec and spec.get("test_cmd") else None


def test_directives(repo: str, test_patch: str) -> list[str]:
    """swebench's get_test_directives: the test files the test patch touches (django's as test modules)."""
    directives = [d for d in re.findall(r"diff --git a/.* b/(.*)", test_patch) if not d.endswith(NON_TEST_EXTS)]
    if repo == "django/django":
        directives = [d.removesuffix(".py").removeprefix("tests/").replace("/", ".") for d in directives]
    return directives


def modified_files(patch: str) -> list[str]:
    """swebench's get_modified_files: the files a patch changes that exist before it."""
    from unidiff import PatchSet

    return [f.source_file[2:] for f in PatchSet(patch) if f.source_file.startswith("a/")]


def test_command(repo: str, spec: dict, test_patch: str) -> str:
    if repo.lower() == "python/mypy":  # SWE-Gym: mypy's data-driven tests are selected by case name
        cases = re.findall(r"\[case ([^\]]+)\]", test_patch)
        return f'{spec["test_cmd"]} "{" or ".join(cases)}"'
    return " ".join([spec["test_cmd"], *test_directives(repo, test_patch)])


test_directives.__test__ = test_command.__test__ = False  # type: ignore[attr-defined]  # not pytest tests


def make_eval_script(repo: str, base_commit: str, test_patch: str, spec: dict) -> str:
    """swebench 4.1.0's eval script for a Python repository, joined as its TestSpec.eval_script."""
    reset_tests = f"git checkout {base_commit} {' '.join(modified_files(test_patch))}"
    lines = ["source /opt/miniconda3/bin/activate", f"conda activate {ENV_NAME}", f"cd {REPO_DIRECTORY}"]
    lines += spec.get("eval_commands", [])
    lines += [
        f"git config --global --add safe.directory {REPO_DIRECTORY}",
        f"cd {REPO_DIRECTORY}",
        "git status",
        "git show",
        f"git -c core.fileMode=false diff {base_commit}",
        "source /opt/miniconda3/bin/activate",
        f"conda activate {ENV_NAME}",
    ]
    if "install" in spec:
        lines.append(spec["install"])
    lines += [
        reset_tests,
        f"git apply -v - <<'{HEREDOC_DELIMITER}'\n{test_patch}\n{HEREDOC_DELIMITER}",
        f": '{START_TEST_OUTPUT}'",
        test_command(repo, spec, test_patch),
        f": '{END_TEST_OUTPUT}'",
        reset_tests,
    ]
    return "\n".join(["#!/bin/bash", "set -uxo pipefail", *lines]) + "\n"


def log_parser_name(repo: str, source: str = "swe-bench") -> str | None:
    """The registry name of the parser swebench maps REPO to (e.g. parse_log_django), or None."""
    from swebench.harness.log_parsers import PARSER_REGISTRY
    from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY

    parser = MAP_REPO_TO_PARSER_PY.get(repo)
    if parser is not None:
        # Several names share one function (parse_log_astropy is parse_log_pytest_v2): prefer the repo's own.
        names = [name for name, fn in PARSER_REGISTRY.items() if fn is parser]
        own = f"parse_log_{repo.split('/')[-1].split('-')[0].lower()}"
        return own if own in names else (names[0] if names else None)
    return SWE_GYM_PARSERS.get(repo.lower()) if source == "swe-gym" else None


def instance_image(instance_id: str, source: str = "swe-bench") -> str:
    if source == "swe-gym":
        return f"xingyaoww/sweb.eval.x86_64.{instance_id.replace('__', '_s_').lower()}:latest"
    return f"swebench/sweb.eval.x86_64.{instance_id.replace('__', '_1776_').lower()}:latest"


def eval_type(repo: str) -> str:
    from swebench.harness.constants import FAIL_ONLY_REPOS

    return "fail_only" if repo in FAIL_ONLY_REPOS else "pass_and_fail"


def grading_recipe(row: dict, source: str = "swe-bench") -> GradingRecipe:
    """The row's own eval_script/image/log_parser/eval_type where it carries them; the rest built from the specs.

    Raises UngradableTaskError saying what is missing: a row that cannot be graded is refused when it is
    fetched, not scored 0 when it is trained on.
    """
    from swebench.harness.log_parsers import PARSER_REGISTRY

    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; one of {SOURCES}")
    repo, version = row["repo"], row.get("version")
    script = row.get("eval_script") or None
    if script is None:
        spec = eval_spec(repo, version, source)
        if spec is None:
            tables = "swebench's or SWE-Gym's" if source == "swe-gym" else "swebench's"
            raise UngradableTaskError(
                f"cannot be graded: no eval_script in the row and no test spec for {repo} version {version!r} in "
                f"{tables} tables (repairrl.data.swebench_specs)"
            )
        script = make_eval_script(repo, row["base_commit"], row["test_patch"], spec)
    parser = row.get("log_parser") or log_parser_name(repo, source)
    if parser is None:
        raise UngradableTaskError(f"cannot be graded: no log_parser in the row and swebench maps no parser to {repo}")
    if parser not in PARSER_REGISTRY:
        raise UngradableTaskError(
            f"cannot be graded: log_parser {parser!r} is not in swebench's parser registry "
            "(swebench.harness.log_parsers.PARSER_REGISTRY)"
        )
    return GradingRecipe(eval_script=script, log_parser=parser,
                         image=row.get("image") or instance_image(row["instance_id"], source),
                         eval_type=row.get("eval_type") or eval_type(repo))
