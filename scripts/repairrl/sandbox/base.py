"""The sandbox interface: every backend runs shell commands inside one task's working copy.

Besides the interface, this module holds what the backends share: the output capture that keeps the head and the
tail of a command's output, and `PipedShellSandbox`, one long-lived bash inside the confinement that is fed one
command at a time over a pipe (starting a confinement per command costs several times the command itself).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int | None  # None when the command was killed (timeout, limits)
    output: str  # stdout and stderr interleaved, already truncated to the output limit
    duration_s: float
    timed_out: bool = False
    truncated: bool = False
    output_bytes: int = 0  # what the command wrote, before truncation


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandbox. The hostile party is a model optimised against them, so each is a total of the
    whole sandbox (all its processes together) wherever the backend can make it one. 0 turns off the memory, CPU,
    process, file-size and working-copy limits."""

    command_timeout_s: float = 60.0
    output_limit_bytes: int = 32_000
    # Memory of the whole sandbox (memory cgroup, no swap; the container's memory); also the address space of
    # each process (ulimit -v), a second layer where no memory cgroup can be made.
    memory_mb: int = 4096
    cpus: float = 2.0  # CPU time per wall-clock second of the whole sandbox (1.0 = one core): a cgroup quota
    max_processes: int = 256  # processes and threads of the whole sandbox
    max_file_size_mb: int = 256  # largest file a command may write (ulimit -f)
    # The working copy, checked after each command (and every few seconds of a long one): bytes (the larger of
    # apparent size and disk use) and entries (files, directories, links), the checkout included.
    max_workdir_mb: int = 2048
    max_workdir_files: int = 100_000
    tmp_size_mb: int = 1024  # size of the private /tmp (and home) where the backend makes one
    shm_size_mb: int = 64  # size of /dev/shm; the rest of /dev is read-only where the backend can make it so
    startup_timeout_s: float = 60.0  # how long starting the sandbox (pulling nothing) may take


class Sandbox(Protocol):
    """A shell confined to one working copy. Use as a context manager; `close()` frees its processes."""

    workdir: Path

    def run(self, command: str, timeout_s: float | None = None) -> CommandResult: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...


class SandboxError(RuntimeError):
    """Base of the sandbox errors."""


class SandboxUnavailableError(SandboxError):
    """The backend cannot run on this machine (tool missing, user namespaces disabled, ...)."""


class SandboxLimitError(SandboxError):
    """A total of the episode was reached (the working copy's size): no further command runs in this sandbox.
    The agent loop ends the episode on it; the working copy is left as it is for the caller to remove."""


class SandboxStartError(SandboxError):
    """The sandbox's shell did not come up; the message carries what the backend printed."""


class UnknownBackendError(SandboxError, ValueError):
    """`make_sandbox` was asked for a backend it does not know."""


class UnsafeSandboxError(SandboxError):
    """An unconfined backend was asked for without the explicit opt-in."""


class OutputCapture:
    """Keeps the first and the last bytes of a stream of any length, and counts what it dropped in between."""

    def __init__(self, limit_bytes: int):
        self.head_limit = max(limit_bytes // 2, 0)
        self.tail_limit = max(limit_bytes - self.head_limit, 0)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = memoryview(data)[room:]
        if not data or not self.tail_limit:
            return
        if len(data) >= self.tail_limit:  # a flood: copy only what can end up in the tail
            self.tail = bytearray(data[len(data) - self.tail_limit :])
        else:
            self.tail += data
            # Trim lazily so that a stream of small writes does not move the tail each time.
            if len(self.tail) > 2 * self.tail_limit + 65536:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.head_limit + self.tail_limit

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_limit :]) if self.tail_limit else b""
        if not self.truncated:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", errors="replace")
        dropped = self.total - len(self.head) - len(tail)
        notice = f"\n[... {dropped} bytes truncated ...]\n"
        return (
            bytes(self.head).decode("utf-8", errors="replace")
            + notice
            + tail.decode("utf-8", errors="replace")
        )


def driver_script(
    mount_point: str, limits: SandboxLimits, limit_processes: bool = True, kill_leftovers: bool = False
) -> str:
    """The bash loop that runs inside the sandbox: reads `nonce NUL command NUL`, runs the command in a fresh
    `bash -c` in the working copy with stdin closed, then prints the nonce and the exit code.

    Each command gets a new bash, so `cd` and variables do not carry over (as with `docker exec` or
    `subprocess.run`), and the nonce is never in the command's environment, so a command cannot fake its end.
    With `kill_leftovers` (only inside a PID namespace of its own!) every process the command left behind is
    killed before the next one starts: a forgotten server or a fork bomb cannot outlive its command.
    """
    ulimits = ["ulimit -c 0"]
    if limits.memory_mb > 0:
        ulimits.append(f"ulimit -v {limits.memory_mb * 1024}")
    if limits.max_file_size_mb > 0:
        ulimits.append(f"ulimit -f {limits.max_file_size_mb * 1024}")
    if limit_processes and limits.max_processes > 0:
        ulimits.append(f"ulimit -u {limits.max_processes}")
    quoted_mount = "'" + mount_point.replace("'", "'\\''") + "'"
    # kill -1 signals every process of the namespace but the caller and its init; it succeeds while any is left
    # (zombies included, until init reaps them), hence the bounded loop.
    sweep = (
        ["  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -KILL -1 2>/dev/null || break; done"]
        if kill_leftovers
        else []
    )
    return "\n".join(
        [
            *(f"{line} || exit 96" for line in ulimits),
            f"cd {quoted_mount} || exit 97",
            "printf 'sandbox-ready\\n'",
            "while IFS= read -r -d '' nonce && IFS= read -r -d '' cmd; do",
            '  bash --noprofile --norc -c "$cmd" </dev/null 2>&1',
            "  status=$?",
            *sweep,
            '  printf \'%s %d\\n\' "$nonce" "$status"',
            "done",
        ]
    )


def workdir_usage(root: str | os.PathLike, stop_bytes: int = 0, stop_entries: int = 0) -> tuple[int, int]:
    """Bytes and entries below `root`, without following symlinks; the walk ends early once a stop is passed.

    A file counts with the larger of its apparent size and its disk use, so that neither a sparse file (whose
    diff would read every byte) nor a file with small apparent size hides. Entries that vanish during the walk
    (a command still running) are skipped.
    """
    total_bytes = entries = 0
    pending = [os.fspath(root)]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:
            continue
        with scan:
            for entry in scan:
                entries += 1
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        continue
                    stat = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total_bytes += max(stat.st_size, stat.st_blocks * 512)
            if (stop_bytes and total_bytes > stop_bytes) or (stop_entries and entries > stop_entries):
                break
    return total_bytes, entries


class PipedShellSandbox:
    """A long-lived bash in a confinement, fed commands over a pipe; subclasses say how to start and stop it.

    On a timeout the whole confinement is killed (a stuck command may have children anywhere inside it) and a
    fresh one is started for the next command; since commands share no shell state, all the next command can
    miss is what the killed one left in /tmp.
    """

    READY = b"sandbox-ready\n"
    READ_CHUNK = 1 << 20
    WORKDIR_CHECK_INTERVAL_S = 2.0  # how often the working copy is measured while a long command runs

    def __init__(self, workdir: str | os.PathLike, limits: SandboxLimits | None, mount_point: str):
        self.workdir = Path(workdir).resolve()
        if not self.workdir.is_dir():
            raise SandboxError(f"working copy {self.workdir} does not exist or is not a directory")
        self.limits = limits or SandboxLimits()
        self.mount_point = mount_point
        self.restarts = 0  # fresh shells started after a timeout or a crash
        self._process: subprocess.Popen | None = None
        self._closed = False
        self._limit_reached: str | None = None  # why no command may run any more (SandboxLimitError)
        self._next_workdir_check = float("inf")

    # -- what a backend provides --------------------------------------------------------------------------------

    def launch_argv(self) -> list[str]:
        """The host command line that starts the confined shell running `driver_script`."""
        raise NotImplementedError

    def launch_env(self) -> Mapping[str, str] | None:
        """The environment of the launching command on the host (None: inherit)."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}

    def launch_cwd(self) -> str | None:
        return None

    def prepare(self) -> None:
        """Host-side set-up before each start (cgroups, containers)."""

    def teardown(self) -> None:
        """Host-side clean-up after each stop; must not fail if `prepare` did nothing."""

    def describe_start_failure(self, output: str) -> str:
        return f"{type(self).__name__} on {self.workdir} did not start: {output.strip() or 'no output'}"

    def limit_notices(self) -> list[str]:
        """Limits the last command ran into that its output may not show (an OOM kill); read before any stop."""
        return []

    # -- the working copy's size --------------------------------------------------------------------------------

    @property
    def watches_workdir(self) -> bool:
        return bool(self.limits.max_workdir_mb or self.limits.max_workdir_files)

    def check_workdir(self) -> None:
        """Raise SandboxLimitError (and stop the shell, so nothing goes on writing) once the working copy is over
        its size or entry cap; every later `run` raises it again without running anything.

        A walk of the working copy costs about 4 us an entry (one lstat each; 20 ms for a 5,000-file checkout,
        bench/sandbox_overhead.py), paid after every command: small next to a model's turn, and the only check
        that a sparse file, fallocate or a hard link cannot slip past (a rate bound on writes could not)."""
        if self._limit_reached is None and self.watches_workdir:
            max_bytes = self.limits.max_workdir_mb * 1024 * 1024
            max_entries = self.limits.max_workdir_files
            size, entries = workdir_usage(self.workdir, max_bytes, max_entries)
            if max_bytes and size > max_bytes:
                self._limit_reached = (
                    f"the working copy grew past its cap of {self.limits.max_workdir_mb} MB (over {size // 2**20} "
                    "MB); the episode ends here (raise SandboxLimits.max_workdir_mb if the task needs more)"
                )
            elif max_entries and entries > max_entries:
                self._limit_reached = (
                    f"the working copy grew past its cap of {max_entries} files and directories (over {entries}); "
                    "the episode ends here (raise SandboxLimits.max_workdir_files if the task needs more)"
                )
        if self._limit_reached is not None:
            self._stop()
            raise SandboxLimitError(self._limit_reached)

    # -- the shell session ----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self._closed:
            raise SandboxError(f"{type(self).__name__} on {self.workdir} is closed")
        if self.running:
            return
        self.prepare()
        try:
            self._process = subprocess.Popen(
                self.launch_argv(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.launch_env(),
                cwd=self.launch_cwd(),
                start_new_session=True,  # one process group to kill on the host side
                bufsize=0,
            )
        except OSError as error:
            self.teardown()
            raise SandboxUnavailableError(self.describe_start_failure(str(error))) from error
        try:
            # A bigger pipe means fewer reads when a command floods its output.
            fcntl.fcntl(self._process.stdout.fileno(), fcntl.F_SETPIPE_SZ, self.READ_CHUNK)
        except OSError:
            pass
        seen = bytearray()
        deadline = time.monotonic() + self.limits.startup_timeout_s
        while self.READY not in seen:
            chunk = self._read(deadline)
            if not chunk:  # end of stream or no answer in time
                self._stop()
                raise SandboxStartError(self.describe_start_failure(seen.decode("utf-8", errors="replace")))
            seen += chunk
        # Anything after the ready line is stray output, not part of a command.

    def run(self, command: str, timeout_s: float | None = None) -> CommandResult:
        if "\0" in command:
            raise ValueError("a shell command cannot contain NUL bytes")
        if self._limit_reached is not None:
            raise SandboxLimitError(self._limit_reached)
        timeout_s = self.limits.command_timeout_s if timeout_s is None else timeout_s
        self.start()
        self._drain_stray_output()
        started = time.monotonic()
        deadline = started + timeout_s
        if self.watches_workdir:
            self._next_workdir_check = started + self.WORKDIR_CHECK_INTERVAL_S
        result = self._run(command, started, deadline, timeout_s)
        self.check_workdir()
        return result

    def _run(self, command: str, started: float, deadline: float, timeout_s: float) -> CommandResult:
        nonce = secrets.token_hex(16).encode()
        capture = OutputCapture(self.limits.output_limit_bytes)
        message = memoryview(nonce + b"\0" + command.encode("utf-8", errors="surrogateescape") + b"\0")
        try:
            while message:  # a pipe may take a long command in parts
                message = message[self._process.stdin.write(message) :]
        except OSError:  # BrokenPipeError included: the shell is gone
            return self._crashed(command, capture, started)
        pending = b""  # bytes that may hold the start of the nonce
        while True:
            chunk = self._read_watching(deadline)
            if chunk is None:
                return self._timed_out(command, capture, started, timeout_s, pending)
            if not chunk:
                capture.feed(pending)
                return self._crashed(command, capture, started)
            data = pending + chunk
            found = data.find(nonce)
            if found < 0:
                keep = len(nonce) - 1
                capture.feed(data[:-keep])
                pending = data[-keep:]
                continue
            capture.feed(data[:found])
            status = data[found + len(nonce) :]
            while b"\n" not in status:
                more = self._read_watching(deadline)
                if more is None:
                    return self._timed_out(command, capture, started, timeout_s, b"")
                if not more:
                    return self._crashed(command, capture, started)
                status += more
            exit_code = int(status.split(b"\n", 1)[0])
            return CommandResult(
                command=command,
                exit_code=exit_code,
                output=self._with_notices(capture.text(), self.limit_notices()),
                duration_s=time.monotonic() - started,
                truncated=capture.truncated,
                output_bytes=capture.total,
            )

    def close(self) -> None:
        self._stop()
        self._closed = True

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_process", None) is not None:
            self._stop()

    # -- internals ------------------------------------------------------------------------------------------------

    def _read(self, deadline: float) -> bytes | None:
        """The next bytes of output; b"" at end of stream, None once `deadline` passed."""
        fd = self._process.stdout.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                return os.read(fd, self.READ_CHUNK)

    def _read_watching(self, deadline: float) -> bytes | None:
        """`_read` during a command, measuring the working copy every few seconds: one long command must not be
        able to fill the disk before the check that follows it."""
        while True:
            if time.monotonic() >= self._next_workdir_check:
                self.check_workdir()
                self._next_workdir_check = time.monotonic() + self.WORKDIR_CHECK_INTERVAL_S
            until = min(deadline, self._next_workdir_check)
            chunk = self._read(until)
            if chunk is None and until < deadline:
                continue
            return chunk

    @staticmethod
    def _with_notices(output: str, notices: list[str]) -> str:
        if not notices:
            return output
        return (output + "\n" if output and not output.endswith("\n") else output) + "\n".join(notices)

    def _drain_stray_output(self) -> None:
        """Drop what background processes of earlier commands wrote since, so it is not blamed on this one."""
        fd = self._process.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            if not os.read(fd, self.READ_CHUNK):
                break

    def _timed_out(
        self, command: str, capture: OutputCapture, started: float, timeout_s: float, pending: bytes
    ) -> CommandResult:
        capture.feed(pending)
        notice = f"[command timed out after {timeout_s:g} s and was killed; the next command gets a fresh shell]"
        return self._restarted(command, capture, started, notice, timed_out=True)

    def _crashed(self, command: str, capture: OutputCapture, started: float) -> CommandResult:
        code = self._process.poll() if self._process else None
        notice = f"[the sandbox shell died (exit status {code}); the next command gets a fresh shell]"
        return self._restarted(command, capture, started, notice, timed_out=False)

    def _restarted(
        self, command: str, capture: OutputCapture, started: float, notice: str, timed_out: bool
    ) -> CommandResult:
        """Drop the broken shell (the next command starts a fresh one) and report what was seen, plus why."""
        notices = self.limit_notices()  # before the stop, which removes what the backend reads them from
        self._stop()
        self.restarts += 1
        return CommandResult(
            command=command,
            exit_code=None,
            output=self._with_notices(capture.text(), [*notices, notice]),
            duration_s=time.monotonic() - started,
            timed_out=timed_out,
            truncated=capture.truncated,
            output_bytes=capture.total,
        )

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            process.wait()
        self.teardown()
