"""Resource attacks of a hostile model, scripted, through the real agent loop (`run_episode`) and a real bubblewrap
sandbox: every limit must be a total of the episode, not of one process. Memory, the working copy's size and file
count, /dev, CPU time, hung and backgrounded commands, and what /proc/self/mountinfo tells of the host.

A test that needs a cgroup controller the host does not let us make is skipped, naming the controller; the
fork bomb is in tests/test_sandbox.py, attacks on the host's files and secrets in tests/test_attacks.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from repairrl.agent.loop import AgentConfig, run_episode
from repairrl.models.backends import ScriptedBackend
from repairrl.sandbox import SandboxLimits, make_sandbox
from repairrl.sandbox.base import SandboxLimitError, workdir_usage
from repairrl.tasks import Task

from .conftest import git, needs_bwrap

MEMORY_NOTICE = "[killed: the sandbox's memory limit of {} MB was reached]"


pytestmark = needs_bwrap


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Task]:
    """A one-commit working copy, as `materialize_worktree` leaves one, and its task."""
    path = tmp_path / "episode" / "calc"
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    (path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "calc", cwd=path)
    task = Task(instance_id="calc-1", dataset="test", repo="owner/calc", repo_url=str(path),
                base_commit=git("rev-parse", "HEAD", cwd=path), problem_statement="add(2, 3) returns -1.",
                gold_patch="", test_patch="", fail_to_pass=[], pass_to_pass=[])
    return path, task


def shell(cmd: str) -> str:
    return f"<tool_call>{json.dumps({'name': 'shell', 'arguments': {'cmd': cmd}})}</tool_call>"


def run_attack(repo, commands: list[str], limits: SandboxLimits, needs: tuple[str, ...] = (), box_setup=None,
               **config) -> tuple[dict, list[str], object]:
    """One episode of the scripted `commands`; returns the record, the tool outputs and the (closed) sandbox,
    whose cgroup counters were read into `box.counters` before it closed."""
    path, task = repo
    with make_sandbox("bwrap", path, limits) as box:
        for controller in needs:
            if box.cgroup is None or controller not in box.cgroup.dirs:
                pytest.skip(f"this host does not let us make a {controller} cgroup, so that total is not enforced")
        if box_setup:
            box_setup(box)
        record = run_episode(task, ScriptedBackend([shell(c) for c in commands]), box, path,
                             AgentConfig(repo_path="/repo", **config))
        box.counters = {"cpu_s": box.cgroup.cpu_usage_s() if box.cgroup else None}
    return record, [call["output"] for call in record["tool_calls"]], box


def test_three_processes_together_cannot_pass_the_sandbox_memory_total(repo):
    # Each process fits the per-process limit (ulimit -v); together they are twice the sandbox's total.
    hog = "python -c 'import time; b = b\"x\" * (200 << 20); time.sleep(1.5); print(\"held\")'"
    record, outputs, _ = run_attack(
        repo, [f"{hog} & {hog} & {hog} & wait", "echo alive"], SandboxLimits(memory_mb=300), needs=("memory",)
    )
    assert MEMORY_NOTICE.format(300) in outputs[0]
    assert outputs[0].splitlines().count("held") < 3  # at least one of them was killed
    assert outputs[1] == "alive\n[exit code: 0]"  # and the sandbox goes on
    assert record["stop_reason"] == "no_tool_call"


def test_an_oom_killed_command_reports_137_and_the_next_command_works(repo):
    # The process fits ulimit -v; with what /tmp (a tmpfs, memory too) already holds it does not fit the total.
    attack = "head -c 250M /dev/zero > /tmp/fill && python -c 'b = b\"x\" * (200 << 20)'"
    _, outputs, _ = run_attack(repo, [attack, "rm /tmp/fill && echo alive"], SandboxLimits(memory_mb=400),
                               needs=("memory",))
    assert outputs[0].endswith(MEMORY_NOTICE.format(400) + "\n[exit code: 137]"), outputs[0]
    assert outputs[1] == "alive\n[exit code: 0]"


def test_five_large_files_end_the_episode_at_the_working_copy_cap(repo):
    record, outputs, box = run_attack(
        repo, ["for i in 1 2 3 4 5; do head -c 30M /dev/zero > big$i.bin; done", "echo never"],
        SandboxLimits(max_workdir_mb=100),
    )
    assert record["stop_reason"] == "sandbox_limit"
    assert "cap of 100 MB" in record["error"] and "max_workdir_mb" in record["error"]
    assert len(record["tool_calls"]) == 1 and "never" not in outputs[0]
    assert record["diff"] == ""  # an oversized working copy is not diffed
    with pytest.raises(SandboxLimitError, match="100 MB"):  # and the sandbox refuses anything further
        box.run("true")


def test_a_sparse_file_counts_with_its_apparent_size(repo):
    record, _, _ = run_attack(repo, ["truncate -s 200M sparse.bin"], SandboxLimits(max_workdir_mb=100))
    assert record["stop_reason"] == "sandbox_limit"


def test_many_small_files_end_the_episode_at_the_file_cap(repo):
    record, _, _ = run_attack(
        repo, ["mkdir many && cd many && seq 1 3000 | xargs touch", "echo never"],
        SandboxLimits(max_workdir_files=2000),
    )
    assert record["stop_reason"] == "sandbox_limit"
    assert "cap of 2000 files" in record["error"]
    assert len(record["tool_calls"]) == 1


def test_a_long_command_filling_the_working_copy_is_stopped_while_it_runs(repo):
    def check_often(box) -> None:
        box.WORKDIR_CHECK_INTERVAL_S = 0.3

    fill = "for i in $(seq 1 100); do head -c 10M /dev/zero > f$i.bin; sleep 0.1; done"
    record, _, _ = run_attack(repo, [fill], SandboxLimits(max_workdir_mb=50), box_setup=check_often)
    assert record["stop_reason"] == "sandbox_limit"
    assert record["tool_calls"][0]["seconds"] < 5  # the loop would take over 10 s
    size, _ = workdir_usage(repo[0])
    assert size < 120 * 2**20


def test_dev_is_read_only_and_dev_shm_is_small(repo):
    attack = ("head -c 64M /dev/zero > /dev/shm/fill; echo shm=$?; head -c 1M /dev/zero > /dev/fill; echo dev=$?; "
              "du -sk /dev/shm; echo x > /dev/null && echo null-ok")
    _, outputs, _ = run_attack(repo, [attack], SandboxLimits(shm_size_mb=8))
    assert "No space left on device" in outputs[0] and "shm=1" in outputs[0]
    assert "Read-only file system" in outputs[0] and "dev=1" in outputs[0]
    (du_line,) = [line for line in outputs[0].splitlines() if line.endswith("/dev/shm")]
    assert int(du_line.split()[0]) <= 8 * 1024  # KiB
    assert "null-ok" in outputs[0]


def test_a_cpu_burner_is_throttled_to_the_sandbox_cpu_quota(repo):
    burn = "timeout 2 sh -c 'while :; do :; done'"
    record, outputs, box = run_attack(repo, [f"{burn} & {burn} & {burn} & wait; echo burnt"],
                                      SandboxLimits(cpus=0.5), needs=("cpu",))
    if box.counters["cpu_s"] is None:
        pytest.skip("no cgroup counts the sandbox's CPU time here (cpuacct, or cpu.stat of cgroup v2)")
    assert "burnt" in outputs[0]
    wall_s = record["tool_calls"][0]["seconds"]
    # Three burners for 2 s would use up to 6 s of CPU; the quota allows half a core.
    assert box.counters["cpu_s"] <= 0.5 * wall_s + 0.3, (box.counters, wall_s)
    assert box.counters["cpu_s"] >= 0.2  # they did run


def test_a_hung_command_times_out_and_a_backgrounded_process_is_gone_next_command(repo):
    started = time.monotonic()
    _, outputs, box = run_attack(
        repo, ["echo before; sleep 1000", "sleep 1000 & echo started", "pgrep -c sleep || true", "echo alive"],
        SandboxLimits(), command_timeout_s=1,
    )
    assert "before" in outputs[0] and "timed out after 1 s" in outputs[0] and outputs[0].endswith("[killed]")
    assert outputs[1] == "started\n[exit code: 0]"
    assert outputs[2] == "0\n[exit code: 0]"
    assert outputs[3] == "alive\n[exit code: 0]"
    assert box.restarts == 1
    assert time.monotonic() - started < 15


def test_mountinfo_names_no_host_path_beyond_the_bound_sources(repo):
    _, outputs, box = run_attack(repo, ["cat /proc/self/mountinfo"], SandboxLimits())
    roots = {line.split()[3] for line in outputs[0].splitlines() if len(line.split()) > 4}
    bound = [str(repo[0]), *box.extra_ro_binds, "/usr", "/etc", "/newroot", "/"]
    from repairrl.sandbox.bwrap import python_prefixes

    bound += python_prefixes()
    allowed = tuple(bound) + (box._identity_dir or "/nonexistent",)
    # Device nodes and /proc's own subtrees are fine; anything else must be a source we bound on purpose.
    leaked = [r for r in roots if not r.startswith(allowed) and not r.startswith(("/null", "/zero", "/full",
              "/random", "/urandom", "/tty", "/irq", "/bus", "/sys", "/fs", "/sysrq-trigger"))]
    assert not leaked, leaked


@pytest.mark.xfail(strict=True, reason="a bind mount shows its source's host path in mountinfo and bwrap cannot "
                   "rename it; the working copy's host path must reveal nothing of the task (see bwrap.py)")
def test_mountinfo_does_not_show_the_working_copy_host_path(repo):
    _, outputs, _ = run_attack(repo, ["cat /proc/self/mountinfo"], SandboxLimits())
    assert str(repo[0]) not in outputs[0]


# -- making the cgroups: v1 and v2 layouts, and hosts that allow none -------------------------------------------


def _fake_v2(root: Path, leaf_enabled: str, parent_enabled: str) -> Path:
    """A v2 tree as a delegating host has it: parent/leaf, our process in the leaf."""
    for directory, enabled in ((root, parent_enabled), (root / "leaf", leaf_enabled)):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (directory / "cgroup.subtree_control").write_text(enabled)
        (directory / "cgroup.procs").write_text("")
    return root / "leaf"


def test_cgroup_v2_limits_go_into_a_sibling_where_the_parent_delegates(tmp_path, monkeypatch):
    from repairrl.sandbox import bwrap

    # Our own cgroup holds processes, so it cannot enable controllers for children (the write does not take).
    leaf = _fake_v2(tmp_path / "job", leaf_enabled="", parent_enabled="cpu memory pids\n")
    monkeypatch.setattr(bwrap, "own_cgroups", lambda: ({}, leaf))
    cgroup = bwrap.SandboxCgroup(SandboxLimits(memory_mb=300, cpus=1.5, max_processes=64))
    assert cgroup.create() == {"pids", "memory", "cpu"} and cgroup.unenforced == []
    (child,) = cgroup.directories
    assert child.parent == tmp_path / "job"
    assert (child / "memory.max").read_text() == str(300 * 2**20)
    assert (child / "cpu.max").read_text() == "150000 100000"
    assert (child / "pids.max").read_text() == "64"
    argv = cgroup.join_argv(["bwrap", "true"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[-4:] == [str(child / "cgroup.procs"), "--", "bwrap", "true"]


def test_cgroup_v1_limits_go_into_each_hierarchy(tmp_path, monkeypatch):
    from repairrl.sandbox import bwrap

    dirs = {name: tmp_path / name for name in ("pids", "memory", "cpu,cpuacct")}
    for directory in dirs.values():
        directory.mkdir()
    (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text("")
    own = {"pids": dirs["pids"], "memory": dirs["memory"], "cpu": dirs["cpu,cpuacct"], "cpuacct": dirs["cpu,cpuacct"]}
    monkeypatch.setattr(bwrap, "own_cgroups", lambda: (own, None))
    cgroup = bwrap.SandboxCgroup(SandboxLimits(memory_mb=300, cpus=0.5))
    assert cgroup.create() == {"pids", "memory", "cpu"}
    assert len(cgroup.directories) == 3  # cpu and cpuacct share their co-mounted hierarchy
    assert (cgroup.dirs["memory"] / "memory.limit_in_bytes").read_text() == str(300 * 2**20)
    assert not (cgroup.dirs["memory"] / "memory.memsw.limit_in_bytes").exists()  # only where the kernel has it
    assert (cgroup.dirs["cpu"] / "cpu.cfs_quota_us").read_text() == "50000"
    assert cgroup.dirs["cpuacct"] == cgroup.dirs["cpu"]


def test_own_cgroups_reads_co_mounted_and_unified_hierarchies(tmp_path):
    from repairrl.sandbox.bwrap import own_cgroups

    (tmp_path / "cpu,cpuacct" / "user.slice").mkdir(parents=True)
    (tmp_path / "memory" / "job").mkdir(parents=True)
    mountinfo = "\n".join([
        f"32 31 0:29 / {tmp_path}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
        f"35 31 0:32 /job {tmp_path}/memory rw,relatime - cgroup cgroup rw,memory",  # a namespaced mount root
        f"41 31 0:38 / {tmp_path}/unified rw,relatime - cgroup2 cgroup2 rw",
    ])
    v1, v2 = own_cgroups("4:cpu,cpuacct:/user.slice\n3:memory:/job\n0::/session-1.scope\n", mountinfo)
    assert v1 == {"cpu": tmp_path / "cpu,cpuacct/user.slice", "cpuacct": tmp_path / "cpu,cpuacct/user.slice",
                  "memory": tmp_path / "memory"}
    assert v2 == tmp_path / "unified/session-1.scope"


def test_a_host_without_cgroups_warns_once_and_the_sandbox_still_runs(repo, monkeypatch):
    import warnings

    from repairrl.sandbox import bwrap

    monkeypatch.setattr(bwrap, "own_cgroups", lambda: ({}, None))
    monkeypatch.setattr(bwrap, "_WARNED", set())
    box = make_sandbox("bwrap", repo[0])
    with pytest.warns(RuntimeWarning, match="total memory: ulimit -v of 4096 MB per process only; CPU time: not"):
        box.start()
    with box:
        assert box.run("echo ok").output == "ok\n"
        assert box.limit_notices() == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with make_sandbox("bwrap", repo[0]) as box:
            assert box.run("echo ok").output == "ok\n"
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
