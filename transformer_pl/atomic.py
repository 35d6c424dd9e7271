"""Crash-safe state files: written whole or not at all, and a corrupt one moved out of the way.

A process killed while it rewrites a file in place leaves it empty or cut short, and every later
run that reads it fails. `write_text_atomic` writes a temporary file beside the target, flushes
it to disk and renames it over the target (a rename within a folder is atomic), so a reader sees
the old content or the new, never a part. `move_aside` keeps a file that could not be read, under
a name no reader looks for, so that the run can rebuild it and the evidence stays.
"""

from __future__ import annotations

import logging
import os
import stat
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

_NEW_FILE_MODE = 0o666  # narrowed by the umask, as for any file the process creates


def _fsync_folder(folder: Path) -> None:
    # The rename itself reaches the disk only when the folder's entry does.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically, its folder created as needed; an existing
    file keeps its permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if path.exists():
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def move_aside(path: Path, problem: str) -> Path:
    """Rename an unreadable state file to `<name>.corrupt-<timestamp>` with a warning naming it
    and `problem`; returns the new path. The caller then starts over as if it were missing."""
    path = path.absolute()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}-{uuid.uuid4().hex[:6]}")
    try:
        path.rename(aside)
    except FileNotFoundError:  # another process moved it first
        return aside
    log.warning("%s is unreadable (%s): moved aside as %s", path, problem, aside.name)
    return aside
