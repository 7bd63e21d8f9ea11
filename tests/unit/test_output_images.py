"""What a page is given for a stored image: a presigned URL where the storage signs one, else the bytes."""

from __future__ import annotations

import pytest

from pipeline.outputs import images
from pipeline.storage import MemoryStorage


class SigningStorage(MemoryStorage):
    """A storage that signs URLs, as S3 does."""

    def display_url(self, uri: str, expires_seconds: int = 300) -> str | None:
        return f"https://signed.example/{uri}?expires={expires_seconds}"


def test_a_storage_without_urls_gives_the_bytes() -> None:
    storage = MemoryStorage()
    uri = storage.put("t/1/base.jpg", b"jpeg bytes")
    assert images.display_url(storage, uri) is None
    assert images.image_source(storage, uri) == b"jpeg bytes"


def test_a_signing_storage_gives_a_short_lived_url() -> None:
    storage = SigningStorage()
    uri = storage.put("t/1/base.jpg", b"jpeg bytes")
    assert images.image_source(storage, uri) == f"https://signed.example/{uri}?expires=300"


def test_a_legacy_public_url_is_read_by_the_server_never_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    monkeypatch.setattr(images, "read_image", lambda _storage, uri: read.append(uri) or b"legacy bytes")
    legacy = "https://old-bucket.example/persona.jpg"
    assert images.image_source(SigningStorage(), legacy) == b"legacy bytes"
    assert read == [legacy]


def test_missing_or_unreadable_images_give_none() -> None:
    storage = MemoryStorage()
    assert images.image_source(storage, None) is None
    assert images.image_source(storage, "") is None
    assert images.image_source(storage, "t/1/missing.jpg") is None  # the storage raises StorageError
