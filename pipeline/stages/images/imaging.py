"""Pure image post-processing: PIL/bytes in, PIL/bytes out. No storage, no database, no network.

The grid path: decode -> check it is a 2x2 grid and split it at its gutters -> trim pure-white margins ->
optionally ``crop_white_borders`` -> optionally ``randomize_style`` -> JPEG + 256-px thumbnail.
"""

from __future__ import annotations

import io
import os
import random
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from pipeline.core.domain import IMAGES_PER_BLOCK, derive_seed
from pipeline.core.errors import ImageCheckError
from pipeline.core.images import decode_image, image_hash

WHITE_MIN = 220  # crop_white_borders: a pixel is white when R, G and B are all >= 220
WHITE_LINE_FRACTION = 0.95  # ... and a row/column is white when >= 95% of its pixels are
PURE_WHITE_MIN = 250  # trim_white_margins: (near) pure white, tolerant of JPEG ringing
GUTTER_SEARCH = (0.35, 0.65)  # where a 2x2 grid's dividing lines may lie, as fractions of the side
MIN_TILE_SIDE = 64
THUMBNAIL_SIDE = 256
DEFAULT_JPEG_QUALITY = 92

Box = tuple[int, int, int, int]  # (left, top, right, bottom), as ``Image.crop`` takes it


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


def _channel_min(img: Image.Image) -> np.ndarray:
    """min(R, G, B) per pixel, (height, width) uint8: a pixel is "white" when this is at or above a threshold."""
    rgb = np.asarray(img.convert("RGB"))
    # channel by channel: numpy reduces slowly over a short last axis such as .min(axis=2)
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _white_share(white: np.ndarray, axis: int) -> np.ndarray:
    """The share of True in each column (``axis`` 0) or row (``axis`` 1) of a mask."""
    return np.count_nonzero(white, axis=axis) / white.shape[axis]


def _search_band(n: int) -> tuple[int, int]:
    return int(n * GUTTER_SEARCH[0]), int(n * GUTTER_SEARCH[1])


def _divider(img: Image.Image, white_share: np.ndarray, axis: int) -> tuple[int, int] | None:
    """The dividing band (start, end) near the middle of one axis: a white gutter, else a sharp seam.

    ``white_share``: the share of white pixels of each column (axis 1) or row (axis 0)."""
    lo, hi = _search_band(len(white_share))
    white = np.flatnonzero(white_share[lo:hi] >= WHITE_LINE_FRACTION)
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
    white = _channel_min(img) >= WHITE_MIN
    vertical = _divider(img, _white_share(white, 0), 1)
    horizontal = _divider(img, _white_share(white, 1), 0)
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


# --- margins and borders ----------------------------------------------------------------------------------------


def _content_box(img: Image.Image, threshold: int, fraction: float) -> Box | None:
    """The box left after dropping, from each edge, the rows and columns whose share of white pixels
    (R, G, B >= ``threshold``) is at least ``fraction``; None when every line is white."""
    white = _channel_min(img) >= threshold
    rows = np.flatnonzero(_white_share(white, 1) < fraction)
    columns = np.flatnonzero(_white_share(white, 0) < fraction)
    if rows.size == 0 or columns.size == 0:
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def _crop(img: Image.Image, box: Box | None) -> Image.Image:
    return img if box is None or box == (0, 0, *img.size) else img.crop(box)


def trim_white_margins(img: Image.Image) -> Image.Image:
    """Drop edge rows and columns that are entirely (near) pure white — the gutters left by the split."""
    return _crop(img, _content_box(img, PURE_WHITE_MIN, 1.0 - 1e-9))


def crop_white_borders(img: Image.Image) -> Image.Image:
    """The original's border crop: scan from each edge while a line is >= 95% white (R,G,B >= 220).

    Unlike the original, borders wider than 50 px are cropped too. An image that is all border (nothing of at
    least half a minimal tile left) is returned as it is, for the checks to judge.
    """
    box = _content_box(img, WHITE_MIN, WHITE_LINE_FRACTION)
    if box is None:
        return img
    left, top, right, bottom = box
    if right - left < MIN_TILE_SIDE // 2 or bottom - top < MIN_TILE_SIDE // 2:
        return img
    return _crop(img, box)


# --- the style randomiser ---------------------------------------------------------------------------------------


def style_rng(seed: int, persona_key: str, index: int) -> random.Random:
    """The style randomiser's RNG: from the task seed, the persona and the image index."""
    return random.Random(derive_seed(seed, persona_key, "style", index))


PRESETS = ("natural", "warm", "cool", "matte", "punchy", "desaturated")

_PRESET_GAIN = {"warm": (1.10, 1.05, 1.0), "cool": (0.93, 1.0, 1.08), "matte": (0.85, 0.85, 0.85)}
_PRESET_OFFSET = {"matte": 38.0}
_PRESET_SATURATION = {"natural": 1.08, "warm": 1.15, "matte": 0.75, "punchy": 1.30, "desaturated": 0.70}


def _apply_preset(img: Image.Image, preset: str) -> Image.Image:
    """A colour preset: per-channel gains and an offset, then a saturation change."""
    if preset in _PRESET_GAIN:
        (r, g, b), offset = _PRESET_GAIN[preset], _PRESET_OFFSET.get(preset, 0.0)
        img = img.convert("RGB", matrix=(r, 0, 0, offset, 0, g, 0, offset, 0, 0, b, offset))
    if preset in _PRESET_SATURATION:
        img = ImageEnhance.Color(img).enhance(_PRESET_SATURATION[preset])
    return img


def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    """The vignette's gain per pixel, 1 − d²·strength with d the distance to the centre over the
    centre-to-corner distance: 1 at the centre, 1 − strength at the corners."""
    cy, cx = (height - 1) / 2, (width - 1) / 2
    dy = (np.arange(height, dtype=np.float32) - cy) ** 2
    dx = (np.arange(width, dtype=np.float32) - cx) ** 2
    d2 = (dy[:, None] + dx[None, :]) / max(cy**2 + cx**2, 1.0)
    return 1.0 - strength * d2


def randomize_style(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    """The original's ``randomize_image_style`` with its parameters; returns the image and what was drawn.

    Every parameter is drawn from ``rng`` in a fixed order, so one seed gives one look; the grain's own pixels
    come from a numpy generator seeded by a draw of ``rng``.
    """
    img = img.convert("RGB")
    preset = rng.choice(PRESETS)
    params: dict[str, Any] = {"preset": preset}
    contrast = rng.uniform(1.05, 1.12) if rng.random() < 0.7 else rng.uniform(0.95, 1.15)
    params["contrast"] = round(contrast, 4)
    img = ImageEnhance.Contrast(_apply_preset(img, preset)).enhance(contrast)

    if rng.random() < 0.5:
        sigma = rng.uniform(0.3, 0.7)
        params["blur_sigma"] = round(sigma, 4)
        img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
    else:
        amount = rng.uniform(0.4, 0.7)
        params["unsharp_amount"] = round(amount, 4)
        img = img.filter(ImageFilter.UnsharpMask(radius=1, percent=int(amount * 100), threshold=0))

    grain = rng.uniform(3, 8) if rng.random() < 0.6 else None
    grain_seed = rng.getrandbits(32) if grain is not None else 0
    strength = rng.uniform(0.12, 0.18) if rng.random() < 0.5 else None
    if grain is not None or strength is not None:
        pixels = np.asarray(img, dtype=np.float32)
        height, width = pixels.shape[:2]
        if grain is not None:
            params["grain_sigma"] = round(grain, 4)
            # one grain value per pixel, the same on R, G and B
            noise = np.random.default_rng(grain_seed).standard_normal((height, width, 1), dtype=np.float32)
            pixels += noise * np.float32(grain)
        if strength is not None:
            params["vignette"] = round(strength, 4)
            pixels *= _vignette(height, width, strength)[..., None]
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    params["jpeg_quality"] = rng.randint(78, 95)
    return img, params


# --- encoding ---------------------------------------------------------------------------------------------------


def encode_jpeg(img: Image.Image, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Baseline JPEG bytes of an image (converted to RGB)."""
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


def make_thumbnail(img: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of the image scaled down to fit ``side`` × ``side`` (never scaled up)."""
    thumb = img.copy()
    thumb.thumbnail((side, side), Image.Resampling.BICUBIC)
    return encode_jpeg(thumb, 82)


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
    tile = trim_white_margins(tile)
    if crop_borders:
        tile = crop_white_borders(tile)
    style: dict[str, Any] | None = None
    quality = DEFAULT_JPEG_QUALITY
    if randomize:
        tile, style = randomize_style(tile, style_rng(seed, persona_key, index))
        quality = int(style["jpeg_quality"])
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
