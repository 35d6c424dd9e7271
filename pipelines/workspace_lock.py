"""One run per workspace: `tpl run`, `tpl stage` (so each stage of `dvc repro`) and the
deployment's flow runs each hold `.tpl.lock` at the project root while they work, so two runs
never rewrite the same data, checkpoints and dvc.lock at once.

The lock is an `fcntl.flock` on the open file, which the kernel releases when its holder exits,
however it exits: a lock whose holder was killed is free again, and the next run takes it over
with a warning naming the holder. The file's content (JSON: pid, host, start time, command and a
token) only names the holder in the refusal and in that warning.

Processes the holder starts itself (torchrun's `tpl stage`, a flow inside `tpl run`) inherit its
token in `TPL_WORKSPACE_LOCK` and work under its lock instead of being refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".tpl.lock"
TOKEN_VARIABLE = "TPL_WORKSPACE_LOCK"
# A holder writes its content just after taking the lock: how long a refused run waits to read it.
HOLDER_WRITE_GRACE_SECONDS = 2.0


class WorkspaceBusy(RuntimeError):
    """Another run holds the workspace; the message names it."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: str  # ISO 8601, UTC
    command: str
    token: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"


def _read_holder(descriptor: int) -> Holder | None:
    content = os.pread(descriptor, 1 << 16, 0)
    try:
        return Holder(**json.loads(content))
    except (ValueError, TypeError):  # empty (released, or not written yet) or not a holder
        return None


def _wait_for_holder(descriptor: int) -> Holder | None:
    deadline = time.monotonic() + HOLDER_WRITE_GRACE_SECONDS
    while (holder := _read_holder(descriptor)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return holder


def _running_here(holder: Holder) -> bool:
    """False only when the holder is a process of this host that has ended."""
    if holder.host != socket.gethostname():
        return True  # another machine's process: no way to tell from here
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(path: Path, command: str) -> tuple[int, Holder] | None:
    """The locked descriptor of `path` and the holder written into it, or None when this
    process runs under its holder's lock (the holder's token in the environment)."""
    for _ in range(2):  # the second time after breaking a lock its dead holder left behind
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(descriptor):
            holder = _wait_for_holder(descriptor)
            os.close(descriptor)
            if holder is not None and holder.token == os.environ.get(TOKEN_VARIABLE):
                return None
            if holder is not None and not _running_here(holder):
                # Its pid is gone, yet the lock is held: a process it forked kept the file open.
                log.warning(
                    "%s: its holder (%s) has ended; breaking the lock a process it started "
                    "still holds",
                    path.resolve(),
                    holder.describe(),
                )
                path.unlink(missing_ok=True)
                continue
            raise WorkspaceBusy(
                f"workspace {path.resolve().parent} is in use by "
                f"{holder.describe() if holder else 'another process (no holder recorded)'}. "
                f"Wait for it to finish or stop it (the lock, {path.name}, is released when "
                "its holder exits)"
            )
        if stale := _read_holder(descriptor):
            log.warning(
                "%s: taking over the lock of %s, which ended without releasing it",
                path.resolve(),
                stale.describe(),
            )
        holder = Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            command=command,
            token=uuid.uuid4().hex,
        )
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(asdict(holder)).encode(), 0)
        os.fsync(descriptor)
        return descriptor, holder
    raise WorkspaceBusy(f"{path.resolve()}: could not take the lock a dead holder left behind")


@contextmanager
def workspace_lock(command: str, root: Path = Path(".")) -> Iterator[None]:
    """Hold the workspace at `root` for the `with` block, or raise `WorkspaceBusy` naming the
    run that holds it. Re-entered (a process under the holder's token), it holds nothing more.

    command: what this process runs, for the message another run gets (`tpl run --profile tiny`).
    """
    path = root / LOCK_FILE
    acquired = _acquire(path, command)
    if acquired is None:
        yield
        return
    descriptor, holder = acquired
    previous_token = os.environ.get(TOKEN_VARIABLE)
    os.environ[TOKEN_VARIABLE] = holder.token
    try:
        yield
    finally:
        if previous_token is None:
            os.environ.pop(TOKEN_VARIABLE, None)
        else:
            os.environ[TOKEN_VARIABLE] = previous_token
        os.ftruncate(descriptor, 0)  # released cleanly: the next holder has nothing to take over
        os.close(descriptor)  # closing the last descriptor releases the flock
