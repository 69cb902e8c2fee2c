"""How a SWE-bench-shaped task is graded: eval script, log parser, instance image and eval type, per row.

swebench 5.x's harness (`swebench.harness.utils.make_test_spec`) takes these from the row and builds nothing:
rows of the new shape carry `eval_script`, `image`, `log_parser` and `eval_type`. The classic 12-column rows
(princeton-nlp/SWE-bench_Verified) and SWE-Gym's rows carry none of them, and swebench 5.x no longer ships the
per-repo/version tables (MAP_REPO_VERSION_TO_SPECS) that built them. So the tables are kept here, reduced to the
three keys an eval script reads (`test_cmd`, `eval_commands`, `install`), versions grouped by identical spec:

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

# Changed files that are not test directives (swebench.harness.constants.NON_TEST_EXTS).
NON_TEST_EXTS = (".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")
START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
HEREDOC_DELIMITER = "EOF_114329324912"
ENV_NAME = "testbed"
REPO_DIRECTORY = "/testbed"
SOURCES = ("swe-bench", "swe-gym")

# fmt: off
SWEBENCH_SPECS: dict[str, list[tuple[str, dict]]] = {
    'astropy/astropy': [
        ('3.0 3.1 3.2 4.1 4.2 4.3 5.0 5.1 5.2 v5.3', {'install': 'python -m pip install -e .[test] --verbose', 'test_cmd': 'pytest -rA'}),
        ('0.1 0.2 0.3 0.4 1.1 1.2 1.3', {'install': 'python -m pip install -e .[test] --verbose', 'test_cmd': 'pytest -rA -vv -o console_output_style=classic --tb=no'}),
    ],
    'dbt-labs/dbt-core': [
        ('0.13 0.14 0.15 0.16 0.17 0.18 0.19 0.20 0.21 1.0 1.1 1.2 1.3 1.4 1.5 1.6 1.7', {'install': 'python -m pip install -e .'}),
    ],
    'django/django': [
        ('1.7 1.8 1.10 1.11 2.0 2.1 2.2', {'eval_commands': ['export LANG=en_US.UTF-8', 'export LC_ALL=en_US.UTF-8', 'export PYTHONIOENCODING=utf8', 'export LANGUAGE=en_US:en'], 'install': 'python setup.py install', 'test_cmd': './tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1'}),
        ('1.9', {'eval_commands': ['export LANG=en_US.UTF-8', 'export LC_ALL=en_US.UTF-8', 'export PYTHONIOENCODING=utf8', 'export LANGUAGE=en_US:en'], 'install': 'python setup.py install', 'test_cmd': './tests/runtests.py --verbosity 2'}),
        ('1.4 1.5 1.6', {'install': 'python setup.py install', 'test_cmd': './tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1'}),
        ('3.0 3.1 3.2', {'eval_commands': ["sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen", 'export LANG=en_US.UTF-8', 'export LANGUAGE=en_US:en', 'export LC_ALL=en_US.UTF-8'], 'install': 'python -m pip install -e .', 'test_cmd': './tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1'}),
        ('4.0 4.1 4.2 5.0 5.1 5.2', {'install': 'python -m pip install -e .', 'test_cmd': './tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1'}),
    ],
    'matplotlib/matplotlib': [
        ('3.5 3.6 3.7 3.1 3.2 3.3 3.4 3.0', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
        ('3.8 3.9', {'install': 'python -m pip install --no-build-isolation -e ".[dev]"', 'test_cmd': 'pytest -rA'}),
        ('2.0 2.1 2.2 1.0 1.1 1.2 1.3 1.4 1.5', {'install': 'python setup.py build; python setup.py install', 'test_cmd': 'pytest -rA'}),
    ],
    'marshmallow-code/marshmallow': [
        ('2.18 2.19 2.20 3.0 3.1 3.10 3.11 3.12 3.13 3.15 3.16 3.19 3.2 3.4 3.8 3.9', {'install': "python -m pip install -e '.[dev]'", 'test_cmd': 'pytest -rA'}),
    ],
    'mwaskom/seaborn': [
        ('0.11', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest --no-header -rA'}),
        ('0.12 0.13 0.14', {'install': 'python -m pip install -e .[dev]', 'test_cmd': 'pytest --no-header -rA'}),
    ],
    'pallets/flask': [
        ('2.0 2.1 2.2 2.3 3.0 3.1', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'psf/requests': [
        ('0.7 0.8 0.9 0.11 0.13 0.14 1.1 1.2 2.0 2.2 2.3 2.4 2.5 2.7 2.8 2.9 2.10 2.11 2.12 2.17 2.18 2.19 2.22 2.26 2.25 2.27 2.31 3.0', {'install': 'python -m pip install .', 'test_cmd': 'pytest -rA'}),
    ],
    'pvlib/pvlib-python': [
        ('0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9', {'install': 'python -m pip install -e .[all]', 'test_cmd': 'pytest -rA'}),
    ],
    'pydata/xarray': [
        ('0.12 0.18 0.19 0.20 2022.03 2022.06 2022.09 2023.07 2024.05', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'pydicom/pydicom': [
        ('1.0 1.1 1.2 1.3 1.4 2.0 2.1 2.2 2.3 2.4 3.0', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'pylint-dev/astroid': [
        ('2.10 2.12 2.13 2.14 2.15 2.16 2.5 2.6 2.7 2.8 2.9 3.0', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'pylint-dev/pylint': [
        ('2.10 2.11 2.13 2.14 2.15 2.16 2.17 2.8 2.9 3.0 3.1 3.2 3.3 4.0', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'pytest-dev/pytest': [
        ('4.4 4.5 4.6 5.0 5.1 5.2 5.3 5.4 6.0 6.2 6.3 7.0 7.1 7.2 7.4 8.0 8.1 8.2 8.3 8.4', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'pyvista/pyvista': [
        ('0.20 0.21 0.22 0.23 0.24 0.25 0.26 0.27 0.28 0.29 0.30 0.31 0.32 0.33 0.34 0.35 0.36 0.37 0.38 0.39 0.40 0.41 0.42 0.43', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'scikit-learn/scikit-learn': [
        ('0.20 0.21 0.22 1.3 1.4 1.5 1.6', {'install': 'python -m pip install -v --no-use-pep517 --no-build-isolation -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'sphinx-doc/sphinx': [
        ('1.5 1.6 1.7 1.8 2.0 2.1 2.2 2.3 2.4 3.0 3.1 3.2 3.3 3.4 3.5 4.0 4.1 4.2 4.3 4.4 4.5 5.0 5.1 5.2 5.3 6.0 6.2 7.0 7.1 7.2 7.3 7.4 8.0 8.1', {'install': 'python -m pip install -e .[test]', 'test_cmd': 'tox --current-env -epy39 -v --'}),
    ],
    'sqlfluff/sqlfluff': [
        ('0.10 0.11 0.12 0.13 0.4 0.5 0.6 0.8 0.9 1.0 1.1 1.2 1.3 1.4 2.0 2.1 2.2', {'install': 'python -m pip install -e .', 'test_cmd': 'pytest -rA'}),
    ],
    'sympy/sympy': [
        ('0.7 1.0 1.1 1.10 1.11 1.12 1.2 1.4 1.5 1.6 1.7 1.8 1.9 1.13 1.14', {'install': 'python -m pip install -e .', 'test_cmd': "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose"}),
    ],
}
SWE_GYM_SPECS: dict[str, list[tuple[str, dict]]] = {
    'python/mypy': [
        ('1.7 1.8 1.9 1.10 1.11', {'install': 'python -m pip install -r test-requirements.txt; python -m pip install -e .; hash -r', 'test_cmd': 'pytest -rA -k'}),
        ('1.0 1.1 1.2 1.3 1.4 1.5 1.6', {'install': 'python -m pip install -r test-requirements.txt; python -m pip install -e .; hash -r', 'test_cmd': 'pytest -n0 -rA -k'}),
        ('0.990 0.980 0.970 0.960 0.950 0.940', {'install': 'python -m pip install -r test-requirements.txt; python -m pip install -e .; pip install pytest pytest-xdist; hash -r', 'test_cmd': 'pytest -n0 -rA -k'}),
        ('0.920 0.910 0.820 0.810 0.800', {'install': 'python -m pip install -r test-requirements.txt; python -m pip install -e .; pip install pytest pytest-xdist; hash -r;', 'test_cmd': 'pytest -n0 -rA -k'}),
    ],
    'getmoto/moto': [
        ('0.4 1.0 1.2 1.3 2.0 2.1 2.2 2.3 3.0 3.1 4.0 4.1 4.2 5.0', {'install': 'make init', 'test_cmd': 'pytest -n0 -rA'}),
    ],
    'conan-io/conan': [
        ('1.33 1.34 1.36 2.0 1.35 1.37 1.46 1.38 1.39 1.40 1.41 1.42 1.45 1.43 1.44 1.47 1.48 1.49 1.50 1.51 1.52 1.53 1.55 1.54 1.57 1.58 1.59', {'eval_commands': ['export PYTHONPATH=${PYTHONPATH:-}:$(pwd)'], 'install': "echo 'cython<3' > /tmp/constraint.txt; export PIP_CONSTRAINT=/tmp/constraint.txt; python -m pip install -r conans/requirements.txt; python -m pip install -r conans/requirements_server.txt; python -m pip install -r conans/requirements_dev.txt ", 'test_cmd': 'pytest -n0 -rA'}),
        ('2.1 1.60 1.61 1.62 2.2 2.3 2.4', {'eval_commands': ['export PYTHONPATH=${PYTHONPATH:-}:$(pwd)'], 'install': 'python -m pip install -r conans/requirements.txt; python -m pip install -r conans/requirements_server.txt; python -m pip install -r conans/requirements_dev.txt ', 'test_cmd': 'pytest -n0 -rA'}),
    ],
    'dask/dask': [
        ('2.11 2.12 2.13 2.14 2.15 2.16 2.17 2.18 2.19 2.21 2.22 2.23 2.25 2.26 2.27 2.28 2.29 2.30 2020.12 2021.01 2021.02 2021.03 2021.04 2021.05 2021.06 2021.07 2021.08 2021.09 2021.10 2021.11 2021.12 2022.01 2022.02 2022.03 2022.04 2022.05 2022.6 2022.7 2022.8 2022.9 2022.10 2022.11 2022.12 2023.1 2023.2 2023.3 2023.4 2023.5 2023.6 2023.7 2023.8 2023.9 2023.10 2023.11 2023.12 2024.1 2024.2 2024.3 2024.4 2024.5', {'install': 'python -m pip install --no-deps -e .', 'test_cmd': 'pytest -n0 -rA  --color=no'}),
    ],
    'project-monai/monai': [
        ('0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 0.11 0.105 1.0 1.1 1.2 1.3', {'install': "sed -i '/^git+https:\\/\\/github.com\\/Project-MONAI\\//d' requirements-dev.txt; python -m pip install types-pkg-resources==0.1.3 pytest; pip install -r requirements-dev.txt;python setup.py develop;", 'test_cmd': 'pytest -rA '}),
    ],
    'iterative/dvc': [
        ('0.1 0.8 0.9 0.12 0.13 0.14 0.15 0.16 0.17 0.18 0.19 0.20 0.21 0.22 0.23 0.24 0.27 0.28 0.29 0.30 0.31 0.32 0.33 0.34 0.35 0.40 0.41 0.50 0.51 0.52 0.53 0.54 0.55 0.56 0.57 0.58 0.59 0.60 0.61 0.62 0.63 0.65 0.66 0.68 0.69 0.70 0.71 0.74 0.75 0.76 0.77 0.78 0.80 0.81 0.82 0.83 0.84 0.85 0.86 0.87 0.88 0.89 0.90 0.91 0.92 0.93 1.0 1.1 1.2 1.3 1.4 1.5 1.6 1.7 1.8 1.9 1.10 1.11 2.0 2.1 2.2 2.3 2.4 2.5 2.6 2.7 2.8 2.9 2.10 2.11 2.12 2.13 2.15 2.17 2.19 2.20 2.21 2.22 2.23 2.24 2.27 2.28 2.30 2.33 2.34 2.35 2.38 2.41 2.43 2.44 2.45 2.46 2.48 2.50 2.51 2.52 2.54 2.55 2.56 2.57 2.58 3.0 3.1 3.2 3.3', {'install': 'python -m pip install --upgrade pip wheel GitPython; python -m pip install "cython<3.0.0" && python -m pip install --no-build-isolation pyyaml==5.4.1; python -m pip install git+https://github.com/iterative/mock-ssh-server.git || true; python -m pip install -r tests/requirements.txt || true; python -m pip install -r test-requirements.txt || true; python -m pip install -e ".[tests,dev,all_remotes,all,testing]"; python -m pip install "numpy<=1.20"; python -m pip install "pytest<8";', 'test_cmd': 'pytest -rA'}),
        ('3.4 3.5 3.6 3.10 3.11 3.12 3.13 3.14 3.15 3.17 3.19 3.23 3.24 3.28 3.29 3.36 3.37 3.38 3.43 3.47 3.48 3.49', {'install': 'python -m pip install --upgrade pip wheel GitPython; python -m pip install "cython<3.0.0" && python -m pip install --no-build-isolation pyyaml==5.4.1; python -m pip install git+https://github.com/iterative/mock-ssh-server.git || true; python -m pip install -r tests/requirements.txt || true; python -m pip install -r test-requirements.txt || true; python -m pip install -e ".[tests,dev,all_remotes,all,testing]";', 'test_cmd': 'pytest -rA'}),
    ],
    'bokeh/bokeh': [
        ('3.0 3.3 3.4 3.5', {'install': 'python -m pip install -e .; python -m pip install bokeh_sampledata;', 'test_cmd': 'pytest -rA -n0'}),
        ('2.0 2.1 2.3 2.4 0.4 0.5 0.6 0.7 0.8 0.9 0.10 0.11 0.12 0.13 0.1181316818 1.0 1.1 1.2 1.3 1.4', {'install': 'pip install "setuptools<66" "jinja2<3.1"; printf "1\n" | python setup.py develop; bokeh sampledata;', 'test_cmd': 'pytest -rA -n0'}),
    ],
    'modin-project/modin': [
        ('0.1 0.2 0.3 0.4 0.6 0.8 0.9 0.10 0.11 0.12 0.13 0.14 0.15 0.16 0.17 0.18 0.19', {'install': 'python -m pip install -e .; python -m pip install numpy==1.23.1 protobuf==3.20.1;', 'test_cmd': 'pytest -n0 -rA'}),
        ('0.20 0.21 0.22 0.23 0.24 0.25 0.26 0.27 0.28 0.29 0.30', {'install': 'python -m pip install -e .;', 'test_cmd': 'pytest -n0 -rA'}),
    ],
    'pydantic/pydantic': [
        ('0.2 0.41 0.4 0.6 0.9 0.10 0.11 0.13 0.14 0.151 0.15 0.17 0.18 0.201 0.20 0.24 0.27 0.29 1.01 0.32 1.4 1.31 1.41 1.51 1.5 1.71 1.6 1.7 1.8 1.9 1.10 2.0 2.01 2.02 2.03 2.04 2.6 2.5 2.4 2.7', {'install': 'export PATH="$HOME/.local/bin:$PATH"; pdm add pre-commit; make install;', 'test_cmd': 'pytest -rA --tb=short -vv -o console_output_style=classic --no-header'}),
    ],
    'pandas-dev/pandas': [
        ('0.16 0.17 0.18 0.19 0.20 0.21 0.22 0.23 0.24 0.25 0.26 1.0 1.1 1.2 1.3 1.4 1.5 2.0 2.1', {'install': "python -m pip install 'numpy<2'; python -m pip install -ve . --no-build-isolation -Ceditable-verbose=true; pip uninstall pytest-qt -y;", 'test_cmd': 'pytest -rA --tb=long'}),
        ('2.2 3.0', {'install': 'python -m pip install -ve . --no-build-isolation -Ceditable-verbose=true; pip uninstall pytest-qt -y;', 'test_cmd': 'pytest -rA --tb=long'}),
    ],
    'facebookresearch/hydra': [
        ('0.1 0.9 0.10 0.11 0.12 1.0 1.1 1.2', {'install': 'sed -i \'s|isort@git+git://github.com/timothycrosley/isort|isort@git+https://github.com/timothycrosley/isort|g\' requirements/dev.txt; { tail -n1 requirements/requirements.txt | grep -q "." && echo ""; } >> requirements/requirements.txt; echo "pip==24.0" >> requirements/requirements.txt;pip install "pip==24.0"; pip install -r requirements/dev.txt; pip install -e .;', 'test_cmd': 'pytest -rA --tb=long'}),
        ('1.3 1.4', {'install': 'pip install -r requirements/dev.txt; pip install -e .;', 'test_cmd': 'pytest -rA --tb=long'}),
    ],
}
# fmt: on

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
