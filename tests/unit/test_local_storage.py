"""Local file storage: keys stay below the root, whatever they contain."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import StorageError
from pipeline.storage import LocalStorage


@pytest.mark.parametrize("key", ["../outside.jpg", "/etc/passwd", "a/../../outside.jpg", "..", "a/../..", ""])
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "media")
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.get(key)
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.put(key, b"x")
    assert not (tmp_path / "outside.jpg").exists()


def test_a_key_below_the_root_round_trips(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media")
    assert storage.put("task/b1-s0/img01.jpg", b"data") == "task/b1-s0/img01.jpg"
    assert storage.get("task/./b1-s0/img01.jpg") == b"data"
    assert storage.get("task/b1-s0/../b1-s0/img01.jpg") == b"data"  # ".." that stays below the root
    assert storage.put("task/b1-s0/img..02.jpg", b"dots") == "task/b1-s0/img..02.jpg"
    assert (tmp_path / "media" / "task" / "b1-s0" / "img..02.jpg").read_bytes() == b"dots"
    assert (tmp_path / "media" / "task" / "b1-s0" / "img01.jpg").read_bytes() == b"data"


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 3 * 65_536 + 7])
def test_reads_return_the_whole_file(tmp_path: Path, size: int) -> None:
    """Files read in 64 KB chunks: sizes on and around a chunk boundary come back whole."""
    storage = LocalStorage(tmp_path / "media")
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    storage.put("task/img.jpg", data)
    assert storage.get("task/img.jpg") == data
    with pytest.raises(StorageError, match="cannot read"):
        storage.get("task/missing.jpg")
