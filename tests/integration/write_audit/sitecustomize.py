"""Loaded at start-up by every Python process whose PYTHONPATH holds this folder
(tests/integration/test_distributed.py). In a process launched as a non-zero rank (RANK set and
not 0) it records, through Python's audit hooks, every write-like operation on a path under
$TPL_AUDIT_ROOT into $TPL_AUDIT_LOG.<rank>; the file exists from start-up, so an empty one shows
the hook ran and saw nothing. Writes by native code (C/C++/Rust libraries) raise no audit events.
"""

import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITE_EVENTS = {
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "os.symlink",
    "os.link",
    "os.chmod",
    "shutil.copyfile",
    "shutil.copytree",
    "shutil.move",
    "shutil.rmtree",
    "sqlite3.connect",  # any use of a database file in the workspace (the MLflow store)
}


def _install(root: str, log_path: str) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def under_root(path: object) -> str | None:
        if isinstance(path, int) or not isinstance(path, str | bytes | os.PathLike):
            return None
        resolved = os.path.realpath(os.fsdecode(path))
        return resolved if resolved == root or resolved.startswith(root + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            paths = [args[0]] if args[2] & _WRITE_FLAGS else []
        elif event in _WRITE_EVENTS:
            paths = list(args)
        else:
            return
        for path in paths:
            if (hit := under_root(path)) is not None:
                os.write(log, f"{event} {hit}\n".encode())

    sys.addaudithook(hook)


if os.environ.get("RANK", "0") != "0" and "TPL_AUDIT_ROOT" in os.environ:
    _install(
        os.path.realpath(os.environ["TPL_AUDIT_ROOT"]),
        f"{os.environ['TPL_AUDIT_LOG']}.{os.environ['RANK']}",
    )
