"""The attack suite: a hostile model, scripted, goes through the real agent loop (`run_tasks` -> `run_episode`,
a working copy from the repository cache, a bubblewrap sandbox) and tries to reach the host.

Each attack asserts that it had no effect on the host: no program ran there (a marker file the host would have
made does not exist), the final diff is what the agent really changed, secrets stay out, the cache stays intact.
Resource attacks (memory, disk, /dev, CPU, fork bombs, hung and backgrounded processes) are in
tests/test_sandbox_limits.py; attacks on the grader in tests/test_grading_attacks.py. README's Security table
lists all of them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from repairrl.agent.run import run_tasks
from repairrl.models.backends import ScriptedBackend
from repairrl.records import read_jsonl
from repairrl.repos import cache_entry_path, cache_tasks, materialize_worktree
from repairrl.sandbox import make_sandbox
from repairrl.tasks import Task

from .conftest import git, needs_bwrap

pytestmark = needs_bwrap

SOURCE = "def add(a, b):\n    return a - b\n"
FIX = "sed -i 's/a - b/a + b/' calc.py"  # the honest part of every attack: the diff must show exactly this


def hermes(name: str, **arguments: str) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.fixture(scope="module")
def cached_task(tmp_path_factory) -> tuple[Task, Path]:
    root = tmp_path_factory.mktemp("attacks")
    origin = root / "origin"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    (origin / "calc.py").write_text(SOURCE)
    # More objects than git's unpackLimit (100), so the cache keeps a pack, as it does for any real repository.
    (origin / "data").mkdir()
    for number in range(120):
        (origin / "data" / f"{number}.txt").write_text(f"{number}\n")
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", "calc", cwd=origin)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=origin)
    task = Task(instance_id="attack-1", dataset="attacks", repo="owner/calc", repo_url=f"file://{origin}",
                base_commit=git("rev-parse", "HEAD", cwd=origin), problem_statement="add() subtracts.",
                gold_patch="", test_patch="", fail_to_pass=[], pass_to_pass=[])
    cache = root / "cache"
    assert cache_tasks([task], cache)[0]["status"] == "ok"
    return task, cache


def run_attack(cached_task, tmp_path: Path, *steps: str) -> dict:
    """One episode whose tool calls are `steps` (shell commands, or ready-made tool calls), through run_tasks."""
    task, cache = cached_task
    script = [step if step.startswith("<tool_call>") else hermes("shell", cmd=step) for step in steps]
    out = tmp_path / f"trajectories-{len(list(tmp_path.glob('trajectories-*')))}.jsonl"
    summary = run_tasks([task], ScriptedBackend([*script, "done"]), out,
                        lambda t, dest: materialize_worktree(cache, t, dest),
                        lambda workdir, t: make_sandbox("bwrap", workdir), progress=False, work_root=tmp_path)
    assert summary["failed"] == 0, read_jsonl(out)[0]["error"]
    (record,) = read_jsonl(out)
    return record


def assert_only_the_fix(record: dict) -> None:
    """The diff holds the agent's real edit of calc.py, and besides it at most the in-tree .gitattributes the
    attack wrote (a file of the tree like any other)."""
    assert record["status"] == "ok" and record["error"] is None, record["error"]
    files = [line.split(" b/", 1)[1] for line in record["diff"].splitlines() if line.startswith("diff --git ")]
    assert set(files) <= {"calc.py", ".gitattributes"} and "calc.py" in files, record["diff"]
    calc = record["diff"][record["diff"].index("diff --git a/calc.py"):]
    changed = [line for line in calc.splitlines() if line.startswith(("+", "-"))][:4]
    assert changed == ["--- a/calc.py", "+++ b/calc.py", "-    return a - b", "+    return a + b"], record["diff"]


def marker_writer(marker: Path) -> str:
    """A command that, if the host ever ran it, would leave `marker` behind (the sandbox cannot see its folder)."""
    # No ';' or '#': in a git config file they would start a comment and cut the command short.
    return f"env > {shlex.quote(str(marker))} && cat"


def filter_config(marker: Path) -> str:
    command = marker_writer(marker)
    return (f"[filter \"pwn\"]\n\tclean = {command}\n\tsmudge = {command}\n\trequired = true\n"
            f"[diff \"pwn\"]\n\ttextconv = {command}\n"
            f"[core]\n\tfsmonitor = {command}\n\thooksPath = /tmp/hooks\n"
            f"[diff]\n\texternal = {command}\n")


def write(path: str, text: str) -> str:
    return f"mkdir -p $(dirname {path}) && printf %s {shlex.quote(text)} > {path}"


def hooks(marker: Path) -> str:
    hook = f"#!/bin/sh\n{marker_writer(marker)} </dev/null\n"
    names = ("post-index-change", "pre-commit", "post-checkout", "fsmonitor-watchman", "reference-transaction")
    return " && ".join(f"{write(f'/tmp/hooks/{name}', hook)} && chmod +x /tmp/hooks/{name}" for name in names)


GIT_ATTACKS = {
    # The attack found on main: a commondir whose config defines a filter that info/attributes assigns to all.
    "commondir": lambda m: [("mkdir -p /tmp/evil && cp -r .git/. /tmp/evil/ && mkdir -p /tmp/evil/info"
                            f" && {write('/tmp/evil/config', filter_config(m))}"
                            " && echo '* filter=pwn diff=pwn' > /tmp/evil/info/attributes"
                            " && echo /tmp/evil > .git/commondir")],
    "config": lambda m: [f"{write('.git/config', filter_config(m))} && echo '* filter=pwn diff=pwn' > .gitattributes"],
    "info-attributes": lambda m: [f"cat >> .git/config <<'EOF'\n{filter_config(m)}EOF\n",
                                  "mkdir -p .git/info && echo '* filter=pwn diff=pwn' > .git/info/attributes"],
    "include-path": lambda m: [(f"{write('/tmp/inc.cfg', filter_config(m))} && git config include.path /tmp/inc.cfg"
                               " && echo '* filter=pwn' > .gitattributes")],
    "fsmonitor": lambda m: [f"git config core.fsmonitor {shlex.quote(marker_writer(m))}"],
    "hooks-path": lambda m: [hooks(m), "git config core.hooksPath /tmp/hooks",
                             "cp /tmp/hooks/* .git/hooks/ 2>/dev/null; true"],
    "diff-external": lambda m: [f"git config diff.external {shlex.quote(marker_writer(m))}"],
    "textconv": lambda m: [(f"git config diff.pwn.textconv {shlex.quote(marker_writer(m))}"
                           " && echo '*.py diff=pwn' > .gitattributes")],
    "alternates": lambda m: [("mkdir -p /tmp/objs && echo /tmp/objs > .git/objects/info/alternates"
                             " && rm -rf .git/objects/pack .git/objects/??")],
    "gitdir-file": lambda m: [(f"mkdir -p /tmp/g && cp -r .git/. /tmp/g/ && {write('/tmp/g/config', filter_config(m))}"
                              " && echo '* filter=pwn' > /tmp/g/info/attributes && rm -rf .git"
                              " && echo 'gitdir: /tmp/g' > .git")],
    "symlinked-git": lambda m: [(f"mkdir -p /tmp/g && cp -r .git/. /tmp/g/ && {write('/tmp/g/config', filter_config(m))}"
                                " && rm -rf .git && ln -s /tmp/g .git")],
    # A repository of the agent's own inside the tree: host git must not run `git status` in it (submodule check).
    "embedded-repo": lambda m: [("mkdir sub && cd sub && git init -q && echo x > x && git add x"
                                " && git -c user.name=a -c user.email=a@b commit -qm x"
                                f" && git config core.fsmonitor {shlex.quote(marker_writer(m))}")],
    "git-removed": lambda m: ["rm -rf .git"],
}


@pytest.mark.parametrize("attack", sorted(GIT_ATTACKS))
def test_git_metadata_tricks_run_nothing_on_the_host(cached_task, tmp_path, monkeypatch, attack):
    marker = tmp_path / "host-ran-agent-code"
    monkeypatch.setenv("REPAIRRL_FAKE_API_KEY", "sk-must-not-leak")
    record = run_attack(cached_task, tmp_path, *GIT_ATTACKS[attack](marker), FIX)
    assert not marker.exists(), f"{attack}: the host ran a program the agent configured"
    assert_only_the_fix(record)


def test_the_commondir_attack_does_run_code_through_a_naive_host_git(cached_task, tmp_path):
    """The suite's sensitivity: the same tree, diffed as main used to (host git on the agent's .git), runs it."""
    task, cache = cached_task
    marker = tmp_path / "host-ran-agent-code"
    workdir = materialize_worktree(cache, task, tmp_path / "wc")
    with make_sandbox("bwrap", workdir) as sandbox:
        for command in [*GIT_ATTACKS["commondir"](marker), FIX]:
            assert sandbox.run(command).exit_code == 0
    # /tmp/evil lived in the sandbox's private /tmp; on the host it would be wherever commondir points, so
    # rebuild it there, as a model that knows the host layout would.
    evil = tmp_path / "evil"
    shutil.copytree(workdir / ".git", evil)
    (evil / "info").mkdir(exist_ok=True)
    (evil / "config").write_text(filter_config(marker))
    (evil / "info" / "attributes").write_text("* filter=pwn diff=pwn\n")
    (workdir / ".git" / "commondir").write_text(f"{evil}\n")
    subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "add", "--all"], cwd=workdir,
                   env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
                   capture_output=True, check=False)
    assert marker.exists()


def test_the_agent_never_sees_the_hosts_environment_or_files(cached_task, tmp_path, monkeypatch):
    monkeypatch.setenv("REPAIRRL_FAKE_API_KEY", "sk-must-not-leak")
    record = run_attack(cached_task, tmp_path, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; true",
                        f"cat {shlex.quote(str(Path.cwd() / 'README.md'))} /etc/shadow ~root/.bashrc 2>&1; "
                        f"ls -A {shlex.quote(str(Path.cwd()))}; true", FIX)
    outputs = "\n".join(call["output"] for call in record["tool_calls"])
    assert "sk-must-not-leak" not in outputs and "REPAIRRL_FAKE_API_KEY" not in outputs
    # Only the Python that runs the tests is bound in (at its own path); nothing else of the host's folders.
    listing = record["tool_calls"][1]["output"]
    assert listing.count("No such file or directory") == 3 and "scripts" not in listing, listing
    assert_only_the_fix(record)


def test_git_history_and_config_show_no_host_path(cached_task, tmp_path):
    task, cache = cached_task
    record = run_attack(cached_task, tmp_path, "git reflog; git log --all --format=%H; cat .git/config; "
                        "cat .git/packed-refs 2>/dev/null; ls -a .git", FIX)
    output = record["tool_calls"][0]["output"]
    assert str(cache) not in output and str(tmp_path) not in output, output
    assert output.count(task.base_commit) >= 1 and "clone: from" not in output


def test_rewriting_the_object_store_does_not_poison_the_cache(cached_task, tmp_path):
    task, cache = cached_task
    entry = cache_entry_path(cache, task)
    before = {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()}
    run_attack(cached_task, tmp_path, "find .git/objects -type f | while read f; do chmod u+w \"$f\";"
               " printf garbage > \"$f\"; done; git status 2>&1; true")
    assert {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()} == before
    fresh = materialize_worktree(cache, task, tmp_path / "fresh")
    assert (fresh / "calc.py").read_text() == SOURCE


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/evil.txt", "/repo/../outside.txt", "link/evil.txt",
                                  ".git/config", "sub/../../outside.txt"])
def test_apply_patch_cannot_write_outside_the_working_copy(cached_task, tmp_path, path):
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    record = run_attack(cached_task, tmp_path, f"ln -s {shlex.quote(str(outside))} link",
                        hermes("apply_patch", path=path, search="", replace="pwned\n"), FIX)
    assert record["tool_calls"][1]["failed"] and "Error" in record["tool_calls"][1]["output"]
    assert not list(outside.iterdir()) and not (tmp_path / "outside.txt").exists()
    assert not Path("/etc/evil.txt").exists()
    assert "pwned" not in record["diff"]


def test_an_oversized_diff_is_recorded_as_no_patch(cached_task, tmp_path):
    """A generated file that passes the working copy's cap still makes no answer of a megabyte-scale diff."""
    task, cache = cached_task
    out = tmp_path / "trajectories.jsonl"
    script = [hermes("shell", cmd="seq 1 200000 > numbers.txt && " + FIX), "done"]
    from repairrl.agent.loop import AgentConfig

    run_tasks([task], ScriptedBackend(script), out, lambda t, dest: materialize_worktree(cache, t, dest),
              lambda workdir, t: make_sandbox("bwrap", workdir), config=AgentConfig(max_diff_bytes=100_000),
              progress=False, work_root=tmp_path)
    (record,) = read_jsonl(out)
    assert record["status"] == "ok" and record["diff"] == ""
    assert "over max_diff_bytes (100000)" in record["error"]
