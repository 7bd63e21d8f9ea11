"""Local-folder and in-memory storage."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pipeline.core.errors import StorageError
from pipeline.core.keys import content_type_for

PARTIAL_DIR = ".partial"


class LocalStorage:
    """Files below a root folder. Never served statically: pages read bytes after auth."""

    remote = False

    def __init__(self, root: Path):
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        """The file of ``key``, refused unless it resolves (symlinks followed) to a place below the root."""
        path = (self.root / key).resolve()
        if path == self.root or not path.is_relative_to(self.root):
            raise StorageError(f"key escapes the storage root: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written beside the root, never inside a task's folder: a killed writer leaves no half object there.
            partial = self.root / PARTIAL_DIR
            partial.mkdir(parents=True, exist_ok=True)
            tmp = partial / f"{os.getpid()}-{threading.get_ident()}-{path.name}"
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written image
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror}") from exc
        return key

    def get(self, uri: str) -> bytes:
        try:
            return self._path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror}") from exc

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        removed = 0
        for key in self.list_keys(prefix):
            self._path(key).unlink(missing_ok=True)
            removed += 1
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else None
        if base is not None and base.is_dir():
            for folder in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(folder.iterdir()):
                    folder.rmdir()
            if not any(base.iterdir()):
                base.rmdir()
        return removed

    def list_keys(self, prefix: str) -> list[str]:
        if prefix.strip("/"):
            self._path(prefix.rstrip("/"))  # refuses a prefix outside the root
        base = self.root / prefix
        folder = base if prefix.endswith("/") or base.is_dir() else base.parent
        if not folder.exists():
            return []
        keys = []
        for path in folder.rglob("*"):
            if path.is_file() and PARTIAL_DIR not in path.parts:
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def display_url(self, uri: str, expires_seconds: int = 300) -> str | None:
        return None


class MemoryStorage:
    """In-process storage for tests and previews."""

    remote = False

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        with self._lock:
            self.objects[key] = (data, content_type or content_type_for(key))
        return key

    def get(self, uri: str) -> bytes:
        try:
            return self.objects[uri][0]
        except KeyError:
            raise StorageError(f"no object {uri}") from None

    def delete(self, uri: str) -> None:
        with self._lock:
            self.objects.pop(uri, None)

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self.objects if k.startswith(prefix)]
            for key in doomed:
                del self.objects[key]
        return len(doomed)

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def display_url(self, uri: str, expires_seconds: int = 300) -> str | None:
        return None
