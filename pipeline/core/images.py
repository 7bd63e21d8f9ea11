"""Reading encoded images: decode, size and perceptual hash, with one bound on what is decoded.

Providers, the image stage, the review and the gallery all read images from bytes; they do it here.
"""

from __future__ import annotations

import io

import imagehash
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import ImageCheckError

Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs from a misbehaving provider


def image_hash(data: bytes) -> int:
    """The 64-bit perceptual hash (pHash of a 32 × 32 grey image). The hash reads only 32 × 32 pixels, so a JPEG
    is decoded in grey at the smallest scale of at least 64 px that libjpeg offers (``Image.draft``)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("L", (64, 64))
        return int(str(imagehash.phash(img)), 16)


def decode_image(data: bytes, *, draft_side: int | None = None) -> Image.Image:
    """An RGB image from encoded bytes; ``ImageCheckError`` when they are not a readable image.

    ``draft_side``: a JPEG may be decoded at a reduced scale (not below that side), which is much cheaper."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if draft_side:
                img.draft("RGB", (draft_side, draft_side))
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")  # no copy of what is RGB already
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc


def image_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc
