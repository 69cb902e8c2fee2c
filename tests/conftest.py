"""Shared fixtures: no hub access in tests, and small git repositories made on the spot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from repairrl.tasks import Task

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "repairrl tests",
    "GIT_AUTHOR_EMAIL": "tests@repairrl.invalid",
    "GIT_COMMITTER_NAME": "repairrl tests",
    "GIT_COMMITTER_EMAIL": "tests@repairrl.invalid",
}


def git(*args: str, cwd: Path) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_IDENTITY}, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


@pytest.fixture
def history_repo(tmp_path: Path) -> dict:
    """A repository with three commits, served like GitHub serves one: single commits can be fetched by hash."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    commits = []
    for number in range(1, 4):
        (origin / "module.py").write_text(f"VALUE = {number}\n")
        (origin / f"added_in_{number}.txt").write_text("x\n")
        git("add", "-A", cwd=origin)
        git("commit", "-q", "-m", f"commit {number}", cwd=origin)
        commits.append(git("rev-parse", "HEAD", cwd=origin))
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=origin)
    return {"path": origin, "url": f"file://{origin}", "commits": commits}


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory) -> Path:
    """The embedded SmolLM2 model converted once per session, as the prepare_model rule does (manifest dir)."""
    from repairrl.models.loading import prepare_model

    out = tmp_path_factory.mktemp("embedded-model")
    prepare_model("base", "embedded", out)
    return out


BUGGY = "def add(a, b):\n    return a - b\n\n\ndef double(x):\n    return x + x\n"


@pytest.fixture
def buggy_repo(tmp_path: Path) -> tuple[Path, Task]:
    """A one-commit repository whose add() subtracts, and its task (no tests)."""
    repo = tmp_path / "calc"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "calc.py").write_text(BUGGY)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "calc", cwd=repo)
    base = git("rev-parse", "HEAD", cwd=repo)
    task = Task(instance_id="calc-1", dataset="test", repo="owner/calc", repo_url=str(repo), base_commit=base,
                problem_statement="add(2, 3) returns -1 instead of 5.", gold_patch="", test_patch="",
                fail_to_pass=[], pass_to_pass=[])
    return repo, task


def bwrap_works() -> bool:
    """Whether bubblewrap runs here (installed, with unprivileged user namespaces)."""
    import shutil

    if shutil.which("bwrap") is None:
        return False
    probe = subprocess.run(["bwrap", "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"], check=False,
                           capture_output=True)
    return probe.returncode == 0


needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap with user namespaces is not available")
