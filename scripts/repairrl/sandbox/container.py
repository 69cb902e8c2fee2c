"""Container backends for machines without bubblewrap: Apptainer on SLURM clusters, Docker elsewhere.

Both keep one shell per episode like the bwrap backend (`PipedShellSandbox`): Apptainer runs `apptainer exec`
once and feeds the shell inside; Docker starts a long-lived container and one `docker exec -i` shell in it. A
timeout kills the whole container (every process of the episode) and the next command starts a fresh one.

A task image (SWE-bench's and SWE-Gym's instance images) holds the repository at /testbed with what its install
built there (compiled extensions, egg-info) and its whole git history, which would show the agent the fix. The
host's working copy (one commit, host-owned git metadata) is bound over /testbed, which hides the image's copy and
its history; before the first start the image's untracked files at /testbed (its build products) are copied
into the working copy and listed in its `.git/info/exclude`, so the environment finds them where it built them
and the final diff, computed on the host, leaves them out (`hydrate_from_image`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from repairrl.sandbox.base import (
    PipedShellSandbox,
    SandboxLimits,
    SandboxStartError,
    SandboxUnavailableError,
    driver_script,
)

# Where SWE-bench's and SWE-Gym's images keep the repository, and where their environments expect it.
TASK_WORKDIR = "/testbed"
# The images' own conda environment first: the agent's shell reads no profile that would activate it.
TASK_PATH = "/opt/miniconda3/envs/testbed/bin:/opt/miniconda3/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_ENV = {"HOME": "/tmp", "LANG": "C.UTF-8", "TERM": "dumb", "TMPDIR": "/tmp", "PATH": TASK_PATH}
HYDRATE_TIMEOUT_S = 600.0
# What to do when a backend's command line client is not installed.
MISSING_CLIENT_HINTS = {
    "apptainer": "on a cluster `module load apptainer`, or choose the bwrap backend",
    "docker": "choose the bwrap or apptainer backend",
}


class HydrationError(SandboxStartError):
    """The image's build products could not be copied into the working copy."""


def build_products_script(image_workdir: str = TASK_WORKDIR) -> str:
    """The shell command, run in the image, that writes to stdout a tar of the files at IMAGE_WORKDIR that its
    git does not track (ignored ones included); an empty tar where there is no such directory or no git."""
    quoted = shlex.quote(image_workdir)
    return (
        f"cd {quoted} 2>/dev/null && git -c safe.directory='*' ls-files -z --others 2>/dev/null > /tmp/.products "
        "|| : > /tmp/.products; tar --null --no-recursion -T /tmp/.products -c -f -"
    )


def exclude_pattern(path: str) -> str:
    """A gitignore line that matches exactly the file PATH (relative to the working copy's root)."""
    escaped = "".join("\\" + char if char in "\\*?[!# " else char for char in path)
    return "/" + escaped


def hydrate_from_image(
    run_in_image: Sequence[str], workdir: str | os.PathLike, timeout_s: float = HYDRATE_TIMEOUT_S
) -> list[str]:
    """Copy the image's build products into WORKDIR, a host working copy no sandbox has touched yet; the paths
    copied, each also appended to WORKDIR/.git/info/exclude.

    RUN_IN_IMAGE is the argv that runs a shell command (appended) in the image, as root, with no network. Files
    the working copy already has (the repository's own, host-made) win over the image's: the agent's baseline is
    the base commit, whatever the image's install changed. The extraction takes regular files, directories and
    links inside the working copy only (tarfile's data filter): the image is trusted, its paths still are checked.
    """
    workdir = Path(workdir)
    git_info = workdir / ".git" / "info"
    copied: list[str] = []
    # A file, not a pipe: a chatty stderr could otherwise fill its pipe while stdout is being read.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [*run_in_image, build_products_script()], stdout=subprocess.PIPE, stderr=errors
        )
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
                for member in archive:
                    name = member.name.removeprefix("./")
                    if (
                        not name
                        or name == ".git"
                        or name.startswith(".git/")
                        or os.path.lexists(workdir / name)
                    ):
                        continue
                    member.name = name
                    try:
                        archive.extract(member, workdir, filter="data")
                    except tarfile.FilterError:
                        continue  # it would land outside the working copy (through one of its links): left out
                    if not member.isdir():
                        copied.append(name)
            process.wait(timeout=timeout_s)
        except (tarfile.TarError, OSError, subprocess.TimeoutExpired) as error:
            process.kill()
            process.wait()
            raise HydrationError(f"copying the image's files into {workdir} failed: {error}") from error
        errors.seek(0)
        stderr = errors.read().decode("utf-8", errors="replace")
    if process.returncode != 0:
        raise HydrationError(
            f"listing the image's files failed (exit {process.returncode}): {stderr.strip()[-2000:]}"
        )
    # No git metadata: not a task's checkout, so no diff to keep the files out of.
    if copied and git_info.parent.is_dir() and not git_info.parent.is_symlink():
        git_info.mkdir(exist_ok=True)
        with open(git_info / "exclude", "a", encoding="utf-8") as exclude:
            exclude.write(
                "# the task image's build products (repairrl.sandbox.container.hydrate_from_image)\n"
            )
            exclude.writelines(exclude_pattern(path) + "\n" for path in copied)
    return copied


# Where pulled images are found (`apptainer pull <dir>/<sif_name(image)> docker://<image>`), unless a caller says:
# compute nodes often reach no registry, and converting an image per episode costs minutes.
SIF_DIR_ENV = "REPAIRRL_SIF_DIR"


def sif_name(image: str) -> str:
    """The file name a pulled image is looked up under: `swebench/sweb.eval...:latest` -> `sweb.eval..._latest.sif`."""
    return image.rsplit("/", 1)[-1].replace(":", "_") + ".sif"


def apptainer_image_ref(image: str, sif_dir: str | os.PathLike | None = None) -> str:
    """A local file (.sif, sandbox directory) or any URI is passed as is; a bare `name:tag` is its pulled SIF under
    SIF_DIR (default: $REPAIRRL_SIF_DIR) where there is one, else the Docker image."""
    if (
        "://" in image
        or image.startswith(("/", "./", "../"))
        or image.endswith(".sif")
        or os.path.exists(image)
    ):
        return image
    sif_dir = sif_dir if sif_dir is not None else os.environ.get(SIF_DIR_ENV)
    if sif_dir and Path(sif_dir, sif_name(image)).is_file():
        return str(Path(sif_dir, sif_name(image)))
    return f"docker://{image}"


class ImageSandbox(PipedShellSandbox):
    """What both container backends share: an image, host paths bound read-only, the shell's environment, and
    the image's build products copied into the working copy before the first start (`hydrate_from_image`)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        image: str,
        limits: SandboxLimits | None = None,
        *,
        backend: str,
        client: str,
        mount_point: str = TASK_WORKDIR,
        extra_ro_binds: Sequence[str | os.PathLike] = (),
        env: Mapping[str, str] | None = None,
        hydrate: bool = True,
    ):
        super().__init__(workdir, limits, mount_point)
        self.backend = backend
        self.image = image
        self.extra_ro_binds = [str(p) for p in extra_ro_binds]
        self.env = {**SANDBOX_ENV, **(env or {})}
        self.client = client
        self.hydrate = hydrate
        self.hydrated: list[str] | None = None

    def image_shell_argv(self) -> list[str]:
        """The argv that runs a shell command (appended) in the image, as root, with nothing bound and no network."""
        raise NotImplementedError

    def prepare(self) -> None:
        if shutil.which(self.client) is None:
            hint = MISSING_CLIENT_HINTS[self.backend]
            raise SandboxUnavailableError(f"{self.backend} is not installed here; {hint}")
        if self.hydrate and self.hydrated is None:
            self.hydrated = hydrate_from_image(self.image_shell_argv(), self.workdir)


class ApptainerSandbox(ImageSandbox):
    """`apptainer exec --containall` of `image`, the working copy bound read-write at `mount_point`."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        image: str,
        limits: SandboxLimits | None = None,
        *,
        network: bool = False,
        cgroups: bool = False,
        apptainer: str | None = None,
        sif_dir: str | os.PathLike | None = None,
        **options: Any,
    ):
        """`options`: ImageSandbox's (mount_point, extra_ro_binds, env, hydrate)."""
        if not image:
            raise ValueError("the apptainer backend needs an image (a .sif file or docker://name:tag)")
        client = apptainer or shutil.which("apptainer") or shutil.which("singularity") or "apptainer"
        image = apptainer_image_ref(image, sif_dir)
        super().__init__(workdir, image, limits, backend="apptainer", client=client, **options)
        # `--network none` needs a network namespace; Apptainer allows it unprivileged only where the site's
        # apptainer.conf does ("allow net networks = none"); pass network=True to keep the host's instead.
        self.network = network
        # --pids-limit/--memory/--cpus need cgroups v2 with systemd delegation (or root); without them the process
        # count is bounded only by the timeout, memory by ulimit -v per process, CPU time not at all.
        self.cgroups = cgroups

    def apptainer_args(self) -> list[str]:
        args = [
            self.client,
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

    def image_shell_argv(self) -> list[str]:
        """`apptainer exec` of a shell command in the image with nothing bound: what hydration runs."""
        args = [self.client, "exec", "--containall", "--cleanenv", "--no-home"]
        if not self.network:
            args += ["--net", "--network", "none"]
        return [*args, self.image, "/bin/sh", "-c"]

    def launch_argv(self) -> list[str]:
        # No ulimit -u: without a user namespace it would count every process of the cluster user on the node.
        # --containall gives the container its own PID namespace, so sweeping leftovers touches nothing else.
        driver = driver_script(self.mount_point, self.limits, limit_processes=False, kill_leftovers=True)
        return [*self.apptainer_args(), "bash", "--noprofile", "--norc", "-c", driver]

    def describe_start_failure(self, output: str) -> str:
        return (
            f"apptainer could not start {self.image} on {self.workdir}: {output.strip() or 'no output'}\n"
            "if the message is about networking, the site does not allow `--network none`: pass network=True"
        )


class DockerSandbox(ImageSandbox):
    """A long-lived `docker run` container of `image` with the working copy bound; commands go to one
    `docker exec -i` shell in it."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        image: str,
        limits: SandboxLimits | None = None,
        *,
        user: str | None = None,
        docker: str | None = None,
        **options: Any,
    ):
        """`options`: ImageSandbox's (mount_point, extra_ro_binds, env, hydrate)."""
        if not image:
            raise ValueError("the docker backend needs an image name")
        client = docker or shutil.which("docker") or "docker"
        super().__init__(workdir, image, limits, backend="docker", client=client, **options)
        # The host user by default, so that files written in the working copy stay the user's to delete.
        self.user = user if user is not None else f"{os.getuid()}:{os.getgid()}"
        self.container = f"repairrl-sandbox-{os.getpid()}-{os.urandom(4).hex()}"
        self._container_started = False

    def run_args(self) -> list[str]:
        """`docker run` of the idle container that every command of the episode runs in."""
        limits = self.limits
        args = [
            self.client,
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
            # Writable are only the working copy (its size checked after each command) and the sized tmpfs: the
            # image's own layers cannot grow, which bounds the episode's disk use.
            "--read-only",
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

    def image_shell_argv(self) -> list[str]:
        """A throw-away container of the image, as root and without network, running a shell command."""
        return [self.client, "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "/bin/sh",
                self.image, "-c"]  # fmt: skip

    def exec_args(self) -> list[str]:
        return [self.client, "exec", "--interactive", "--workdir", self.mount_point, self.container]

    def launch_argv(self) -> list[str]:
        # Processes, memory and CPU are the container's limits (--pids-limit, --memory, --cpus). No sweep of
        # leftovers: `kill -1` would also kill the container's idle main process.
        driver = driver_script(self.mount_point, self.limits, limit_processes=False)
        return [*self.exec_args(), "bash", "--noprofile", "--norc", "-c", driver]

    def launch_env(self) -> Mapping[str, str] | None:
        return None  # the docker client needs DOCKER_HOST and friends; nothing of it reaches the container

    def prepare(self) -> None:
        super().prepare()
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
            [self.client, "rm", "--force", self.container], check=False, capture_output=True, timeout=60
        )

    def describe_start_failure(self, output: str) -> str:
        return (
            f"the shell in docker container {self.container} ({self.image}) did not start: {output.strip()}"
        )
