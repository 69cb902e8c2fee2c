"""Repository cache: one shallow bare repository per (repository, base commit), and cheap working copies.

A cache entry holds the base commit alone (`git init --bare` + remote + `fetch --depth 1 <commit>`), so nothing
past the base commit exists in it: a working copy cloned from it cannot reach a future commit, not even through
dangling objects.

Working copies are local clones that never share a file with the cache: a hard link would give the cache's
inodes to a tree an agent (or the code under test) writes in, and a pack rewritten in place would change the base
commit for every later episode and for the grader. Git already copies from a shallow source; `--no-hardlinks`
keeps it so (tests/test_attacks.py rewrites the object store from inside the sandbox).

The host never runs git on git metadata an agent could have written. `snapshot_git_dir` copies a fresh working
copy's metadata to a host-owned place before the agent starts, and `worktree_diff` diffs the working tree through
that copy (`GIT_DIR` pinned, no system or global config, a minimal environment): whatever the agent does to its
own `.git` (config, commondir, alternates, hooks, a `gitdir:` file, a symlink) is never read by the host.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from repairrl.records import write_jsonl
from repairrl.tasks import Task, read_tasks

COMPLETE_MARKER = "repairrl-complete"
BASE_BRANCH = "base"
# Never let git wait for credentials or an editor: a private or missing repository must fail, not hang.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true", "GCM_INTERACTIVE": "never"}


class RepoFetchError(RuntimeError):
    """A repository or its base commit could not be fetched into the cache."""


def _git(*args: str, cwd: Path | None = None, timeout_s: float = 600) -> str:
    env = {**os.environ, **GIT_ENV}
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RepoFetchError(f"git {' '.join(args[:2])} timed out after {timeout_s:.0f} s") from error
    if completed.returncode != 0:
        raise RepoFetchError(f"git {' '.join(args)} failed: {completed.stderr.strip()[-2000:]}")
    return completed.stdout


def cache_entry_path(cache_dir: Path, task: Task) -> Path:
    return Path(cache_dir) / task.repo_key / f"{task.base_commit}.git"


def fetch_base_commit(cache_dir: Path, task: Task, timeout_s: float = 600) -> Path:
    """Fetch the task's base commit into the cache once; later calls return the existing entry at once."""
    entry = cache_entry_path(cache_dir, task)
    if (entry / COMPLETE_MARKER).exists():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the final path and rename: a killed fetch leaves no half-filled entry behind.
    staging = entry.with_name(f"{entry.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _git("init", "-q", "--bare", str(staging))
        _git("remote", "add", "origin", task.repo_url, cwd=staging)
        _git("fetch", "-q", "--depth", "1", "--no-tags", "origin", task.base_commit, cwd=staging, timeout_s=timeout_s)
        fetched = _git("rev-parse", "FETCH_HEAD^{commit}", cwd=staging).strip()
        if not fetched.startswith(task.base_commit):
            raise RepoFetchError(f"fetched {fetched}, expected base commit {task.base_commit}")
        _git("update-ref", f"refs/heads/{BASE_BRANCH}", fetched, cwd=staging)
        _git("symbolic-ref", "HEAD", f"refs/heads/{BASE_BRANCH}", cwd=staging)
        (staging / "FETCH_HEAD").unlink(missing_ok=True)
        (staging / COMPLETE_MARKER).write_text(f"{task.repo_url} {fetched}\n")
        try:
            staging.rename(entry)
        except OSError:
            if not (entry / COMPLETE_MARKER).exists():  # not a concurrent fetch that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def materialize_worktree(cache_dir: Path, task: Task, dest: Path) -> Path:
    """A fresh, writable working copy of the task's base commit at `dest`, with no remote and no later history."""
    entry = cache_entry_path(cache_dir, task)
    if not (entry / COMPLETE_MARKER).exists():
        raise RepoFetchError(
            f"{task.instance_id}: {task.repo}@{task.base_commit[:12]} is not in the cache {cache_dir}; "
            "run the cache rule (or fetch_base_commit) first"
        )
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"working copy destination {dest} is not empty")
    _git("clone", "-q", "--no-tags", "--no-hardlinks", "--branch", BASE_BRANCH, str(entry), str(dest))
    _git("remote", "remove", "origin", cwd=dest)
    # The reflog's "clone: from <cache path>" would show the sandbox a host path.
    shutil.rmtree(dest / ".git" / "logs", ignore_errors=True)
    return dest


def anonymous_worktree_path(root: Path) -> Path:
    """A fresh path under `root` for an agent's working copy that names neither the task nor the sample: a
    sandbox sees the host path of what it binds (/proc/self/mountinfo), and the instance id would tell the
    model which benchmark task it is on."""
    return Path(root) / f"wc-{secrets.token_hex(8)}"


class WorktreeDiffError(RuntimeError):
    """The working copy's diff against the base commit could not be computed."""


# Files that running Python or the tests leave behind: never part of a model's answer.
BUILD_LITTER = (":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc", ":(exclude,glob)**/.pytest_cache/**")
# Settings that make host git read nothing but the snapshot's own config and run nothing: no hooks, no fsmonitor,
# no pager, no external diff or textconv, and never a `git status` inside an embedded repository the agent made.
_HOST_GIT_SETTINGS = (
    "core.hooksPath=/dev/null", "core.fsmonitor=false", "core.pager=cat", "core.attributesFile=/dev/null",
    "core.excludesFile=/dev/null", "core.untrackedCache=false", "diff.ignoreSubmodules=all", "submodule.recurse=false",
)


def snapshot_git_dir(workdir: Path, dest: Path) -> Path:
    """Copy the git metadata of a working copy that no sandbox has touched yet to `dest`, a host-owned path.

    A plain file copy (no git process reads the working copy), symlinks kept as links; a working copy from
    `materialize_worktree` holds one commit, so this is about the size of one compressed checkout.
    """
    source = Path(workdir) / ".git"
    if source.is_symlink() or not source.is_dir():
        raise WorktreeDiffError(f"{source} is not a git directory")
    shutil.copytree(source, dest, symlinks=True)
    return Path(dest)


def host_git_env(git_dir: Path, work_tree: Path) -> dict[str, str]:
    """The whole environment of host git on an agent's tree: pinned paths, no config beyond the snapshot's own,
    and none of the host's variables (API keys, credentials) for anything git might start."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(git_dir),
        "GIT_DIR": str(git_dir),
        "GIT_COMMON_DIR": str(git_dir),
        "GIT_WORK_TREE": str(work_tree),
        "GIT_INDEX_FILE": str(Path(git_dir) / "index"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        **GIT_ENV,
    }


def worktree_diff(git_dir: Path, work_tree: Path, base_commit: str, timeout_s: float = 300) -> str:
    """The unified diff of `work_tree` against `base_commit`, new untracked files included, computed with the
    host-owned metadata in `git_dir` (see `snapshot_git_dir`). The tree's own `.git` is never read."""
    env = host_git_env(git_dir, work_tree)
    settings = [arg for setting in _HOST_GIT_SETTINGS for arg in ("-c", setting)]

    def host_git(*args: str) -> str:
        try:
            completed = subprocess.run(["git", *settings, *args], cwd=work_tree, env=env, capture_output=True,
                                       timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise WorktreeDiffError(f"git {args[0]} timed out after {timeout_s:.0f} s in {work_tree}") from error
        if completed.returncode != 0:
            stderr = completed.stderr.decode("utf-8", errors="replace").strip()[-1000:]
            raise WorktreeDiffError(f"git {args[0]} failed in {work_tree}: {stderr}")
        return completed.stdout.decode("utf-8", errors="replace")

    host_git("add", "--intent-to-add", "--all", "--", ".", *BUILD_LITTER)
    return host_git("diff", "--no-color", "--no-ext-diff", "--no-textconv", "--ignore-submodules=all", base_commit)


class BaseFileMissing(RepoFetchError):
    """A path asked for is not a file of the task's base commit."""


def base_file_reader(cache_dir: Path, task: Task) -> Callable[[str], str]:
    """Read files of the task's base commit straight from its cache entry (no working copy needed)."""
    entry = fetch_base_commit(Path(cache_dir), task)

    def read_file(path: str) -> str:
        completed = subprocess.run(
            ["git", "--git-dir", str(entry), "show", f"{task.base_commit}:{path}"], capture_output=True, check=False
        )
        if completed.returncode != 0:
            raise BaseFileMissing(f"{path} is not in {task.repo}@{task.base_commit[:12]}")
        return completed.stdout.decode("utf-8", errors="replace")

    return read_file


def cache_tasks(tasks: list[Task], cache_dir: Path, workers: int = 4, timeout_s: float = 600) -> list[dict]:
    """Fetch every distinct (repository, base commit) once, in parallel; one status record per task.

    A repository that fails to fetch is recorded as failed for each of its tasks; the others go on.
    """
    by_entry: dict[Path, list[Task]] = {}
    for task in tasks:
        by_entry.setdefault(cache_entry_path(cache_dir, task), []).append(task)

    def fetch(entry_tasks: list[Task]) -> tuple[str, str | None, float]:
        started = time.monotonic()
        try:
            fetch_base_commit(cache_dir, entry_tasks[0], timeout_s=timeout_s)
            return "ok", None, time.monotonic() - started
        except RepoFetchError as error:
            return "failed", str(error), time.monotonic() - started

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = dict(zip(by_entry, pool.map(fetch, by_entry.values()), strict=True))
    records = []
    for task in tasks:
        entry = cache_entry_path(cache_dir, task)
        status, error, seconds = outcomes[entry]
        records.append(
            {
                "instance_id": task.instance_id,
                "repo": task.repo,
                "base_commit": task.base_commit,
                "status": status,
                "cache_path": str(entry),
                "error": error,
                "seconds": round(seconds, 3),
            }
        )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch each task's base commit into the repository cache.")
    parser.add_argument("--tasks", required=True, type=Path)
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="per-task cache status (JSONL)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per fetch")
    args = parser.parse_args(argv)
    tasks = read_tasks(args.tasks)
    records = cache_tasks(tasks, args.cache_dir, workers=args.workers, timeout_s=args.timeout)
    write_jsonl(args.out, records)
    failed = [r for r in records if r["status"] != "ok"]
    print(f"{len(records) - len(failed)}/{len(records)} tasks cached in {args.cache_dir}")
    for record in failed:
        print(f"FAILED {record['instance_id']}: {record['error']}", file=sys.stderr)
    if records and len(failed) == len(records):
        # Nothing to run an episode on: fail here, not with every episode of every later stage.
        print(f"error: no repository of {args.tasks} could be cached (see the FAILED lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
