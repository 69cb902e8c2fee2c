"""A non-editable install works without the repository: schemas, the mini benchmark and the CLIs ship inside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT


def test_a_non_editable_install_runs_the_agent_cli_and_fetches_the_mini_benchmark(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(REPO_ROOT)], check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300, check=False)

    located = run("-c", "import repairrl; print(repairrl.__file__)")
    assert located.stdout.strip() == str(target / "repairrl" / "__init__.py")
    assert run("-m", "repairrl.agent", "--help").returncode == 0
    built = run("-m", "repairrl.data.mini_benchmark", "--out", str(work / "mini"))
    assert built.returncode == 0, built.stderr
    spec = {"format": "mini", "role": "eval", "source": {"builtin": "mini"}, "filters": {"split": "eval"},
            "repo_url_template": f"file://{work / 'mini' / 'repos'}/{{repo_key}}.git"}
    fetched = run("-m", "repairrl.data.fetch", "--dataset", "mini_eval", "--spec", json.dumps(spec), "--path",
                  str(work / "mini" / "tasks.jsonl"), "--out", str(work / "tasks.jsonl"), "--skipped",
                  str(work / "skipped.jsonl"))
    assert fetched.returncode == 0, fetched.stderr
    assert len(Path(work / "tasks.jsonl").read_text().splitlines()) == 6  # the mini benchmark's eval split
    broken = work / "broken.jsonl"
    broken.write_text('{"instance_id": "x"')
    failed = run("-m", "repairrl.data.fetch", "--dataset", "broken", "--spec", json.dumps({**spec, "source": {}}),
                 "--path", str(broken), "--out", str(work / "b.jsonl"), "--skipped", str(work / "bs.jsonl"))
    assert failed.returncode == 1 and failed.stderr.startswith("error: dataset 'broken': ")
    assert "broken.jsonl, line 1" in failed.stderr and "Traceback" not in failed.stderr
