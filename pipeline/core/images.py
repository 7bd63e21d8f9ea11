"""Reading encoded images: decode, size and perceptual hash, with one bound on what is decoded.

Providers, the image stage, the review and the gallery all read images from bytes; they do it here. Every read
refuses an image of more than ``MAX_IMAGE_PIXELS`` pixels with an ``ImageCheckError`` before decoding it: a
small file can declare a huge canvas (a decompression bomb) and decoding it would take gigabytes.
"""

from __future__ import annotations

import io
import warnings

import imagehash
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import ImageCheckError

MAX_IMAGE_PIXELS = 64_000_000  # 8,000 x 8,000; the largest image a provider makes is about 1536 x 1024

# Pillow only warns between its limit and twice it, and refuses above that: the limit is ours, every image above
# it is refused (by ``_open``'s own check, and by Pillow's warning raised as an error wherever this module runs).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


def _too_large(pixels: int | None = None) -> ImageCheckError:
    size = f"{pixels:,} pixels" if pixels is not None else "over the limit"
    return ImageCheckError(f"the image is too large ({size}; the limit is {MAX_IMAGE_PIXELS:,} pixels)")


def _open(data: bytes) -> Image.Image:
    """The image in ``data`` with only its header read, within ``MAX_IMAGE_PIXELS``; ``ImageCheckError`` if not."""
    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large() from None
    except _UNREADABLE as exc:
        raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:  # also when the warning filter was reset (e.g. by a test runner)
        img.close()
        raise _too_large(width * height)
    return img


def image_hash(data: bytes) -> int:
    """The 64-bit perceptual hash (pHash of a 32 × 32 grey image). The hash reads only 32 × 32 pixels, so a JPEG
    is decoded in grey at the smallest scale of at least 64 px that libjpeg offers (``Image.draft``)."""
    with _open(data) as img:
        try:
            img.draft("L", (64, 64))
            return int(str(imagehash.phash(img)), 16)
        except _UNREADABLE as exc:
            raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc


def decode_image(data: bytes, *, draft_side: int | None = None) -> Image.Image:
    """An RGB image from encoded bytes; ``ImageCheckError`` when they are not a readable image or too large.

    ``draft_side``: a JPEG may be decoded at a reduced scale (not below that side), which is much cheaper."""
    with _open(data) as img:
        try:
            if draft_side:
                img.draft("RGB", (draft_side, draft_side))
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")  # no copy of what is RGB already
        except _UNREADABLE as exc:
            raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the header only (cheap); ``ImageCheckError`` when unreadable or too large."""
    with _open(data) as img:
        return img.size


def check_image(data: bytes) -> tuple[int, int]:
    """Width and height of an image that decodes completely within the bound; ``ImageCheckError`` if it does not
    (cut off, corrupt, too large). For bytes from outside, such as a provider's, before they are stored."""
    with _open(data) as img:
        try:
            img.load()
        except _UNREADABLE as exc:
            raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc
        return img.size
