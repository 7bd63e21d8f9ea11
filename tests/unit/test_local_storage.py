"""Local file storage: keys stay below the root, whatever they contain, symlinks included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.core.errors import StorageError
from pipeline.storage import LocalStorage


@pytest.mark.parametrize("key", ["../outside.jpg", "/etc/passwd", "a/../../outside.jpg", "..", "a/../..", "", "a/.."])
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "media")
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.get(key)
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.put(key, b"x")
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.delete(key)
    assert not (tmp_path / "outside.jpg").exists()


def test_symlinks_out_of_the_root_are_refused(tmp_path: Path) -> None:
    """A folder or a file inside the root that links outside it: neither read nor written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "media")
    storage.put("task/keep.jpg", b"ok")
    os.symlink(outside, tmp_path / "media" / "task" / "linked-folder")
    os.symlink(outside / "secret.jpg", tmp_path / "media" / "task" / "linked.jpg")
    for key in ("task/linked-folder/secret.jpg", "task/linked.jpg"):
        with pytest.raises(StorageError, match="escapes the storage root"):
            storage.get(key)
        with pytest.raises(StorageError, match="escapes the storage root"):
            storage.put(key, b"overwritten")
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.put("task/linked-folder/new.jpg", b"new")
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.list_keys("task/linked-folder/")
    assert (outside / "secret.jpg").read_bytes() == b"secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jpg"]
    assert storage.get("task/keep.jpg") == b"ok"


def test_a_key_below_the_root_round_trips(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media")
    assert storage.put("task/b1-s0/img01.jpg", b"data") == "task/b1-s0/img01.jpg"
    assert storage.get("task/./b1-s0/img01.jpg") == b"data"
    assert storage.get("task/b1-s0/../b1-s0/img01.jpg") == b"data"  # ".." that stays below the root
    assert storage.put("task/b1-s0/img..02.jpg", b"dots") == "task/b1-s0/img..02.jpg"
    assert storage.put("task/empty.jpg", b"") == "task/empty.jpg"
    assert (tmp_path / "media" / "task" / "b1-s0" / "img..02.jpg").read_bytes() == b"dots"
    assert (tmp_path / "media" / "task" / "b1-s0" / "img01.jpg").read_bytes() == b"data"
    assert storage.get("task/empty.jpg") == b""
    assert storage.list_keys("task/") == ["task/b1-s0/img..02.jpg", "task/b1-s0/img01.jpg", "task/empty.jpg"]
    assert not list((tmp_path / "media" / ".partial").iterdir())  # every write renamed into place
    with pytest.raises(StorageError, match="cannot read"):
        storage.get("task/missing.jpg")
    assert storage.delete_prefix("task/") == 3 and storage.list_keys("") == []
