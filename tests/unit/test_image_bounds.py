"""Image bounds (issue 20, item 9): every read of encoded bytes refuses a decompression bomb and a cut-off file
with an ``ImageCheckError``, never Pillow's own exception or a gigabyte decode."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from functools import cache

import pytest
from PIL import Image

from pipeline.core.errors import ImageCheckError
from pipeline.core.images import MAX_IMAGE_PIXELS, check_image, decode_image, image_hash, image_size


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@cache
def bomb(side: int) -> bytes:
    """A PNG of ``side`` x ``side`` one-bit pixels: tens of kilobytes on disk, ``side``² pixels decoded."""
    return _png(Image.new("1", (side, side)))


# Pillow only warns between MAX_IMAGE_PIXELS and twice it, and refuses above: both must be refused.
SIDES = {"over-twice-the-limit": 12_000, "between-the-limit-and-twice-it": 9_000}
READS: dict[str, Callable[[bytes], object]] = {
    "image_size": image_size, "decode_image": decode_image, "check_image": check_image, "image_hash": image_hash,
}


def test_the_bombs_are_small_files_over_the_limit() -> None:
    for side in SIDES.values():
        assert side * side > MAX_IMAGE_PIXELS and len(bomb(side)) < 1_000_000


# As in the app: pipeline.core.images raises Pillow's warning as an error (pytest resets filters for each test).
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", SIDES.values(), ids=SIDES.keys())
@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_bomb_is_refused_as_too_large(read: Callable[[bytes], object], side: int) -> None:
    with pytest.raises(ImageCheckError, match="too large"):
        read(bomb(side))


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_bomb_is_refused_even_when_warnings_are_ignored(read: Callable[[bytes], object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as a test runner or another library might set them
        with pytest.raises(ImageCheckError, match="too large"):
            read(bomb(SIDES["between-the-limit-and-twice-it"]))


def test_an_image_at_the_limit_is_read() -> None:
    data = _png(Image.new("RGB", (1536, 1024), (10, 20, 30)))
    assert image_size(data) == check_image(data) == (1536, 1024)
    assert decode_image(data).size == (1536, 1024)


def test_a_cut_off_image_is_refused_by_the_full_check_only() -> None:
    whole = _png(Image.effect_noise((256, 256), 64).convert("RGB"))
    cut = whole[: len(whole) // 2]
    assert image_size(cut) == (256, 256)  # the header is intact: only a full decode finds the cut
    with pytest.raises(ImageCheckError, match="not a readable image"):
        check_image(cut)
    with pytest.raises(ImageCheckError, match="not a readable image"):
        decode_image(cut)


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_bytes_that_are_no_image_are_refused(read: Callable[[bytes], object]) -> None:
    with pytest.raises(ImageCheckError, match="not a readable image"):
        read(b"<html>not an image</html>")
