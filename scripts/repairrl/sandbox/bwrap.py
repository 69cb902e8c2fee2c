"""Bubblewrap: the local and CI backend. One sandboxed bash per episode, fed commands over a pipe.

What the sandbox sees: the host's /usr (and the /bin, /lib* that point into it) read-only, an allow-list of /etc
(no passwd of the host, no credentials), the Python that runs repairrl, a private /tmp and home, and the working
copy read-write at the mount point. Nothing else of the host: no /root, /home, /work, /sys, no network, no host
environment variables. The sandbox user is uid 1000, so files it writes belong to the host user who started it.

Limits: wall time per command from the host (the whole sandbox is killed and restarted); the totals of the whole
sandbox with its own cgroups where the host lets us make them (v1 or delegated v2): processes (pids), memory
without swap (memory; an OOM kill is reported in the command's output) and CPU time (cpu quota). Where a cgroup
cannot be made a warning names the limit that does not hold, and only per-process layers remain: ulimit -v
(address space), ulimit -u (which binds only a non-root host user: root is exempt from RLIMIT_NPROC
even inside a user namespace). File size with ulimit -f; /dev is read-only but for a small /dev/shm; the working
copy's size is checked by `PipedShellSandbox`.

What a command can still learn of the host: /proc/self/mountinfo names the host paths of the bind mounts (the
working copy, the Python prefix). A bind mount shows its source's path within its file system and bwrap cannot
change that; the working copy's host path should therefore say nothing about the task.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from repairrl.sandbox.base import (
    PipedShellSandbox,
    SandboxLimits,
    SandboxUnavailableError,
    driver_script,
)
from repairrl.scratch import make_scratch

SANDBOX_UID = 1000
SANDBOX_HOME = "/home/agent"
# /etc entries a toolchain needs: the dynamic linker, Java's alternatives and config, TLS roots, name-service
# files that work offline. Left out on purpose: passwd/shadow (replaced), gitconfig and pip.conf (credential
# helpers, private indexes), ssh, resolv.conf (no network anyway).
ETC_ALLOWLIST = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "host.conf",
    "hosts",
    "java-8-openjdk",
    "java-11-openjdk",
    "java-17-openjdk",
    "java-21-openjdk",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "magic",
    "magic.mime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "protocols",
    "python3",
    f"python3.{sys.version_info.minor}",
    "services",
    "ssl",
    "terminfo",
    "timezone",
)
TOP_LEVEL_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@functools.cache
def bwrap_supports(option: str, bwrap: str = "bwrap") -> bool:
    try:
        completed = subprocess.run([bwrap, "--help"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in completed.stdout


def python_prefixes() -> list[str]:
    """The prefixes of the Python running repairrl (venv and its base), so `python -m pytest` works inside."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return sorted(p for p in prefixes if not p.startswith("/usr/") and p != "/usr" and os.path.isdir(p))


CGROUP_LIMITS = ("pids", "memory", "cpu")  # the controllers that carry a limit of SandboxLimits
CGROUP_LIMIT_NAMES = {"pids": "process count", "memory": "total memory", "cpu": "CPU time"}
CPU_PERIOD_US = 100_000


def _unescape_mountinfo(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def own_cgroups(
    membership: str | None = None, mountinfo: str | None = None
) -> tuple[dict[str, Path], Path | None]:
    """Our process's cgroup directories: by controller in the v1 hierarchies, and the v2 one (None if none).

    Read from /proc/self/cgroup and the cgroup mounts of /proc/self/mountinfo (or the texts given), so that
    hierarchies mounted elsewhere than /sys/fs/cgroup/<name> (co-mounted `cpu,cpuacct`, a container's cgroup
    namespace) are found.
    """
    try:
        membership = Path("/proc/self/cgroup").read_text() if membership is None else membership
        mountinfo = Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo
    except OSError:
        return {}, None
    mounts = mountinfo.splitlines()
    v1_mounts: dict[str, tuple[str, str]] = {}  # controller -> (mount root in the hierarchy, mount point)
    v2_mount: tuple[str, str] | None = None
    for line in mounts:
        fields = line.split()
        if "-" not in fields:
            continue
        tail = fields[fields.index("-") + 1 :]
        if len(tail) < 3:
            continue
        root, point = _unescape_mountinfo(fields[3]), _unescape_mountinfo(fields[4])
        if tail[0] == "cgroup2" and v2_mount is None:
            v2_mount = (root, point)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                v1_mounts.setdefault(option, (root, point))

    def under(mount: tuple[str, str], path: str) -> Path | None:
        root, point = mount
        relative = os.path.relpath(path, root)
        if relative.startswith(".."):  # our cgroup is outside what is mounted here
            return None
        return Path(os.path.normpath(os.path.join(point, relative)))

    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in membership.splitlines():
        if line.count(":") < 2:
            continue
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            v2 = under(v2_mount, path) if v2_mount else None
            continue
        for controller in controllers.split(","):
            if controller in v1_mounts:
                directory = under(v1_mounts[controller], path)
                if directory is not None and directory.is_dir():
                    v1[controller] = directory
    return v1, v2


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _v2_parent(wanted: set[str]) -> tuple[Path | None, set[str]]:
    """Where a v2 child cgroup with the most of `wanted` can be made: our cgroup if it delegates them to children,
    else its parent (a sibling of the leaf we run in: the layout of a systemd user service's app.slice and of
    Slurm's job_N/step_N/user/task_N), enabling the controllers in subtree_control where we may."""
    _, own = own_cgroups()
    if own is None or not wanted:
        return None, set()
    best: tuple[Path | None, set[str]] = (None, set())
    for candidate in (own, own.parent):
        # Moving our launcher into a child of `candidate` needs write access to the common ancestor's procs.
        if not os.access(candidate, os.W_OK) or not os.access(candidate / "cgroup.procs", os.W_OK):
            continue
        available = set(_read_words(candidate / "cgroup.controllers")) & wanted
        enabled = set(_read_words(candidate / "cgroup.subtree_control"))
        missing = available - enabled
        if missing:  # fails (EBUSY) where the candidate itself holds processes; then it stays as it is
            try:
                (candidate / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(missing)))
            except OSError:
                pass
            enabled = set(_read_words(candidate / "cgroup.subtree_control"))
        usable = enabled & wanted
        if len(usable) > len(best[1]) or best[0] is None:
            best = (candidate, usable)
    return best


class SandboxCgroup:
    """The cgroup(s) of one sandbox: its processes' count (pids), memory without swap (memory) and CPU time
    (cpu), each a total of the whole sandbox, plus the counters read back (OOM kills, CPU time used).

    cgroup v1 has one directory per hierarchy (pids, memory, cpu, and cpuacct to count CPU time where it is a
    hierarchy of its own); v2 one directory in which the controllers delegated to us are enabled. `create` makes
    whatever the host allows, and says which limits it could not make; the launcher joins every directory
    (`join_argv`) before bwrap forks.
    """

    def __init__(self, limits: SandboxLimits):
        self.limits = limits
        self.dirs: dict[str, Path] = {}  # controller -> the sandbox's cgroup directory holding it
        self.v2_dir: Path | None = None
        self.unenforced: list[str] = []  # the limits (CGROUP_LIMITS) no cgroup holds
        self._oom_fd: int | None = None  # the OOM counter, kept open: a pread costs a twentieth of a read

    def wanted(self) -> list[str]:
        limits = self.limits
        wanted = {"pids": limits.max_processes > 0, "memory": limits.memory_mb > 0, "cpu": limits.cpus > 0}
        return [c for c in CGROUP_LIMITS if wanted[c]]

    def create(self) -> set[str]:
        """Make the cgroups; returns the controllers whose limit holds (the others are in `unenforced`)."""
        wanted = self.wanted()
        name = f"repairrl-sandbox-{os.getpid()}-{os.urandom(4).hex()}"
        v1, _ = own_cgroups()
        made: dict[Path, Path] = {}  # parent -> child, one per v1 hierarchy (co-mounted controllers share it)
        for controller in [*wanted, "cpuacct"]:
            parent = v1.get(controller)
            if parent is None or not os.access(parent, os.W_OK):
                continue
            child = made.get(parent) or parent / name
            try:
                child.mkdir(exist_ok=child in made.values())
                if controller != "cpuacct":
                    self._write_limit(child, controller, v2=False)
            except OSError:
                if child not in made.values():
                    self._rmdir(child)
                continue
            made[parent] = child
            self.dirs[controller] = child
        # What no v1 hierarchy holds (all of it on a v2-only host) goes into one v2 cgroup, if one can be made.
        parent, usable = _v2_parent({c for c in wanted if c not in self.dirs})
        if parent is not None and usable:
            try:
                (parent / name).mkdir()
                self.v2_dir = parent / name
            except OSError:
                usable = set()
            for controller in sorted(usable):
                try:
                    self._write_limit(self.v2_dir, controller, v2=True)
                except OSError:
                    continue
                self.dirs[controller] = self.v2_dir
        self.unenforced = [c for c in wanted if c not in self.dirs]
        if "memory" in self.dirs:
            events = "memory.events" if self.dirs["memory"] == self.v2_dir else "memory.oom_control"
            try:
                self._oom_fd = os.open(self.dirs["memory"] / events, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._oom_fd = None
        return {c for c in wanted if c in self.dirs}

    def _write_limit(self, directory: Path, controller: str, v2: bool) -> None:
        limits = self.limits
        if controller == "pids":
            (directory / "pids.max").write_text(str(limits.max_processes))
        elif controller == "memory":
            memory = str(limits.memory_mb * 1024 * 1024)
            if v2:
                (directory / "memory.max").write_text(memory)
                self._write_if_present(directory / "memory.swap.max", "0")
            else:
                (directory / "memory.limit_in_bytes").write_text(memory)
                self._write_if_present(directory / "memory.memsw.limit_in_bytes", memory)
        elif controller == "cpu":
            quota = max(int(limits.cpus * CPU_PERIOD_US), 1000)
            if v2:
                (directory / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            else:
                (directory / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (directory / "cpu.cfs_quota_us").write_text(str(quota))

    @staticmethod
    def _write_if_present(path: Path, value: str) -> None:
        """Swap limits exist only with swap accounting; without it there is no swap to limit either."""
        if path.exists():
            path.write_text(value)

    @property
    def directories(self) -> list[Path]:
        return list(dict.fromkeys([*self.dirs.values(), *([self.v2_dir] if self.v2_dir else [])]))

    def join_argv(self, argv: list[str]) -> list[str]:
        """`argv`, started by a shell that first moves itself into every directory, so that no process of the
        sandbox is ever outside them; if a move fails the sandbox does not start (exit status 95)."""
        if not self.directories:
            return argv
        procs = [str(d / "cgroup.procs") for d in self.directories]
        script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 95; shift; done; shift; exec "$@"'
        return ["/bin/sh", "-c", script, "join-cgroups", *procs, "--", *argv]

    def oom_kills(self) -> int:
        """Processes the kernel killed for the sandbox's memory limit, since the cgroup was made."""
        if self._oom_fd is None:
            return 0
        try:
            words = os.pread(self._oom_fd, 4096, 0).split()
        except OSError:
            return 0
        for key, value in zip(words[::2], words[1::2], strict=False):
            if key == b"oom_kill":
                return int(value)
        return 0

    def cpu_usage_s(self) -> float | None:
        """CPU time the sandbox's processes used (user and system), None where no cgroup counts it."""
        if "cpuacct" in self.dirs:
            words = _read_words(self.dirs["cpuacct"] / "cpuacct.usage")
            return int(words[0]) / 1e9 if words else None
        if self.v2_dir is not None:
            words = _read_words(self.v2_dir / "cpu.stat")
            for key, value in zip(words[::2], words[1::2], strict=False):
                if key == "usage_usec":
                    return int(value) / 1e6
        return None

    def kill_all(self) -> None:
        for directory in self.directories:
            for _ in range(50):
                pids = [int(p) for p in _read_words(directory / "cgroup.procs")]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)

    @staticmethod
    def _rmdir(path: Path) -> None:
        for _ in range(100):
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # still busy while the last processes are reaped
                time.sleep(0.01)

    def remove(self) -> None:
        if self._oom_fd is not None:
            os.close(self._oom_fd)
            self._oom_fd = None
        self.kill_all()
        for directory in self.directories:
            self._rmdir(directory)
        self.dirs, self.v2_dir = {}, None


_WARNED: set[str] = set()


def warn_unenforced_limits(controllers: list[str], limits: SandboxLimits) -> None:
    """One warning per process and message (not one per sandbox: an RL run starts thousands); the sandbox runs
    on with what holds without cgroups."""
    fallbacks = {
        "pids": "ulimit -u only, which does not bind root" if os.geteuid() == 0 else "ulimit -u, per user",
        "memory": f"ulimit -v of {limits.memory_mb} MB per process only",
        "cpu": "not limited at all",
    }
    detail = "; ".join(f"{CGROUP_LIMIT_NAMES[c]}: {fallbacks[c]}" for c in controllers)
    message = (
        f"no {'/'.join(controllers)} cgroup could be made here, so these sandbox totals are not enforced ({detail}); "
        "delegate the controllers (cgroup v2: systemd Delegate=yes, Slurm's cgroup plugin) or run as root with "
        "cgroup v1"
    )
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


class BwrapSandbox(PipedShellSandbox):
    """A bubblewrap sandbox on `workdir`, mounted read-write at `mount_point` and used as every command's cwd."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        limits: SandboxLimits | None = None,
        mount_point: str = "/repo",
        extra_ro_binds: Sequence[str | os.PathLike] = (),
        env: Mapping[str, str] | None = None,
        bwrap: str = "bwrap",
        use_cgroup: bool = True,
    ):
        super().__init__(workdir, limits, mount_point)
        if not mount_point.startswith("/") or mount_point in ("/", "/usr", "/etc", "/tmp", "/proc", "/dev"):
            raise ValueError(f"mount point {mount_point!r} must be a fresh absolute path such as /repo")
        self.bwrap = shutil.which(bwrap) or bwrap
        self.extra_ro_binds = [str(Path(p).resolve()) for p in extra_ro_binds]
        self.env = dict(env or {})
        self.use_cgroup = use_cgroup
        self.cgroup: SandboxCgroup | None = None  # the running shell's cgroups; a fresh one for each start
        self._oom_kills_seen = 0
        self._identity_dir: str | None = None

    def sandbox_env(self) -> dict[str, str]:
        bound = python_prefixes()
        python_bins = [
            os.path.join(p, "bin") for p in dict.fromkeys([sys.prefix, sys.base_prefix]) if p in bound
        ]
        return {
            "PATH": ":".join(dict.fromkeys([*python_bins, "/usr/local/bin", "/usr/bin", "/bin"])),
            "HOME": SANDBOX_HOME,
            "USER": "agent",
            "LOGNAME": "agent",
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "TERM": "dumb",
            **self.env,
        }

    def bwrap_args(self, identity_dir: str) -> list[str]:
        """The bwrap options, without the program; a pure function of the configuration (tested as such)."""
        tmp_bytes = str(self.limits.tmp_size_mb * 1024 * 1024)
        args = [
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
        ]
        if bwrap_supports("--disable-userns", self.bwrap):
            args.append("--disable-userns")  # no nested user namespaces: a smaller kernel surface
        args += ["--ro-bind", "/usr", "/usr"]
        for top in TOP_LEVEL_SYSTEM_DIRS:
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        # bwrap's /dev is a tmpfs as large as half the RAM (its --size applies to --tmpfs only): a small tmpfs on
        # /dev/shm is the one writable place in it, and the rest is made read-only (device nodes stay usable).
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += [
            "--size",
            str(self.limits.shm_size_mb * 1024 * 1024),
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev",
        ]
        args += ["--dir", "/etc"]
        for name in ETC_ALLOWLIST:
            if os.path.exists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        args += ["--ro-bind", f"{identity_dir}/passwd", "/etc/passwd"]
        args += ["--ro-bind", f"{identity_dir}/group", "/etc/group"]
        # The scratch file systems come before the binds, which may lie below them (a git store under /tmp).
        args += ["--size", tmp_bytes, "--tmpfs", "/tmp"]
        args += ["--size", tmp_bytes, "--tmpfs", "/home", "--dir", SANDBOX_HOME]
        for prefix in python_prefixes():
            args += ["--ro-bind", prefix, prefix]
        for path in self.extra_ro_binds:
            args += ["--ro-bind", path, path]
        args += ["--bind", str(self.workdir), self.mount_point, "--chdir", self.mount_point]
        # The root itself is bwrap's scratch tmpfs: read-only, so nothing can be written outside /tmp, the home
        # and the working copy.
        args += ["--remount-ro", "/", "--clearenv"]
        for key, value in self.sandbox_env().items():
            args += ["--setenv", key, value]
        return args

    def launch_argv(self) -> list[str]:
        # ulimit -u only binds a non-root host user; for root the pids cgroup is what holds.
        driver = driver_script(self.mount_point, self.limits, limit_processes=True, kill_leftovers=True)
        argv = [*self.bwrap_args(self._identity_dir or "/nonexistent"), "/bin/bash", "--noprofile", "--norc"]
        argv += ["-c", driver]
        return self.cgroup.join_argv(argv) if self.cgroup is not None else argv

    def prepare(self) -> None:
        if shutil.which(self.bwrap) is None:
            raise SandboxUnavailableError(
                f"bubblewrap ({self.bwrap}) is not installed; install it (apt-get install bubblewrap) or choose "
                "the apptainer or docker backend"
            )
        if self._identity_dir is None:
            # Named by pid: a killed run's folder is removed by the next sandbox's start.
            self._identity_dir = str(make_scratch("repairrl-sandbox-"))
            Path(self._identity_dir, "passwd").write_text(
                f"agent:x:{SANDBOX_UID}:{SANDBOX_UID}:agent:{SANDBOX_HOME}:/bin/bash\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            )
            Path(self._identity_dir, "group").write_text(f"agent:x:{SANDBOX_UID}:\nnogroup:x:65534:\n")
        self.cgroup, self._oom_kills_seen = None, 0
        if self.use_cgroup:
            self.cgroup = SandboxCgroup(self.limits)
            self.cgroup.create()
            if self.cgroup.unenforced:
                warn_unenforced_limits(self.cgroup.unenforced, self.limits)

    def teardown(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def limit_notices(self) -> list[str]:
        if self.cgroup is None:
            return []
        kills = self.cgroup.oom_kills()  # one small file read per command, only where a memory cgroup exists
        if kills == self._oom_kills_seen:
            return []
        self._oom_kills_seen = kills
        return [f"[killed: the sandbox's memory limit of {self.limits.memory_mb} MB was reached]"]

    def close(self) -> None:
        super().close()
        if self._identity_dir is not None:
            shutil.rmtree(self._identity_dir, ignore_errors=True)
            self._identity_dir = None

    def describe_start_failure(self, output: str) -> str:
        return (
            f"the bubblewrap sandbox on {self.workdir} did not start: {output.strip() or 'no output'}\n"
            "bwrap needs unprivileged user namespaces: check `sysctl kernel.unprivileged_userns_clone` and, on "
            "Ubuntu 24.04+, `kernel.apparmor_restrict_unprivileged_userns`; or choose the apptainer or docker "
            "backend"
        )
