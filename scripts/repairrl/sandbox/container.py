"""Container backends for machines without bubblewrap: Apptainer on SLURM clusters, Docker elsewhere.

Both keep one shell per episode like the bwrap backend (`PipedShellSandbox`): Apptainer runs `apptainer exec`
once and feeds the shell inside; Docker starts a long-lived container and one `docker exec -i` shell in it. A
timeout kills the whole container (every process of the episode) and the next command starts a fresh one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from repairrl.sandbox.base import (
    PipedShellSandbox,
    SandboxLimits,
    SandboxStartError,
    SandboxUnavailableError,
    driver_script,
)

SANDBOX_ENV = {"HOME": "/tmp", "LANG": "C.UTF-8", "TERM": "dumb", "TMPDIR": "/tmp"}


def apptainer_image_ref(image: str) -> str:
    """A local file (.sif, sandbox directory) or any URI is passed as is; a bare `name:tag` is a Docker image."""
    if (
        "://" in image
        or image.startswith(("/", "./", "../"))
        or image.endswith(".sif")
        or os.path.exists(image)
    ):
        return image
    return f"docker://{image}"


class ApptainerSandbox(PipedShellSandbox):
    """`apptainer exec --containall` of `image`, the working copy bound read-write at `mount_point`."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        image: str,
        limits: SandboxLimits | None = None,
        mount_point: str = "/repo",
        extra_ro_binds: Sequence[str | os.PathLike] = (),
        env: Mapping[str, str] | None = None,
        network: bool = False,
        cgroups: bool = False,
        apptainer: str | None = None,
    ):
        super().__init__(workdir, limits, mount_point)
        if not image:
            raise ValueError("the apptainer backend needs an image (a .sif file or docker://name:tag)")
        self.image = apptainer_image_ref(image)
        self.extra_ro_binds = [str(p) for p in extra_ro_binds]
        self.env = {**SANDBOX_ENV, **(env or {})}
        # `--network none` needs a network namespace; Apptainer allows it unprivileged only where the site's
        # apptainer.conf does ("allow net networks = none"); pass network=True to keep the host's instead.
        self.network = network
        # --pids-limit/--memory/--cpus need cgroups v2 with systemd delegation (or root); without them the process
        # count is bounded only by the timeout, memory by ulimit -v per process, CPU time not at all.
        self.cgroups = cgroups
        self.apptainer = apptainer or shutil.which("apptainer") or shutil.which("singularity") or "apptainer"

    def apptainer_args(self) -> list[str]:
        args = [
            self.apptainer,
            "exec",
            "--containall",
            "--cleanenv",
            "--writable-tmpfs",
            "--no-home",
            "--bind",
            f"{self.workdir}:{self.mount_point}",
            "--pwd",
            self.mount_point,
        ]
        for path in self.extra_ro_binds:
            args += ["--bind", f"{path}:{path}:ro"]
        if not self.network:
            args += ["--net", "--network", "none"]
        if self.cgroups:
            args += ["--pids-limit", str(self.limits.max_processes), "--memory", f"{self.limits.memory_mb}M"]
            if self.limits.cpus > 0:
                args += ["--cpus", f"{self.limits.cpus:g}"]
        for key, value in sorted(self.env.items()):
            args += ["--env", f"{key}={value}"]
        return [*args, self.image]

    def launch_argv(self) -> list[str]:
        # No ulimit -u: without a user namespace it would count every process of the cluster user on the node.
        # --containall gives the container its own PID namespace, so sweeping leftovers touches nothing else.
        driver = driver_script(self.mount_point, self.limits, limit_processes=False, kill_leftovers=True)
        return [*self.apptainer_args(), "bash", "--noprofile", "--norc", "-c", driver]

    def prepare(self) -> None:
        if shutil.which(self.apptainer) is None:
            raise SandboxUnavailableError(
                "apptainer is not installed here; on a cluster `module load apptainer`, or choose the bwrap backend"
            )

    def describe_start_failure(self, output: str) -> str:
        return (
            f"apptainer could not start {self.image} on {self.workdir}: {output.strip() or 'no output'}\n"
            "if the message is about networking, the site does not allow `--network none`: pass network=True"
        )


class DockerSandbox(PipedShellSandbox):
    """A long-lived `docker run` container of `image` with the working copy bound; commands go to one
    `docker exec -i` shell in it."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        image: str,
        limits: SandboxLimits | None = None,
        mount_point: str = "/repo",
        extra_ro_binds: Sequence[str | os.PathLike] = (),
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        docker: str | None = None,
    ):
        super().__init__(workdir, limits, mount_point)
        if not image:
            raise ValueError("the docker backend needs an image name")
        self.image = image
        self.extra_ro_binds = [str(p) for p in extra_ro_binds]
        self.env = {**SANDBOX_ENV, **(env or {})}
        # The host user by default, so that files written in the working copy stay the user's to delete.
        self.user = user if user is not None else f"{os.getuid()}:{os.getgid()}"
        self.docker = docker or shutil.which("docker") or "docker"
        self.container = f"repairrl-sandbox-{os.getpid()}-{os.urandom(4).hex()}"
        self._container_started = False

    def run_args(self) -> list[str]:
        """`docker run` of the idle container that every command of the episode runs in."""
        limits = self.limits
        args = [
            self.docker,
            "run",
            "--detach",
            "--rm",
            "--init",
            "--name",
            self.container,
            "--network",
            "none",
            "--pids-limit",
            str(limits.max_processes),
            "--memory",
            f"{limits.memory_mb}m",
            "--memory-swap",
            f"{limits.memory_mb}m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--tmpfs",
            f"/tmp:rw,exec,size={limits.tmp_size_mb}m",
            "--shm-size",
            f"{limits.shm_size_mb}m",
            "--ulimit",
            f"fsize={limits.max_file_size_mb * 1024 * 1024}",
            "--volume",
            f"{self.workdir}:{self.mount_point}:rw",
            "--workdir",
            self.mount_point,
        ]
        if limits.cpus > 0:
            args += ["--cpus", f"{limits.cpus:g}"]
        if self.user:
            args += ["--user", self.user]
        for path in self.extra_ro_binds:
            args += ["--volume", f"{path}:{path}:ro"]
        for key, value in sorted(self.env.items()):
            args += ["--env", f"{key}={value}"]
        return [*args, "--entrypoint", "sleep", self.image, "infinity"]

    def exec_args(self) -> list[str]:
        return [self.docker, "exec", "--interactive", "--workdir", self.mount_point, self.container]

    def launch_argv(self) -> list[str]:
        # Processes, memory and CPU are the container's limits (--pids-limit, --memory, --cpus). No sweep of
        # leftovers: `kill -1` would also kill the container's idle main process.
        driver = driver_script(self.mount_point, self.limits, limit_processes=False)
        return [*self.exec_args(), "bash", "--noprofile", "--norc", "-c", driver]

    def launch_env(self) -> Mapping[str, str] | None:
        return None  # the docker client needs DOCKER_HOST and friends; nothing of it reaches the container

    def prepare(self) -> None:
        if shutil.which(self.docker) is None:
            raise SandboxUnavailableError(
                "docker is not installed here; choose the bwrap or apptainer backend"
            )
        try:
            started = subprocess.run(
                self.run_args(),
                check=False,
                capture_output=True,
                text=True,
                timeout=self.limits.startup_timeout_s,
            )
        except subprocess.TimeoutExpired as error:
            self.teardown()
            raise SandboxStartError(f"docker run of {self.image} took over {error.timeout} s") from error
        self._container_started = started.returncode == 0
        if started.returncode != 0:
            raise SandboxStartError(
                f"docker run of {self.image} failed ({started.returncode}): {started.stderr.strip()}\n"
                f"is the docker daemon running and the image pulled (`docker pull {self.image}`)?"
            )

    def teardown(self) -> None:
        # Removing the container kills every process of the episode, wherever it hid inside.
        if not self._container_started:
            return
        self._container_started = False
        subprocess.run(
            [self.docker, "rm", "--force", self.container], check=False, capture_output=True, timeout=60
        )

    def describe_start_failure(self, output: str) -> str:
        return (
            f"the shell in docker container {self.container} ({self.image}) did not start: {output.strip()}"
        )
