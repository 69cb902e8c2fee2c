"""Sandboxes: one interface (`Sandbox`), four backends, picked by name with `make_sandbox`.

bwrap         bubblewrap on the host's tools; the local and CI default
apptainer     a container image on SLURM clusters (no daemon, no root)
docker        a container image where a docker daemon is at hand
unsafe-local  no confinement, for debugging only; needs unsafe=True
"""

from __future__ import annotations

import os
from typing import Any

from repairrl.sandbox.base import (
    CommandResult,
    Sandbox,
    SandboxError,
    SandboxLimitError,
    SandboxLimits,
    SandboxStartError,
    SandboxUnavailableError,
    UnknownBackendError,
    UnsafeSandboxError,
)

BACKENDS = ("bwrap", "apptainer", "docker", "unsafe-local")

__all__ = [
    "BACKENDS",
    "CommandResult",
    "Sandbox",
    "SandboxError",
    "SandboxLimitError",
    "SandboxLimits",
    "SandboxStartError",
    "SandboxUnavailableError",
    "UnknownBackendError",
    "UnsafeSandboxError",
    "make_sandbox",
    "task_sandbox",
]


def make_sandbox(
    backend: str,
    workdir: str | os.PathLike,
    limits: SandboxLimits | None = None,
    image: str | None = None,
    unsafe: bool = False,
    **kw: Any,
) -> Sandbox:
    """A sandbox of `backend` on `workdir`; `kw` goes to the backend (mount_point, extra_ro_binds, env, ...).

    Nothing is started until the sandbox is entered (`with make_sandbox(...) as sandbox:`) or first run.
    """
    if backend == "bwrap":
        from repairrl.sandbox.bwrap import BwrapSandbox

        return BwrapSandbox(workdir, limits, **kw)
    if backend in ("apptainer", "docker"):
        if not image:
            raise SandboxError(f"the {backend} backend needs an image (pass image=...)")
        from repairrl.sandbox.container import ApptainerSandbox, DockerSandbox

        backend_class = ApptainerSandbox if backend == "apptainer" else DockerSandbox
        return backend_class(workdir, image, limits, **kw)
    if backend == "unsafe-local":
        from repairrl.sandbox.local import UnsafeLocalSandbox

        return UnsafeLocalSandbox(workdir, limits, unsafe=unsafe, **kw)
    raise UnknownBackendError(f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def task_sandbox(
    backend: str, workdir: str | os.PathLike, task: Any, limits: SandboxLimits | None = None, unsafe: bool = False
) -> Sandbox:
    """The sandbox a task's episode runs in: the task's own image under a container backend, and bwrap for a task
    that has no image (GitBug-Java's bugs, the mini benchmark), whose tests run on the host's tools."""
    if backend in ("apptainer", "docker") and not task.image:
        backend = "bwrap"
    return make_sandbox(backend, workdir, limits=limits, image=task.image, unsafe=unsafe)
