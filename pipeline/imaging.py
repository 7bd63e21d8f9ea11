"""Pure image post-processing: PIL/bytes in, PIL/bytes out. No storage, no database, no network.

The grid path: decode -> check it is a 2x2 grid and split it at its gutters -> trim pure-white margins ->
optionally ``crop_white_borders`` -> optionally ``randomize_style`` -> JPEG + 256-px thumbnail.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageStat, UnidentifiedImageError

from pipeline.domain import IMAGES_PER_BLOCK, derive_seed
from pipeline.errors import ImageCheckError

WHITE_MIN = 220  # crop_white_borders: a pixel is white when R, G and B are all >= 220
WHITE_LINE_FRACTION = 0.95  # ... and a row/column is white when >= 95% of its pixels are
PURE_WHITE_MIN = 250  # trim_white_margins: (near) pure white, tolerant of JPEG ringing
GUTTER_SEARCH = (0.35, 0.65)  # where a 2x2 grid's dividing lines may lie, as fractions of the side
MIN_TILE_SIDE = 64
THUMBNAIL_SIDE = 256
DEFAULT_JPEG_QUALITY = 92
Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs from a misbehaving provider


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    thumb: bytes
    width: int
    height: int
    quality: int
    style: dict[str, Any] | None


def decode_image(data: bytes) -> Image.Image:
    """An RGB image from encoded bytes; ``ImageCheckError`` when they are not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc


def image_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageCheckError(f"not a readable image ({type(exc).__name__})") from exc


def _channel_min(img: Image.Image) -> np.ndarray:
    """min(R, G, B) per pixel, contiguous (a pixel is "white" when this is above a threshold)."""
    r, g, b = (np.asarray(band) for band in (img if img.mode == "RGB" else img.convert("RGB")).split())
    return np.minimum(np.minimum(r, g), b)



def _fraction(mask: np.ndarray, axis: int) -> np.ndarray:
    return np.count_nonzero(mask, axis=axis) / mask.shape[axis]


def _gaussian_3x3(sigma: float) -> np.ndarray:
    """A normalised 3x3 Gaussian: enough support for the randomiser's sigmas (0.3–0.7; the 5x5 ring is < 2%)."""
    x = np.arange(-1, 2, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma * sigma))
    k = np.outer(g, g)
    return k / k.sum()


def _kernel(weights: np.ndarray) -> ImageFilter.Kernel:
    return ImageFilter.Kernel((3, 3), [float(v) for v in weights.ravel()], scale=1.0)


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur in one C pass (Pillow's GaussianBlur makes three box passes: ~3x slower here)."""
    return img.filter(_kernel(_gaussian_3x3(sigma)))


def unsharp(img: Image.Image, amount: float, sigma: float = 1.0) -> Image.Image:
    """Unsharp mask with threshold 0: img + amount·(img − blur(img)), which is one linear 3x3 kernel."""
    identity = np.zeros((3, 3))
    identity[1, 1] = 1.0
    return img.filter(_kernel((1 + amount) * identity - amount * _gaussian_3x3(sigma)))


def _divider(profile: np.ndarray, gray: Callable[[], np.ndarray], axis: int) -> tuple[int, int] | None:
    """The dividing band (start, end) near the middle of one axis: a white gutter, else a sharp seam."""
    n = len(profile)
    lo, hi = int(n * GUTTER_SEARCH[0]), int(n * GUTTER_SEARCH[1])
    white = np.flatnonzero(profile[lo:hi] >= WHITE_LINE_FRACTION)
    if white.size:
        # the white run closest to the middle
        runs = np.split(white, np.flatnonzero(np.diff(white) > 1) + 1)
        mid = (hi - lo) / 2
        run = min(runs, key=lambda r: abs((r[0] + r[-1]) / 2 - mid))
        return lo + int(run[0]), lo + int(run[-1]) + 1
    seam = np.abs(np.diff(gray(), axis=axis)).mean(axis=1 - axis)  # only when there is no white gutter
    band = seam[lo:hi]
    if band.size and band.max() > 4 * max(float(np.median(seam)), 1.0) and band.max() > 12:
        at = lo + int(band.argmax()) + 1  # the seam lies between column at-1 and at
        return at, at
    return None


def split_grid(img: Image.Image) -> list[Image.Image]:
    """The four tiles of a 2x2 grid, in reading order; ``ImageCheckError`` when it is not one."""
    width, height = img.size
    if not 0.6 <= width / height <= 1.67:
        raise ImageCheckError(f"grid is not 2x2: aspect ratio {width}x{height}")
    white = _channel_min(img) >= WHITE_MIN
    gray = functools.cache(lambda: np.asarray(img.convert("L"), dtype=np.int16))
    vertical = _divider(_fraction(white, 0), gray, 1)
    horizontal = _divider(_fraction(white, 1), gray, 0)
    if vertical is None or horizontal is None:
        missing = "vertical" if vertical is None else "horizontal"
        raise ImageCheckError(f"grid is not 2x2: no {missing} dividing line near the middle")
    (x0, x1), (y0, y1) = vertical, horizontal
    boxes = [(0, 0, x0, y0), (x1, 0, width, y0), (0, y1, x0, height), (x1, y1, width, height)]
    tiles = [img.crop(box) for box in boxes]
    for tile in tiles:
        if min(tile.size) < MIN_TILE_SIDE:
            raise ImageCheckError(f"grid is not 2x2: a tile of {tile.size[0]}x{tile.size[1]} px")
    return tiles


def _content_box(mask_white: np.ndarray, fraction: float) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) after dropping edge rows/columns that are >= ``fraction`` white."""
    rows = np.flatnonzero(_fraction(mask_white, 1) < fraction)
    cols = np.flatnonzero(_fraction(mask_white, 0) < fraction)
    if rows.size == 0 or cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _trim_box(minimum: np.ndarray) -> tuple[int, int, int, int]:
    h, w = minimum.shape
    return _content_box(minimum >= PURE_WHITE_MIN, 1.0 - 1e-9) or (0, 0, w, h)


def _border_box(minimum: np.ndarray) -> tuple[int, int, int, int]:
    h, w = minimum.shape
    box = _content_box(minimum >= WHITE_MIN, WHITE_LINE_FRACTION)
    if box is None:
        return (0, 0, w, h)  # all white: nothing sensible to keep, leave it to the checks
    left, top, right, bottom = box
    if right - left < MIN_TILE_SIDE // 2 or bottom - top < MIN_TILE_SIDE // 2:
        return (0, 0, w, h)
    return box


def _crop(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    return img if box == (0, 0, *img.size) else img.crop(box)


def trim_white_margins(img: Image.Image) -> Image.Image:
    """Drop edge rows and columns that are entirely (near) pure white — the gutters left by the split."""
    return _crop(img, _trim_box(_channel_min(img)))


def crop_white_borders(img: Image.Image) -> Image.Image:
    """The original's border crop: scan from each edge while a line is >= 95% white (R,G,B >= 220).

    Unlike the original, borders wider than 50 px are cropped too. Vectorised: one pass over the pixels.
    """
    return _crop(img, _border_box(_channel_min(img)))


def trim_and_crop(img: Image.Image, crop_borders: bool) -> Image.Image:
    """``trim_white_margins`` then, optionally, ``crop_white_borders``: one pixel pass and one crop."""
    minimum = _channel_min(img)
    left, top, right, bottom = _trim_box(minimum)
    if crop_borders:
        l2, t2, r2, b2 = _border_box(minimum[top:bottom, left:right])
        left, top, right, bottom = left + l2, top + t2, left + r2, top + b2
    return _crop(img, (left, top, right, bottom))


def style_rng(seed: int, persona_key: str, index: int) -> random.Random:
    """The style randomiser's RNG: from the task seed, the persona and the image index."""
    return random.Random(derive_seed(seed, persona_key, "style", index))


PRESETS = ("natural", "warm", "cool", "matte", "punchy", "desaturated")


_LUMA = np.array([0.299, 0.587, 0.114])  # the luma PIL's ImageEnhance uses (convert("L"))
_PRESET_GAIN = {"warm": (1.10, 1.05, 1.0), "cool": (0.93, 1.0, 1.08), "matte": (0.85, 0.85, 0.85)}
_PRESET_OFFSET = {"matte": 38.0}
_PRESET_SATURATION = {"natural": 1.08, "warm": 1.15, "matte": 0.75, "punchy": 1.30, "desaturated": 0.70}


def _colour_matrix(preset: str, contrast: float, mean_rgb: np.ndarray) -> tuple[float, ...]:
    """Preset gains/offset, saturation (blend with luma) and contrast (blend with the mean luma) as one affine
    RGB transform: ``ImageEnhance.Color``/``Contrast`` are linear, so the three steps collapse into one C pass."""
    gain = np.diag(_PRESET_GAIN.get(preset, (1.0, 1.0, 1.0)))
    offset = np.full(3, _PRESET_OFFSET.get(preset, 0.0))
    s = _PRESET_SATURATION.get(preset, 1.0)
    saturate = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _LUMA)
    matrix, shift = saturate @ gain, saturate @ offset
    mean_luma = float(_LUMA @ np.clip(matrix @ mean_rgb + shift, 0, 255))
    matrix, shift = contrast * matrix, contrast * shift + (1 - contrast) * int(mean_luma + 0.5)
    return tuple(float(v) for row in np.column_stack([matrix, shift]) for v in row)


def randomize_style(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    """The original's ``randomize_image_style`` with its parameters; returns the image and what was drawn.

    Same draws in the same order as the original; the colour steps run as one affine transform, blur and
    unsharp as one 3x3 kernel, grain and vignette in one float32 pass.
    """
    img = img if img.mode == "RGB" else img.convert("RGB")
    preset = rng.choice(PRESETS)
    params: dict[str, Any] = {"preset": preset}
    contrast = rng.uniform(1.05, 1.12) if rng.random() < 0.7 else rng.uniform(0.95, 1.15)
    params["contrast"] = round(contrast, 4)
    mean_rgb = np.array(ImageStat.Stat(img.reduce(4) if min(img.size) >= 64 else img).mean[:3])
    out = img.convert("RGB", matrix=_colour_matrix(preset, contrast, mean_rgb))

    if rng.random() < 0.5:
        sigma = rng.uniform(0.3, 0.7)
        params["blur_sigma"] = round(sigma, 4)
        out = gaussian_blur(out, sigma)
    else:
        amount = rng.uniform(0.4, 0.7)
        params["unsharp_amount"] = round(amount, 4)
        out = unsharp(out, amount)  # the original: UnsharpMask(radius=1, percent=amount·100, threshold=0)

    grain = rng.uniform(3, 8) if rng.random() < 0.6 else None
    grain_seed = rng.getrandbits(32) if grain is not None else 0
    strength = rng.uniform(0.12, 0.18) if rng.random() < 0.5 else None
    if grain is not None or strength is not None:
        arr = np.asarray(out, dtype=np.float32)
        h, w = arr.shape[:2]
        if grain is not None:
            params["grain_sigma"] = round(grain, 4)
            noise = np.random.default_rng(grain_seed).standard_normal((h, w), dtype=np.float32)
            arr += (noise * np.float32(grain))[..., None]
        if strength is not None:
            params["vignette"] = round(strength, 4)
            cy, cx = (h - 1) / 2, (w - 1) / 2
            dy = ((np.arange(h, dtype=np.float32) - cy) ** 2)[:, None]
            dx = ((np.arange(w, dtype=np.float32) - cx) ** 2)[None, :]
            mask = 1.0 - (dy + dx) * np.float32(strength / (cy**2 + cx**2))
            arr *= mask[..., None]
        np.clip(arr, 0, 255, out=arr)
        out = Image.fromarray(arr.astype(np.uint8))
    params["jpeg_quality"] = rng.randint(78, 95)
    return out, params


def encode_jpeg(img: Image.Image, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    (img if img.mode == "RGB" else img.convert("RGB")).save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


def make_thumbnail(img: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    factor = max(1, max(img.size) // side)
    small = img.reduce(factor) if factor > 1 else img  # box-average by an integer factor first (fast, exact)
    scale = min(1.0, side / max(small.size))
    size = (max(1, round(small.size[0] * scale)), max(1, round(small.size[1] * scale)))
    thumb = small.resize(size, Image.Resampling.LANCZOS) if scale < 1 else small
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
    results = []
    for offset, tile in enumerate(tiles):
        tile = trim_and_crop(tile, crop_borders)
        style: dict[str, Any] | None = None
        quality = DEFAULT_JPEG_QUALITY
        if randomize:
            tile, style = randomize_style(tile, style_rng(seed, persona_key, first_index + offset))
            quality = int(style["jpeg_quality"])
        results.append(
            ProcessedImage(
                data=encode_jpeg(tile, quality),
                thumb=make_thumbnail(tile),
                width=tile.size[0],
                height=tile.size[1],
                quality=quality,
                style=style,
            )
        )
    return results
