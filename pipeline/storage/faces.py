"""The face library behind ``randomize_face_base``: reference photos in ``male/`` and ``female/`` folders.

``FACES_URL`` is ``s3://bucket/prefix`` (read with ``S3Storage``), ``file://path`` or a plain local folder.
A reference is the storage key of one face relative to the library root, e.g. ``male/face_0001.jpg``; it is
what ``image_meta`` records as the face used.

The listing is paginated (no 1,000-key cap), made lazily on first use and cached per library instance;
``from_settings`` hands out one shared instance per ``FACES_URL`` for a few minutes, so the image stage does
not list the bucket again for every persona, while newly uploaded faces still show up soon.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from pipeline.core.config import Settings
from pipeline.core.errors import ConfigError, StorageError
from pipeline.storage.local import LocalStorage
from pipeline.storage.s3 import S3Storage

FOLDERS: tuple[str, ...] = ("male", "female")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp"})
LIBRARY_TTL_SECONDS = 300.0

_MALE = {"m", "male", "man", "men", "boy"}
_FEMALE = {"f", "female", "woman", "women", "girl"}


class FaceSource(Protocol):
    """The part of ``Storage`` a face library needs."""

    def list_keys(self, prefix: str) -> list[str]: ...

    def get(self, uri: str) -> bytes: ...


class FaceLibraryExhausted(ConfigError):
    """The face library has no (more) faces that fit the request."""


def folder_for_gender(gender: str | None) -> str | None:
    """``male``/``female`` for a man's/woman's gender value, None for anything else (other, non-binary, unknown).

    Only explicit male/female values map to a folder: ``nb``, ``other``, ``x`` or an empty value never do.
    """
    value = (gender or "").strip().lower()
    if value in _MALE:
        return "male"
    if value in _FEMALE:
        return "female"
    return None


def is_face_image(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


class FaceLibrary:
    """Reference faces below ``male/`` and ``female/`` of a storage source."""

    def __init__(self, source: FaceSource, *, description: str = "FACES_URL"):
        self.source = source
        self.description = description
        self._faces: dict[str, tuple[str, ...]] | None = None
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> FaceLibrary:
        """A library for ``s3://bucket/prefix``, ``file://path`` or a plain folder path."""
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            return cls(S3Storage.from_url(url, endpoint_url=endpoint_url), description=url)
        if parsed.scheme == "file":
            folder = Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path)
        elif parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
            raise ConfigError(f"FACES_URL {url!r} is not supported: use s3://BUCKET/PREFIX or a local folder")
        else:
            folder = Path(url)
        if not folder.is_dir():
            raise ConfigError(f"FACES_URL folder {str(folder)!r} does not exist")
        return cls(LocalStorage(folder), description=str(folder))

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceLibrary | None:
        """The shared library for ``settings.faces_url``, or None when ``FACES_URL`` is not set."""
        url = (settings.faces_url or "").strip()
        if not url:
            return None
        cache_key = (url, settings.s3_endpoint_url or None)
        now = time.monotonic()
        with _LIBRARIES_LOCK:
            cached = _LIBRARIES.get(cache_key)
            if cached is not None and now - cached[0] < LIBRARY_TTL_SECONDS:
                return cached[1]
        library = cls.from_url(url, endpoint_url=settings.s3_endpoint_url)
        with _LIBRARIES_LOCK:
            _LIBRARIES[cache_key] = (now, library)
        return library

    # -- listing ------------------------------------------------------------------------------------------

    def _listing(self) -> dict[str, tuple[str, ...]]:
        faces = self._faces
        if faces is not None:
            return faces
        with self._lock:
            if self._faces is None:
                self._faces = {
                    folder: tuple(sorted(k for k in self.source.list_keys(f"{folder}/") if is_face_image(k)))
                    for folder in FOLDERS
                }
            return self._faces

    def refresh(self) -> None:
        """Forget the cached listing; the next call lists the source again."""
        with self._lock:
            self._faces = None

    def faces(self, folder: str) -> tuple[str, ...]:
        """All references in ``male`` or ``female``, sorted."""
        if folder not in FOLDERS:
            raise ValueError(f"unknown face folder {folder!r}: use one of {', '.join(FOLDERS)}")
        return self._listing()[folder]

    def counts(self) -> dict[str, int]:
        """How many faces each folder holds, e.g. ``{"male": 120, "female": 131}`` (for the settings page)."""
        listing = self._listing()
        return {folder: len(listing[folder]) for folder in FOLDERS}

    # -- use ----------------------------------------------------------------------------------------------

    def pick(
        self, gender: str | None, rng: random.Random, *, gender_lock: bool, exclude: set[str] | None = None
    ) -> str:
        """One face reference, drawn with ``rng`` (deterministic for a given rng state and listing).

        - ``gender_lock`` on and gender ``m``/``f``: only ``male/`` or ``female/`` respectively.
        - ``gender_lock`` on and any other gender (``other``, non-binary ``nb``, unknown, empty): the lock cannot
          name a folder, so the face is deliberately drawn from **both** folders. Such a persona is never
          silently mapped to one binary gender (in particular ``nb`` is never treated as female).
        - ``gender_lock`` off: any face from both folders.

        References in ``exclude`` (e.g. faces the provider already refused) are skipped; when nothing is left,
        ``FaceLibraryExhausted`` (a ``ConfigError``) says which folder ran out.
        """
        exclude = exclude or set()
        folder = folder_for_gender(gender) if gender_lock else None
        folders = (folder,) if folder else FOLDERS
        pool = [ref for name in folders for ref in self.faces(name)]
        candidates = [ref for ref in pool if ref not in exclude]
        if not candidates:
            which = f"{folder} faces" if folder else "faces (male/ or female/)"
            if not pool:
                raise FaceLibraryExhausted(f"face library {self.description} has no {which}")
            raise FaceLibraryExhausted(
                f"face library {self.description} has no {which} left to try ({len(pool)} already tried)"
            )
        return candidates[rng.randrange(len(candidates))]

    def read(self, ref: str) -> bytes:
        """The bytes of one reference returned by ``pick``."""
        parts = ref.split("/")
        if len(parts) < 2 or parts[0] not in FOLDERS or any(p in {"", ".", ".."} for p in parts):
            raise StorageError(f"not a face reference: {ref!r}")
        return self.source.get(ref)


_LIBRARIES: dict[tuple[str, str | None], tuple[float, FaceLibrary]] = {}
_LIBRARIES_LOCK = threading.Lock()


def clear_library_cache() -> None:
    """Forget the shared libraries (tests, or after uploading faces)."""
    with _LIBRARIES_LOCK:
        _LIBRARIES.clear()
