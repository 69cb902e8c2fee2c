"""Sandbox backends: attacks on the bwrap sandbox (each must fail, and the sandbox must go on working), the
limits, the persistent shell protocol, the container command lines and the unsafe opt-in."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from repairrl.sandbox import (
    BACKENDS,
    SandboxError,
    SandboxLimits,
    UnknownBackendError,
    UnsafeSandboxError,
    make_sandbox,
)
from repairrl.sandbox.base import OutputCapture
from repairrl.sandbox.bwrap import BwrapSandbox
from repairrl.sandbox.container import ApptainerSandbox, DockerSandbox
from repairrl.sandbox.local import UnsafeLocalSandbox

from .conftest import needs_bwrap

REPO_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "working-copy"
    path.mkdir()
    (path / "module.py").write_text("VALUE = 1\n")
    return path


@pytest.fixture
def sandbox(workdir: Path):
    with BwrapSandbox(workdir, SandboxLimits(command_timeout_s=20)) as box:
        yield box


def assert_still_works(box) -> None:
    result = box.run("echo still-alive && pwd")
    assert result.exit_code == 0, result.output
    assert result.output == f"still-alive\n{box.mount_point}\n"


def host_process_count() -> int:
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


# -- attacks -----------------------------------------------------------------------------------------------------


@needs_bwrap
def test_bwrap_blocks_network_to_a_host_server_and_dns(sandbox):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        connect = f"python -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\""
        result = sandbox.run(connect)
        assert result.exit_code != 0
        assert "ConnectionRefusedError" in result.output or "OSError" in result.output, result.output
    result = sandbox.run("python -c \"import socket; print(socket.getaddrinfo('example.com', 443))\"")
    assert result.exit_code != 0
    assert "gaierror" in result.output, result.output
    assert_still_works(sandbox)


@needs_bwrap
def test_bwrap_rejects_writes_outside_the_working_copy(sandbox, tmp_path):
    host_secret = tmp_path / "host-only.txt"
    host_secret.write_text("host data\n")
    for target in ("/etc/evil", "/usr/evil", "/evil", "/etc/passwd"):
        result = sandbox.run(f"echo x > {target}")
        assert result.exit_code != 0, target
        assert "Read-only file system" in result.output or "Permission denied" in result.output
    assert not Path("/etc/evil").exists() and not Path("/usr/evil").exists()
    # The host's /tmp is not the sandbox's: the file there is invisible, and what is written stays inside.
    assert sandbox.run(f"test -e {host_secret}").exit_code == 1
    assert sandbox.run("echo scratch > /tmp/scratch && cat /tmp/scratch").output == "scratch\n"
    assert not Path("/tmp/scratch").exists()
    assert_still_works(sandbox)


@needs_bwrap
def test_bwrap_hides_home_directories_and_host_secrets(workdir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-secret-for-the-test")
    with BwrapSandbox(workdir) as box:
        result = box.run("env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
        assert result.exit_code == 0
        assert "sk-fake-secret" not in result.output and "OPENAI_API_KEY" not in result.output
        for path in (
            "/root/.bashrc",
            "/root/.gitconfig",
            "/etc/shadow",
            "/etc/gitconfig",
            str(REPO_PYPROJECT),
        ):
            assert box.run(f"test -e {path}").exit_code == 1, path
        # /root holds only the Python prefix bound into it, /home only the sandbox's own empty home.
        assert box.run("ls -A /home").output == "agent\n"
        assert "agent:x:1000" in box.run("cat /etc/passwd").output
        assert "root:" not in box.run("cat /etc/passwd").output
        assert_still_works(box)


@needs_bwrap
def test_bwrap_contains_a_fork_bomb(workdir):
    limits = SandboxLimits(command_timeout_s=2, max_processes=64)
    with BwrapSandbox(workdir, limits) as box:
        baseline = host_process_count()
        peak = [baseline]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], host_process_count())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = box.run("bomb() { bomb | bomb & }; bomb; sleep 30")
        finally:
            stop.set()
            watcher.join()
        assert result.timed_out and result.exit_code is None
        # Bounded by the process limit (the margin is for other users of the machine).
        assert peak[0] - baseline < limits.max_processes + 40
        assert_still_works(box)
    # The host is fine: it can start processes, and none of the bomb's are left.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert host_process_count() < baseline + 20


@needs_bwrap
def test_bwrap_kills_what_a_command_leaves_running(sandbox):
    started = sandbox.run("sleep 600 & echo started")
    assert started.output == "started\n"
    assert sandbox.run("pgrep -c sleep || true").output.strip() == "0"
    assert_still_works(sandbox)


@needs_bwrap
def test_bwrap_truncates_a_gigabyte_of_output_in_bounded_memory(workdir):
    def peak_rss_kb() -> int:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])

    limits = SandboxLimits(command_timeout_s=60, output_limit_bytes=10_000)
    with BwrapSandbox(workdir, limits) as box:
        before = peak_rss_kb()
        result = box.run("yes | head -c 1000000000")
        assert result.exit_code == 0 and result.truncated
        assert result.output_bytes == 1_000_000_000
        assert "[... 999990000 bytes truncated ...]" in result.output
        assert len(result.output) < 10_100
        assert result.output.startswith("y\ny\n") and result.output.endswith("y\ny\n")
        assert peak_rss_kb() - before < 50_000
        assert_still_works(box)


@needs_bwrap
def test_bwrap_times_out_a_sleep_and_the_next_command_works(sandbox):
    result = sandbox.run("echo before; sleep 1000", timeout_s=1)
    assert result.timed_out and result.exit_code is None
    assert result.duration_s < 5
    assert result.output.startswith("before\n")
    assert "timed out after 1 s" in result.output
    assert sandbox.restarts == 1
    assert_still_works(sandbox)


@needs_bwrap
def test_bwrap_enforces_memory_and_file_size_limits(workdir):
    limits = SandboxLimits(memory_mb=512, max_file_size_mb=1)
    with BwrapSandbox(workdir, limits) as box:
        result = box.run("python -c 'b = bytearray(1024 ** 3)'")
        assert result.exit_code != 0 and "MemoryError" in result.output
        result = box.run("head -c 2000000 /dev/zero > big.bin")
        assert result.exit_code != 0
        assert (workdir / "big.bin").stat().st_size <= 1024 * 1024
        assert_still_works(box)


# -- ordinary work -----------------------------------------------------------------------------------------------


@needs_bwrap
def test_bwrap_writes_in_the_working_copy_persist_on_the_host(sandbox, workdir):
    result = sandbox.run("echo new > new.txt && mkdir -p pkg && echo 'VALUE = 2' > module.py && touch pkg/a")
    assert result.exit_code == 0, result.output
    assert (workdir / "new.txt").read_text() == "new\n"
    assert (workdir / "module.py").read_text() == "VALUE = 2\n"
    assert (workdir / "pkg" / "a").stat().st_uid == os.getuid()


@needs_bwrap
def test_bwrap_reports_exit_codes_output_and_cwd(sandbox):
    assert sandbox.run("true").exit_code == 0
    assert sandbox.run("exit 3").exit_code == 3
    result = sandbox.run("echo out; echo err >&2; false")
    assert result.exit_code == 1 and result.output == "out\nerr\n"
    assert sandbox.run("printf no-newline").output == "no-newline"
    assert sandbox.run("pwd").output == "/repo\n"
    # Every command starts afresh in the working copy: no cd or variable carries over.
    sandbox.run("cd /tmp && export LEFT=1")
    assert sandbox.run('pwd; echo "[$LEFT]"').output == "/repo\n[]\n"
    assert sandbox.run("cat module.py").output == "VALUE = 1\n"
    # stdin is closed, so a command that reads it ends instead of eating the next command.
    assert sandbox.run("cat").exit_code == 0
    assert_still_works(sandbox)


@needs_bwrap
def test_bwrap_runs_python_pytest_and_java(sandbox):
    assert sandbox.run("python -c 'print(6 * 7)'").output == "42\n"
    assert sandbox.run("python -m pytest --version").exit_code == 0
    result = sandbox.run("javac -version")
    assert result.exit_code == 0 and result.output.startswith("javac"), result.output
    assert sandbox.run("test -r /usr/share/java/junit4.jar").exit_code == 0


@needs_bwrap
def test_bwrap_extra_ro_binds_are_visible_but_read_only(workdir, tmp_path):
    objects = tmp_path / "objects"
    objects.mkdir()
    (objects / "pack").write_text("data\n")
    with BwrapSandbox(workdir, extra_ro_binds=[objects]) as box:
        assert box.run(f"cat {objects}/pack").output == "data\n"
        assert box.run(f"touch {objects}/new").exit_code != 0


@needs_bwrap
def test_bwrap_reports_a_shell_that_dies(sandbox):
    result = sandbox.run("kill -KILL $PPID; sleep 5")
    assert result.exit_code is None and "died" in result.output
    assert_still_works(sandbox)


# -- output capture, factory, unsafe backend, containers ---------------------------------------------------------


def test_output_capture_keeps_head_and_tail_with_a_notice():
    capture = OutputCapture(10)
    for chunk in (b"abc", b"defgh", b"x" * 100, b"12345"):
        capture.feed(chunk)
    assert capture.truncated and capture.total == 113
    assert capture.text() == "abcde\n[... 103 bytes truncated ...]\n12345"
    small = OutputCapture(10)
    small.feed(b"short")
    assert not small.truncated and small.text() == "short"


def test_make_sandbox_names_the_backends_when_it_does_not_know_one(workdir):
    with pytest.raises(UnknownBackendError, match="bwrap, apptainer, docker, unsafe-local"):
        make_sandbox("chroot", workdir)
    assert BACKENDS == ("bwrap", "apptainer", "docker", "unsafe-local")
    with pytest.raises(SandboxError, match="needs an image"):
        make_sandbox("docker", workdir)


def test_a_task_without_an_image_runs_in_bwrap_under_a_container_backend(workdir):
    from types import SimpleNamespace

    from repairrl.sandbox import task_sandbox
    from repairrl.sandbox.bwrap import BwrapSandbox
    from repairrl.sandbox.container import ApptainerSandbox, DockerSandbox

    assert isinstance(task_sandbox("docker", workdir, SimpleNamespace(image=None)), BwrapSandbox)
    assert isinstance(task_sandbox("apptainer", workdir, SimpleNamespace(image="")), BwrapSandbox)
    assert isinstance(task_sandbox("docker", workdir, SimpleNamespace(image="img:1")), DockerSandbox)
    assert isinstance(task_sandbox("apptainer", workdir, SimpleNamespace(image="img:1")), ApptainerSandbox)


def test_unsafe_local_sandbox_needs_the_explicit_opt_in(workdir):
    with pytest.raises(UnsafeSandboxError, match="unsafe=True"):
        make_sandbox("unsafe-local", workdir)
    with pytest.raises(UnsafeSandboxError):
        UnsafeLocalSandbox(workdir)


def test_unsafe_local_sandbox_runs_in_the_working_copy_with_limits(workdir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-secret-for-the-test")
    with make_sandbox("unsafe-local", workdir, SandboxLimits(output_limit_bytes=100), unsafe=True) as box:
        assert box.run("pwd").output == f"{workdir}\n"
        assert box.run("exit 4").exit_code == 4
        assert "sk-fake" not in box.run("env").output
        assert box.run("head -c 5000 /dev/zero | tr '\\0' a").truncated
        result = box.run("sleep 100", timeout_s=0.5)
        assert result.timed_out and result.exit_code is None
        assert box.run("echo ok").output == "ok\n"


def test_apptainer_command_line_confines_the_container(workdir):
    box = ApptainerSandbox(
        workdir, "python:3.11-slim", mount_point="/testbed", extra_ro_binds=["/data/objects"]
    )
    args = box.apptainer_args()
    for flag in ("--containall", "--cleanenv", "--writable-tmpfs", "--no-home"):
        assert flag in args
    assert args[args.index("--bind") + 1] == f"{workdir}:/testbed"
    assert "/data/objects:/data/objects:ro" in args
    assert args[args.index("--pwd") + 1] == "/testbed"
    assert args[args.index("--net") + 1 : args.index("--net") + 3] == ["--network", "none"]
    assert args[-1] == "docker://python:3.11-slim"
    assert box.launch_argv()[len(args) : len(args) + 3] == ["bash", "--noprofile", "--norc"]
    assert "kill -KILL -1" in box.launch_argv()[-1]
    assert ApptainerSandbox(workdir, "/images/task.sif").apptainer_args()[-1] == "/images/task.sif"
    assert "--network" not in ApptainerSandbox(workdir, "docker://x:1", network=True).apptainer_args()
    assert "--pids-limit" not in args
    limited = ApptainerSandbox(workdir, "x", SandboxLimits(max_processes=32, memory_mb=1000), cgroups=True)
    limited_args = limited.apptainer_args()
    assert limited_args[limited_args.index("--pids-limit") + 1] == "32"
    assert limited_args[limited_args.index("--memory") + 1] == "1000M"
    assert limited_args[limited_args.index("--cpus") + 1] == "2"  # the default SandboxLimits.cpus


def test_docker_command_lines_confine_a_long_lived_container(workdir):
    limits = SandboxLimits(max_processes=32, memory_mb=1000)
    box = DockerSandbox(workdir, "swebench/sweb.eval.x86_64.x:latest", limits, mount_point="/testbed")
    args = box.run_args()
    assert args[1:3] == ["run", "--detach"]
    assert args[args.index("--network") + 1] == "none"
    assert args[args.index("--pids-limit") + 1] == "32"
    assert args[args.index("--memory") + 1] == "1000m"
    assert args[args.index("--cpus") + 1] == "2" and args[args.index("--shm-size") + 1] == "64m"
    assert f"{workdir}:/testbed:rw" in args
    assert args[-4:] == ["--entrypoint", "sleep", "swebench/sweb.eval.x86_64.x:latest", "infinity"]
    assert args[args.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    exec_args = box.exec_args()
    assert exec_args[1:] == ["exec", "--interactive", "--workdir", "/testbed", box.container]
    assert box.launch_argv()[: len(exec_args)] == exec_args
    assert "kill -KILL -1" not in box.launch_argv()[-1]


def _docker_image_at_hand(image: str) -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "image", "inspect", image], check=False, capture_output=True, timeout=20
    )
    return probe.returncode == 0


DOCKER_TEST_IMAGE = os.environ.get("REPAIRRL_TEST_DOCKER_IMAGE", "debian:bookworm-slim")
APPTAINER_TEST_IMAGE = os.environ.get("REPAIRRL_TEST_APPTAINER_IMAGE")


@pytest.mark.skipif(
    not _docker_image_at_hand(DOCKER_TEST_IMAGE), reason="no docker daemon with the test image"
)
def test_docker_sandbox_runs_commands_for_real(workdir):
    with DockerSandbox(workdir, DOCKER_TEST_IMAGE, SandboxLimits(command_timeout_s=30)) as box:
        assert box.run("pwd").output == "/testbed\n"
        assert box.run("echo hi > made.txt").exit_code == 0
        assert (workdir / "made.txt").read_text() == "hi\n"
        assert box.run("sleep 100", timeout_s=1).timed_out
        assert box.run("echo ok").output == "ok\n"


@pytest.mark.skipif(
    shutil.which("apptainer") is None or not APPTAINER_TEST_IMAGE,
    reason="apptainer and REPAIRRL_TEST_APPTAINER_IMAGE are needed",
)
def test_apptainer_sandbox_runs_commands_for_real(workdir):
    with ApptainerSandbox(workdir, APPTAINER_TEST_IMAGE, SandboxLimits(command_timeout_s=60)) as box:
        assert box.run("pwd").output == "/testbed\n"
        assert box.run("echo hi > made.txt").exit_code == 0
        assert (workdir / "made.txt").read_text() == "hi\n"
        assert box.run("echo ok").output == "ok\n"
