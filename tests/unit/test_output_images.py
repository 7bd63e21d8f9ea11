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


def _noise_png(side: int) -> bytes:
    """A PNG of random pixels: as large as a photo's PNG gets (about 3 bytes a pixel)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_a_list_gets_a_small_thumbnail_even_without_a_stored_one() -> None:
    """A persona with only its full base PNG: the table gets a small JPEG made from it, never the PNG (96 rows
    of full PNGs as data URIs could pass Streamlit's message limit); a stored thumbnail is used as it is."""
    import io

    from PIL import Image

    storage = SigningStorage()
    base = storage.put("t/b001-s00/base.png", _noise_png(1024))
    assert len(base) and len(storage.get(base)) > 2_000_000
    thumb = images.thumbnail_bytes(storage, base)
    assert thumb[:3] == b"\xff\xd8\xff" and len(thumb) <= images.MAX_THUMBNAIL_BYTES
    with Image.open(io.BytesIO(thumb)) as img:
        assert max(img.size) <= images.THUMBNAIL_SIDE
    assert images.thumbnail_url(storage, base) is None, "a full image is never signed as a thumbnail"
    assert len(images.data_uri(thumb)) * 96 < 10_000_000  # a page of 96 rows stays small

    stored = storage.put("t/b001-s00/img00_thumb.jpg", thumb)
    assert images.thumbnail_bytes(MemoryStorage(), None) == images.placeholder_thumbnail()
    assert images.thumbnail_url(storage, stored) == f"https://signed.example/{stored}?expires=300"
    plain = MemoryStorage()
    plain.put(stored, thumb)
    assert images.thumbnail_bytes(plain, stored) == thumb


def test_missing_or_unreadable_images_get_a_placeholder_thumbnail() -> None:
    storage = MemoryStorage()
    broken = storage.put("t/b001-s00/base.png", b"\x89PNG\r\n\x1a\n not really")
    placeholder = images.placeholder_thumbnail()
    assert placeholder[:3] == b"\xff\xd8\xff" and len(placeholder) < 4096
    for uri in (None, "", "t/missing.jpg", broken):
        assert images.thumbnail_bytes(storage, uri) == placeholder


def test_the_page_image_cache_is_capped_in_bytes() -> None:
    cache = images.ImageCache(max_bytes=1000)
    for i in range(50):
        cache.put(("image", str(i)), bytes(90))
        assert cache.size <= 1000
    assert cache.get(("image", "0")) is None and cache.get(("image", "49")) == bytes(90)
    cache.put(("image", "big"), bytes(101))  # over a tenth of the cap: never kept
    assert cache.get(("image", "big")) is None
    cache.get(("image", "40"))  # used: kept over older ones
    for i in range(50, 60):
        cache.put(("image", str(i)), bytes(90))
    assert cache.get(("image", "40")) == bytes(90)
