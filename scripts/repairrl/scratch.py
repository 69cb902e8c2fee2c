"""Scratch folders that a killed process does not leave behind for good.

Each folder's name carries the pid of the process that made it; making a new one first removes the folders of
the same kind whose process is gone (killed by SLURM, by a timeout, by the user). Normal exits remove their own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_orphans(prefix: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Remove `<root>/<prefix><pid>-*` folders whose process is no longer running; returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for path in root.glob(f"{prefix}*-*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def make_scratch(prefix: str, root: str | os.PathLike | None = None) -> Path:
    """A fresh folder `<root>/<prefix><pid>-<random>`, after clearing the orphans of killed processes."""
    remove_orphans(prefix, root)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
