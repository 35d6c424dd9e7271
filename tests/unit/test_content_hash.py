"""DVC's md5 of files and folders, computed without DVC."""

from __future__ import annotations

import hashlib
import os

from transformer_pl import content_hash
from transformer_pl.content_hash import dvc_dep_hashes, dvc_md5


def test_dvc_md5_matches_dvc(tmp_path):
    # Expected values recorded by `dvc add` (DVC 3.67) on exactly these files.
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"hello\r\nworld\n")  # no dos2unix in DVC 3's md5
    (folder / "sub" / "b.bin").write_bytes(b"x")
    (folder / "empty").write_bytes(b"")
    (tmp_path / "f.txt").write_bytes(b"hello\r\nworld\n")

    assert dvc_md5(tmp_path / "f.txt") == "04153b3135e575c274352238bed301e7"
    assert dvc_md5(folder) == "8b265228d449032f006b6d49cd28fcaf.dir"
    assert dvc_dep_hashes(["d", "f.txt"], root=tmp_path) == {
        "d": "8b265228d449032f006b6d49cd28fcaf.dir",
        "f.txt": "04153b3135e575c274352238bed301e7",
    }


def test_dvc_md5_rehashes_a_file_only_when_it_changes(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"first")
    first = dvc_md5(path)
    # Same size, rewritten in place: a new modification time makes it a new version. (Set
    # explicitly: two writes within one kernel clock tick can share a timestamp.)
    modified = path.stat().st_mtime_ns
    path.write_bytes(b"other")
    os.utime(path, ns=(modified + 1_000_000, modified + 1_000_000))
    assert dvc_md5(path) == hashlib.md5(b"other").hexdigest() != first
    # An unchanged file is not read again.
    reads = content_hash._content_md5.cache_info().misses
    assert dvc_md5(path) == hashlib.md5(b"other").hexdigest()
    assert content_hash._content_md5.cache_info().misses == reads
