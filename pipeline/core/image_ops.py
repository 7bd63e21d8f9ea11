"""Pure image operations on one photo: white margins and borders, the style randomiser, JPEG and thumbnail.

PIL in, PIL or bytes out: no storage, no database, no network. The image stage applies them to each tile of a
provider's grid (``pipeline.stages.images.imaging``); the New-task page's preview applies them to a sample photo,
so what it shows is what a task would store.
"""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from pipeline.core.domain import derive_seed

WHITE_MIN = 220  # crop_white_borders: a pixel is white when R, G and B are all >= 220
WHITE_LINE_FRACTION = 0.95  # ... and a row/column is white when >= 95% of its pixels are
PURE_WHITE_MIN = 250  # trim_white_margins: (near) pure white, tolerant of JPEG ringing
MIN_TILE_SIDE = 64
THUMBNAIL_SIDE = 256
DEFAULT_JPEG_QUALITY = 92

Box = tuple[int, int, int, int]  # (left, top, right, bottom), as ``Image.crop`` takes it


def channel_min(img: Image.Image) -> np.ndarray:
    """min(R, G, B) per pixel, (height, width) uint8: a pixel is "white" when this is at or above a threshold."""
    rgb = np.asarray(img.convert("RGB"))
    # channel by channel: numpy reduces slowly over a short last axis such as .min(axis=2)
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def white_share(white: np.ndarray, axis: int) -> np.ndarray:
    """The share of True in each column (``axis`` 0) or row (``axis`` 1) of a mask."""
    return np.count_nonzero(white, axis=axis) / white.shape[axis]


# --- margins and borders ----------------------------------------------------------------------------------------


def _content_box(img: Image.Image, threshold: int, fraction: float) -> Box | None:
    """The box left after dropping, from each edge, the rows and columns whose share of white pixels
    (R, G, B >= ``threshold``) is at least ``fraction``; None when every line is white."""
    white = channel_min(img) >= threshold
    rows = np.flatnonzero(white_share(white, 1) < fraction)
    columns = np.flatnonzero(white_share(white, 0) < fraction)
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


def finish_tile(
    tile: Image.Image, *, crop_borders: bool, style_rng: random.Random | None
) -> tuple[Image.Image, dict[str, Any] | None, int]:
    """One photo as a task stores it: pure-white margins trimmed, border-cropped when ``crop_borders``, styled
    when a ``style_rng`` is given. Returns the image, the style drawn (None unstyled) and its JPEG quality."""
    tile = trim_white_margins(tile)
    if crop_borders:
        tile = crop_white_borders(tile)
    if style_rng is None:
        return tile, None, DEFAULT_JPEG_QUALITY
    tile, style = randomize_style(tile, style_rng)
    return tile, style, int(style["jpeg_quality"])
