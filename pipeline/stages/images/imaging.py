"""The image stage's grid path: PIL/bytes in, PIL/bytes out. No storage, no database, no network.

decode -> check it is a 2x2 grid and split it at its gutters -> trim pure-white margins -> optionally
``crop_white_borders`` -> optionally ``randomize_style`` -> JPEG + 256-px thumbnail. The operations on one tile are
in ``pipeline.core.image_ops`` (the New-task preview applies the same ones to a sample photo).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pipeline.core.domain import IMAGES_PER_BLOCK
from pipeline.core.errors import ImageCheckError
from pipeline.core.image_ops import (
    MIN_TILE_SIDE,
    WHITE_LINE_FRACTION,
    WHITE_MIN,
    Box,
    channel_min,
    encode_jpeg,
    finish_tile,
    make_thumbnail,
    style_rng,
    white_share,
)
from pipeline.core.images import decode_image, image_hash

GUTTER_SEARCH = (0.35, 0.65)  # where a 2x2 grid's dividing lines may lie, as fractions of the side


def _cores() -> int:
    """The cores this process may run on (its affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# The image work of a whole process (every task's grids) runs on at most this many threads at once: a worker has
# many calls in flight, and their grids must not all be decoded and styled at the same time, each slowing the
# others and holding its memory, while the calls whose replies are due wait for the interpreter.
_CPU_SLOTS = threading.BoundedSemaphore(_cores())


def cpu_slot() -> threading.BoundedSemaphore:
    """Hold while doing a grid's CPU work (``with cpu_slot(): ...``): one of the process's per-core slots."""
    return _CPU_SLOTS


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    thumb: bytes
    width: int
    height: int
    quality: int
    style: dict[str, Any] | None
    phash: int  # the thumbnail's perceptual hash (``image_hash``), for the review's near-duplicate check


# --- the 2x2 check and split ------------------------------------------------------------------------------------


def _search_band(n: int) -> tuple[int, int]:
    return int(n * GUTTER_SEARCH[0]), int(n * GUTTER_SEARCH[1])


def _divider(img: Image.Image, shares: np.ndarray, axis: int) -> tuple[int, int] | None:
    """The dividing band (start, end) near the middle of one axis: a white gutter, else a sharp seam.

    ``shares``: the share of white pixels of each column (axis 1) or row (axis 0)."""
    lo, hi = _search_band(len(shares))
    white = np.flatnonzero(shares[lo:hi] >= WHITE_LINE_FRACTION)
    if white.size:
        # the white run closest to the middle
        runs = np.split(white, np.flatnonzero(np.diff(white) > 1) + 1)
        mid = (hi - lo) / 2
        run = min(runs, key=lambda r: abs((r[0] + r[-1]) / 2 - mid))
        return lo + int(run[0]), lo + int(run[-1]) + 1
    # no white gutter: a seam is a line where the brightness jumps much more than it does elsewhere
    gray = np.asarray(img.convert("L"), dtype=np.int16)
    seam = np.abs(np.diff(gray, axis=axis)).mean(axis=1 - axis)
    band = seam[lo:hi]
    if band.size and band.max() > 4 * max(float(np.median(seam)), 1.0) and band.max() > 12:
        at = lo + int(band.argmax()) + 1  # the seam lies between line at-1 and at
        return at, at
    return None


def _grid_boxes(img: Image.Image) -> list[Box]:
    """The four tile boxes of a 2x2 grid, in reading order; ``ImageCheckError`` when it is not one."""
    width, height = img.size
    if not 0.6 <= width / height <= 1.67:
        raise ImageCheckError(f"grid is not 2x2: aspect ratio {width}x{height}")
    white = channel_min(img) >= WHITE_MIN
    vertical = _divider(img, white_share(white, 0), 1)
    horizontal = _divider(img, white_share(white, 1), 0)
    if vertical is None or horizontal is None:
        missing = "vertical" if vertical is None else "horizontal"
        raise ImageCheckError(f"grid is not 2x2: no {missing} dividing line near the middle")
    (x0, x1), (y0, y1) = vertical, horizontal
    boxes = [(0, 0, x0, y0), (x1, 0, width, y0), (0, y1, x0, height), (x1, y1, width, height)]
    for left, top, right, bottom in boxes:
        if min(right - left, bottom - top) < MIN_TILE_SIDE:
            raise ImageCheckError(f"grid is not 2x2: a tile of {right - left}x{bottom - top} px")
    return boxes


def split_grid(img: Image.Image) -> list[Image.Image]:
    """The four tiles of a 2x2 grid, in reading order; ``ImageCheckError`` when it is not one."""
    return [img.crop(box) for box in _grid_boxes(img)]


def process_grid(
    grid: bytes,
    *,
    crop_borders: bool,
    randomize: bool,
    seed: int,
    persona_key: str,
    first_index: int,
) -> list[ProcessedImage]:
    """One 2x2 grid from a provider into four stored-ready JPEGs with thumbnails and their style parameters."""
    tiles = split_grid(decode_image(grid))
    if len(tiles) != IMAGES_PER_BLOCK:
        raise ImageCheckError(f"grid gave {len(tiles)} tiles")
    return [
        _finish_tile(tile, index, crop_borders=crop_borders, randomize=randomize, seed=seed, persona_key=persona_key)
        for index, tile in enumerate(tiles, start=first_index)
    ]


def _finish_tile(
    tile: Image.Image, index: int, *, crop_borders: bool, randomize: bool, seed: int, persona_key: str
) -> ProcessedImage:
    """A tile trimmed (and border-cropped), styled when ``randomize``, as a JPEG, its thumbnail and the
    thumbnail's hash (computed here, while its bytes are in memory, rather than read back by the review)."""
    rng = style_rng(seed, persona_key, index) if randomize else None
    tile, style, quality = finish_tile(tile, crop_borders=crop_borders, style_rng=rng)
    thumb = make_thumbnail(tile)
    return ProcessedImage(
        data=encode_jpeg(tile, quality),
        thumb=thumb,
        width=tile.size[0],
        height=tile.size[1],
        quality=quality,
        style=style,
        phash=image_hash(thumb),  # of the stored thumbnail's bytes: what a review from storage would compute
    )
