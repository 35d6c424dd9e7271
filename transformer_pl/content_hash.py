"""DVC's content hashes (md5 of a file; `<md5>.dir` of a folder), computed without DVC.

Cache keys, output records and lineage tags all use them, so a hash in a tag can be looked up in
dvc.lock and the DVC cache. Kept free of heavy imports: `tpl run` hashes a workspace before it
imports Prefect or MLflow.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

_HASH_CHUNK_BYTES = 1 << 20


def _file_md5(path: Path) -> str:
    # A run checks the same files several times (a stage's cache key, whether its outputs are
    # intact, whether dvc.lock agrees, the next stage's inputs): hash each version of a file once
    # per process. A version is (inode, size, mtime in ns), as DVC's own state database keys it.
    status = path.stat()
    return _content_md5(str(path.resolve()), status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=65_536)
def _content_md5(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC 3 records in dvc.lock for a file, or for a directory (`<md5>.dir`).

    A directory's hash is the md5 of the JSON list of its files' {md5, relpath}, sorted by
    relpath — DVC's own scheme, so a tag can be looked up in dvc.lock and the DVC cache.
    """
    path = Path(path)
    if not path.is_dir():
        return _file_md5(path)
    entries = [
        {"md5": _file_md5(file), "relpath": file.relative_to(path).as_posix()}
        for file in path.rglob("*")
        # As .dvcignore says: byte-code caches are not inputs.
        if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc"
    ]
    entries.sort(key=lambda entry: entry["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"


def dvc_dep_hashes(deps: Iterable[str | Path], root: str | Path = ".") -> dict[str, str]:
    """{dep path as given: DVC md5} for a stage's inputs, hashed from the files themselves.

    Computed rather than read from dvc.lock: while a stage runs, its dvc.lock entry still holds
    the hashes of the previous run — stale for exactly the inputs that made DVC re-run it.
    """
    return {str(path): dvc_md5(Path(root) / path) for path in deps}
