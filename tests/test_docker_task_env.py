"""Tasks in their own image, for real: a Docker daemon and a small image built here (tests/docker/local_docker.sh),
mini benchmark tasks published as SWE-bench instances of it, and the three things that run in it: swebench's own
harness (`--backend swebench`), an agent episode (`sandbox: docker`) and the GRPO `resolved` reward.

The instance images are SWE-bench's shape: the repository at /testbed with its whole history (the fix commit
included, as `git log --all` shows it in SWE-bench's images) and a build product its git does not track.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
from repairrl.data.mini_images import BUILD_PRODUCT, TEST_CMD
from repairrl.records import read_jsonl, write_jsonl
from repairrl.tasks import Task

from .conftest import REPO_ROOT

DOCKER_SCRIPT = REPO_ROOT / "tests" / "docker" / "local_docker.sh"
# Two small pytest tasks of the mini benchmark.
IMAGE_TASKS = ("mini__pager-1", "mini__textstats-1")
WRONG_PATCH = (
    "diff --git a/NOTES.txt b/NOTES.txt\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.txt\n"
    "@@ -0,0 +1 @@\n+not a fix\n"
)


def _docker_up() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30).returncode == 0
    )


@pytest.fixture(scope="session")
def docker_base_image():
    """The daemon (started here if it is not running, stopped after if so) and the base image's tag."""
    already_running = _docker_up()
    if not already_running:
        if os.geteuid() != 0:
            pytest.skip(
                "Docker is not running and starting it needs root (tests/docker/local_docker.sh start)"
            )
        if shutil.which("dockerd") is None and shutil.which("apt-get") is None:
            pytest.skip("docker.io is not installed and there is no apt-get to install it")
        started = subprocess.run([DOCKER_SCRIPT, "start"], capture_output=True, text=True, check=False)
        assert started.returncode == 0, started.stderr
    built = subprocess.run([DOCKER_SCRIPT, "image"], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    yield built.stdout.strip().splitlines()[-1]
    if not already_running:
        subprocess.run([DOCKER_SCRIPT, "stop"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def image_tasks(docker_base_image, tmp_path_factory):
    from repairrl.data.mini_benchmark import build_benchmark, load_tasks
    from repairrl.data.mini_images import publish_tasks
    from repairrl.repos import cache_tasks

    root = tmp_path_factory.mktemp("docker-tasks")
    build_benchmark(root / "mini")
    tasks = [task for task in load_tasks(root / "mini") if task.instance_id in IMAGE_TASKS]
    cache = root / "cache"
    assert all(entry["status"] == "ok" for entry in cache_tasks(tasks, cache))
    images = publish_tasks(tasks, docker_base_image, root)
    yield SimpleNamespace(tasks=images, cache=cache, root=root)
    subprocess.run(
        ["docker", "image", "rm", "--force", *(t.image for t in images)], capture_output=True, check=False
    )


def predictions(tasks: list[Task]) -> list[dict]:
    rows = []
    for task in tasks:
        rows.append(
            {"instance_id": task.instance_id, "model_name_or_path": "gold", "model_patch": task.gold_patch}
        )
        rows.append({"instance_id": task.instance_id, "model_name_or_path": "empty", "model_patch": ""})
        rows.append(
            {"instance_id": task.instance_id, "model_name_or_path": "wrong", "model_patch": WRONG_PATCH}
        )
    return rows


@pytest.mark.slow
def test_official_harness_resolves_gold_and_not_empty_or_wrong_patches(image_tasks, tmp_path):
    tasks_path, preds_path, out = tmp_path / "tasks.jsonl", tmp_path / "preds.jsonl", tmp_path / "graded"
    write_jsonl(tasks_path, [task.to_record() for task in image_tasks.tasks])
    write_jsonl(preds_path, predictions(image_tasks.tasks))
    completed = subprocess.run(
        [sys.executable, "-m", "repairrl.evaluate", "harness", "--tasks", tasks_path, "--predictions", preds_path,
         "--out", out, "--backend", "swebench", "--workers", "2", "--timeout", "120"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    harness_log = (tmp_path / "graded.work" / "harness.log").read_text() if completed.returncode else ""
    assert completed.returncode == 0, completed.stderr + harness_log
    ids = sorted(task.instance_id for task in image_tasks.tasks)
    summaries = {
        model: json.loads((out / f"{model}.repairrl.json").read_text()) for model in ("gold", "wrong")
    }
    assert summaries["gold"]["resolved_ids"] == ids
    assert summaries["wrong"]["resolved_ids"] == [] and summaries["wrong"]["unresolved_ids"] == ids
    for instance_id in ids:
        report = json.loads((out / "gold" / instance_id / "report.json").read_text())
        assert report[instance_id]["resolved"] is True
        # swebench skips empty patches; they are still recorded, as not resolved.
        empty = json.loads((out / "empty" / instance_id / "outcome.json").read_text())
        assert empty["status"] == "empty_patch" and empty["resolved"] is False
    assert (
        not (out / "empty.repairrl.json").exists()
        or json.loads((out / "empty.repairrl.json").read_text())["resolved_ids"] == []
    )


@pytest.mark.slow
def test_agent_episode_runs_the_tests_in_the_task_image_and_the_host_diffs(image_tasks, tmp_path):
    from repairrl.agent.loop import AgentConfig
    from repairrl.agent.run import run_tasks
    from repairrl.models.backends import ScriptedBackend
    from repairrl.repos import materialize_worktree
    from repairrl.sandbox import SandboxLimits, make_sandbox

    task = image_tasks.tasks[0]

    def shell(cmd: str) -> str:
        return f"<tool_call>{json.dumps({'name': 'shell', 'arguments': {'cmd': cmd}})}</tool_call>"

    probe = (
        "pwd; git log --all --oneline | wc -l; cat "
        + BUILD_PRODUCT
        + "; test -e /.dockerenv && echo in-docker; "
        "python3 -c 'import socket; socket.create_connection((\"10.0.0.1\", 80), timeout=2)' 2>&1 | tail -1"
    )
    script = [
        shell(probe),
        shell(f"{TEST_CMD} -q tests 2>&1 | tail -1"),
        shell(f"patch -p1 <<'EOF'\n{task.gold_patch}\nEOF"),
        shell(f"{TEST_CMD} -q tests 2>&1 | tail -1"),
        "done",
    ]
    limits = SandboxLimits(memory_mb=512, max_processes=64, cpus=1.0, max_workdir_mb=64)
    out = tmp_path / "trajectories.jsonl"
    summary = run_tasks(
        [task], ScriptedBackend(script), out, lambda t, dest: materialize_worktree(image_tasks.cache, t, dest),
        lambda workdir, t: make_sandbox("docker", workdir, limits=limits, image=t.image),
        AgentConfig(command_timeout_s=60), progress=False, work_root=tmp_path,
    )  # fmt: skip
    assert summary["failed"] == 0
    (record,) = read_jsonl(out)
    outputs = [call["output"] for call in record["tool_calls"]]
    where, commits, product, in_docker, network = outputs[0].splitlines()[:5]
    assert in_docker == "in-docker"
    assert where == "/testbed"  # where the image's environment expects the repository
    assert commits == "1"  # the image's history, fix included, stays hidden under the host's one-commit copy
    assert product == "built by the image's install"  # the image's build products are in the working copy
    assert "Network is unreachable" in network or "Errno" in network
    # The task's tests run in the image (its python3 and pytest), before and after the fix.
    assert "passed" in outputs[1] and "passed" in outputs[3] and "failed" not in outputs[3]
    # The diff is the host's: the fix, without the build product or what running the tests left.
    changed = sorted(
        line.split(" b/")[-1] for line in record["diff"].splitlines() if line.startswith("diff --git")
    )
    assert changed == sorted(task.gold_patch_files())
    assert BUILD_PRODUCT not in record["diff"] and "__pycache__" not in record["diff"]
    assert record["config"]["repo_path"] == "/testbed"


@pytest.mark.slow
def test_docker_sandbox_limits_the_container_like_bwrap(image_tasks, tmp_path):
    from repairrl.sandbox import SandboxLimits
    from repairrl.sandbox.container import DockerSandbox

    workdir = tmp_path / "wc"
    workdir.mkdir()
    limits = SandboxLimits(memory_mb=256, max_processes=32, command_timeout_s=30, tmp_size_mb=16)
    with DockerSandbox(workdir, image_tasks.tasks[0].image, limits, hydrate=False) as box:
        assert box.run("touch /usr/x 2>&1; echo $?").output.strip().endswith("1")  # the image is read-only
        assert box.run("head -c 40M /dev/zero > /tmp/big; echo $?").output.strip().endswith("1")  # sized /tmp
        memory = box.run("python3 -c 'b = bytearray(400 * 2**20)'; echo $?")
        assert memory.output.strip().splitlines()[-1] != "0"
        # The process cap is the container's (pids cgroup): bash's fork fails, whatever its message.
        forks = box.run("for i in $(seq 100); do sleep 1 & done 2>&1 | tail -1", timeout_s=20)
        assert "fork" in forks.output
        assert box.run("echo ok").output == "ok\n"


# A conftest.py that reports every test passed: test infrastructure, reset before the tests run.
TAMPER_PATCH = (
    "diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n"
    "@@ -0,0 +1,7 @@\n+import pytest\n+\n+\n+@pytest.hookimpl(hookwrapper=True)\n"
    "+def pytest_runtest_makereport(item, call):\n+    report = (yield).get_result()\n"
    '+    report.outcome = "passed"\n'
)


@pytest.mark.slow
def test_resolved_reward_runs_the_eval_script_in_the_task_image(image_tasks):
    from repairrl.grading.grade import grade_many
    from repairrl.grading.rewards import RewardNotComputableError, check_rewards_computable, compose_rewards

    tasks = image_tasks.tasks
    check_rewards_computable({"resolved": 1.0}, "repo_repair", tasks, "docker")
    without_script = [dataclasses.replace(tasks[0], eval_script=None)]
    with pytest.raises(RewardNotComputableError, match="no eval script"):
        check_rewards_computable({"resolved": 1.0}, "repo_repair", without_script, "docker")
    task = tasks[0]
    patches = {"gold": task.gold_patch, "empty": "", "wrong": WRONG_PATCH, "tamper": TAMPER_PATCH}
    outcomes = dict(zip(patches, grade_many([(task, p) for p in patches.values()], image_tasks.cache,
                                            workers=4, backend="docker", timeout_s=120)))  # fmt: skip
    rewards = compose_rewards({"resolved": 1.0})
    scores = {name: rewards(task, patches[name], outcome).total for name, outcome in outcomes.items()}
    assert scores == {"gold": 1.0, "empty": 0.0, "wrong": 0.0, "tamper": 0.0}, {
        name: (o.status, o.reason, o.log[-2000:]) for name, o in outcomes.items()
    }
    assert outcomes["empty"].status == "empty_patch" and outcomes["wrong"].status == "unresolved"
    # Without the reset the conftest would have passed every test; it was reset to the base (removed) instead.
    assert outcomes["tamper"].status == "unresolved" and outcomes["tamper"].test_infra_edits == [
        "conftest.py"
    ]
    assert ">>>>> Start Test Output" in outcomes["gold"].log  # the eval script's own log, graded by swebench


# --- the cluster's apptainer path, checked against the docker path (no apptainer here) ---


def test_apptainer_sandbox_binds_limits_and_mounts_like_the_docker_sandbox(tmp_path, monkeypatch):
    from repairrl.sandbox import SandboxLimits
    from repairrl.sandbox.container import ApptainerSandbox, DockerSandbox

    limits = SandboxLimits(max_processes=64, memory_mb=2048, cpus=1.0)
    image = "swebench/sweb.eval.x86_64.owner_1776_project-1:latest"
    sif_dir = tmp_path / "sif"
    sif_dir.mkdir()
    (sif_dir / "sweb.eval.x86_64.owner_1776_project-1_latest.sif").write_text("")
    monkeypatch.setenv("REPAIRRL_SIF_DIR", str(sif_dir))
    docker = DockerSandbox(tmp_path, image, limits).run_args()
    apptainer = ApptainerSandbox(tmp_path, image, limits, cgroups=True).apptainer_args()
    # The same mount point (where the task images' environments expect the repository), the same working copy.
    assert f"{tmp_path}:/testbed:rw" in docker and docker[docker.index("--workdir") + 1] == "/testbed"
    assert apptainer[apptainer.index("--bind") + 1] == f"{tmp_path}:/testbed"
    assert apptainer[apptainer.index("--pwd") + 1] == "/testbed"
    # The same totals, and no network in either.
    assert docker[docker.index("--pids-limit") + 1] == apptainer[apptainer.index("--pids-limit") + 1] == "64"
    assert docker[docker.index("--memory") + 1].rstrip("m") == apptainer[
        apptainer.index("--memory") + 1
    ].rstrip("M")
    assert docker[docker.index("--cpus") + 1] == apptainer[apptainer.index("--cpus") + 1] == "1"
    assert (
        docker[docker.index("--network") + 1] == "none"
        and "none" in apptainer[apptainer.index("--network") :]
    )
    # The pulled SIF, not a registry, on the cluster's nodes.
    assert apptainer[-1] == str(sif_dir / "sweb.eval.x86_64.owner_1776_project-1_latest.sif")
    # The image's build products are fetched the same way: a shell in the image, without network.
    hydrate_docker = DockerSandbox(tmp_path, image).image_shell_argv()
    hydrate_apptainer = ApptainerSandbox(tmp_path, image).image_shell_argv()
    assert hydrate_docker[-2:] == [image, "-c"]
    assert "none" in hydrate_docker and "none" in hydrate_apptainer and hydrate_apptainer[-1] == "-c"


def test_resolved_reward_in_apptainer_runs_the_same_script_in_the_pulled_image(tmp_path, monkeypatch):
    from repairrl.grading import container

    monkeypatch.setenv("REPAIRRL_SIF_DIR", str(tmp_path))
    (tmp_path / "img_latest.sif").write_text("")
    command = container.command_for_backend("apptainer")("registry/img:latest", tmp_path / "scratch", "name")
    assert command[:2] == ["apptainer", "exec"] and command[command.index("--pwd") + 1] == "/testbed"
    assert command[command.index("--bind") + 1] == f"{tmp_path / 'scratch'}:/repairrl"
    assert command[-3:] == [str(tmp_path / "img_latest.sif"), "/bin/bash", "/repairrl/run.sh"]
    docker = container.command_for_backend("docker")("registry/img:latest", tmp_path / "scratch", "name")
    assert docker[-2:] == ["registry/img:latest", "/repairrl/run.sh"] and "--network" in docker
    script = container.container_script("abc123", ["conftest.py"])
    # Apply, then reset the test infrastructure, then the eval script: the order swebench's harness and the
    # host grader keep.
    assert (
        script.index("git apply --verbose /repairrl/patch.diff")
        < script.index("conftest.py")
        < script.index("/bin/bash /repairrl/eval.sh")
    )


@pytest.mark.slow
def test_grpo_episode_in_the_task_image_earns_resolved_only_for_a_real_fix(image_tasks, tmp_path):
    """The rollout's own path: an episode with `sandbox: docker`, its host-computed diff graded in the image."""
    from repairrl.grpo.rollout import AgentRollout, RolloutConfig
    from repairrl.models.backends import ScriptedBackend
    from repairrl.sandbox import SandboxLimits

    task = image_tasks.tasks[1]
    config = RolloutConfig(cache_dir=image_tasks.cache, rewards={"resolved": 1.0, "similarity": 0.0},
                           sandbox="docker", sandbox_limits=SandboxLimits(memory_mb=512), work_root=tmp_path)  # fmt: skip
    rollout = AgentRollout([task], config)

    def shell(cmd: str) -> str:
        return f"<tool_call>{json.dumps({'name': 'shell', 'arguments': {'cmd': cmd}})}</tool_call>"

    fix, look = shell(f"patch -p1 <<'EOF'\n{task.gold_patch}EOF"), shell("ls")
    totals = {}
    for name, script in {"fixes": [fix, "done"], "looks": [look, "done"]}.items():
        record = rollout._episode(0, task.instance_id, ScriptedBackend(script), tmp_path, step=0)
        assert record["status"] == "ok", record["error"]
        _, totals[name], grading = rollout._grade(task, record)
        assert grading["outcome"] is not None
    assert totals == {"fixes": 1.0, "looks": 0.0}


def test_hydration_copies_only_new_files_inside_the_working_copy_and_excludes_them(tmp_path):
    """The image's side is faked by a tar of a folder (`bash -c CMD` ignores the script hydration appends)."""
    from repairrl.sandbox.container import hydrate_from_image

    from .conftest import git

    workdir, image_tree, outside = tmp_path / "wc", tmp_path / "image", tmp_path / "outside"
    for folder in (workdir, image_tree / "build", image_tree / "out", image_tree / ".git", outside):
        folder.mkdir(parents=True)
    git("init", "-q", cwd=workdir)
    (workdir / "a.py").write_text("base\n")
    (workdir / "out").symlink_to(outside)
    (image_tree / "a.py").write_text("changed by the image's install\n")
    (image_tree / "build" / "ext.so").write_text("compiled\n")
    (image_tree / "odd [x].txt").write_text("odd\n")
    (image_tree / "out" / "evil.txt").write_text("through the link\n")
    (image_tree / ".git" / "config").write_text("[core]\n\tfsmonitor = evil\n")
    copied = hydrate_from_image(["bash", "-c", f"tar -C {image_tree} -c -f - ."], workdir)
    assert sorted(copied) == ["build/ext.so", "odd [x].txt"]
    assert (workdir / "a.py").read_text() == "base\n"  # the host's checkout wins
    assert not list(outside.iterdir()) and "fsmonitor" not in (workdir / ".git" / "config").read_text()
    assert git("status", "--porcelain", "--untracked-files=all", cwd=workdir).splitlines() == [
        "?? a.py",
        "?? out",
    ]
