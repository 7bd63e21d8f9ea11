"""Image post-processing: the 2x2 check and split, margin trim, border crop, style randomiser, JPEG keys.

The expected crops are computed from DESIGN §4's rules written out line by line."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from pipeline.core.errors import ImageCheckError
from pipeline.core.image_ops import (
    DEFAULT_JPEG_QUALITY,
    _vignette,
    crop_white_borders,
    encode_jpeg,
    make_thumbnail,
    randomize_style,
    style_rng,
    trim_white_margins,
)
from pipeline.core.images import image_hash
from pipeline.core.keys import extension_for
from pipeline.stages.images.imaging import process_grid, split_grid


def _tile(color: tuple[int, int, int], side: int = 200) -> Image.Image:
    rng = np.random.default_rng(sum(color))
    arr = np.clip(np.array(color, np.float32) + rng.normal(0, 10, (side, side, 3)), 0, 240).astype(np.uint8)
    return Image.fromarray(arr)


def _grid(gutter: int = 12, margin: int = 12, side: int = 200) -> Image.Image:
    total = 2 * side + gutter + 2 * margin
    grid = Image.new("RGB", (total, total), "white")
    colors = [(200, 60, 60), (60, 200, 60), (60, 60, 200), (200, 200, 60)]
    for i, color in enumerate(colors):
        grid.paste(_tile(color, side), (margin + (i % 2) * (side + gutter), margin + (i // 2) * (side + gutter)))
    return grid


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_split_grid_with_gutters_returns_four_tiles_in_reading_order() -> None:
    tiles = [trim_white_margins(t) for t in split_grid(_grid())]
    assert [t.size for t in tiles] == [(200, 200)] * 4
    means = [np.asarray(t).reshape(-1, 3).mean(axis=0).argmax() for t in tiles]
    assert means[:3] == [0, 1, 2]  # red, green, blue tiles in reading order


def test_split_grid_without_gutters_uses_the_seam() -> None:
    grid = _grid(gutter=0, margin=0)
    tiles = split_grid(grid)
    assert [t.size for t in tiles] == [(200, 200)] * 4


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (800, 200), (90, 90, 90)),  # a strip, not a grid
        _tile((120, 110, 100), 400),  # one photo: no dividing line
    ],
)
def test_split_grid_rejects_what_is_not_2x2(image: Image.Image) -> None:
    with pytest.raises(ImageCheckError, match="not 2x2"):
        split_grid(image)


def test_crop_white_borders_has_no_50px_cap_and_keeps_content() -> None:
    content = _tile((100, 120, 140), 300)
    framed = Image.new("RGB", (300 + 2 * 80, 300 + 2 * 70), (235, 235, 235))  # >= 220: white by the rule
    framed.paste(content, (80, 70))
    cropped = crop_white_borders(framed)
    assert cropped.size == (300, 300)
    assert crop_white_borders(content).size == content.size  # nothing to crop


def test_crop_white_borders_keeps_lines_under_95_percent_white() -> None:
    img = Image.new("RGB", (200, 200), (250, 250, 250))
    arr = np.asarray(img).copy()
    arr[:, :20] = 30  # a dark left column band: every row is <95% white
    arr[:20, :] = 30
    cropped = crop_white_borders(Image.fromarray(arr))
    assert cropped.size == (200, 200)


def test_randomize_style_draws_within_the_original_ranges_and_is_seeded() -> None:
    img = _tile((150, 120, 100), 128)
    for index in range(40):
        out, params = randomize_style(img, style_rng(7, "b1-s0", index))
        assert params["preset"] in {"natural", "warm", "cool", "matte", "punchy", "desaturated"}
        assert 0.95 <= params["contrast"] <= 1.15
        assert ("blur_sigma" in params) != ("unsharp_amount" in params)
        if "blur_sigma" in params:
            assert 0.3 <= params["blur_sigma"] <= 0.7
        else:
            assert 0.4 <= params["unsharp_amount"] <= 0.7
        if "grain_sigma" in params:
            assert 3 <= params["grain_sigma"] <= 8
        if "vignette" in params:
            assert 0.12 <= params["vignette"] <= 0.18
        assert 78 <= params["jpeg_quality"] <= 95
        assert out.size == img.size
    first = randomize_style(img, style_rng(7, "b1-s0", 3))
    again = randomize_style(img, style_rng(7, "b1-s0", 3))
    assert first[1] == again[1] and first[0].tobytes() == again[0].tobytes()


def test_vignette_darkens_corners_more_than_centre() -> None:
    img = Image.new("RGB", (101, 101), (200, 200, 200))
    for seed in range(200):
        rng = random.Random(seed)
        out, params = randomize_style(img, rng)
        if "vignette" in params and "grain_sigma" not in params and params["preset"] == "natural":
            arr = np.asarray(out).astype(int)
            assert arr[50, 50].mean() > arr[0, 0].mean()
            return
    pytest.fail("no vignette-only draw in 200 seeds")


def test_process_grid_writes_real_jpeg_with_thumbnails_and_records_style() -> None:
    processed = process_grid(_png(_grid()), crop_borders=True, randomize=True, seed=3, persona_key="b1-s2", first_index=4)
    assert len(processed) == 4
    for image in processed:
        assert extension_for(image.data) == "jpg"
        assert image.data[:3] == b"\xff\xd8\xff"
        assert image.style is not None and image.quality == image.style["jpeg_quality"]
        with Image.open(io.BytesIO(image.thumb)) as thumb:
            assert max(thumb.size) <= 256
    again = process_grid(_png(_grid()), crop_borders=True, randomize=True, seed=3, persona_key="b1-s2", first_index=4)
    assert [p.data for p in processed] == [p.data for p in again]


def test_process_grid_without_toggles_keeps_plain_tiles() -> None:
    processed = process_grid(_png(_grid()), crop_borders=False, randomize=False, seed=1, persona_key="x", first_index=0)
    assert all(p.style is None and (p.width, p.height) == (200, 200) for p in processed)


def test_undecodable_grid_is_an_image_check_error() -> None:
    with pytest.raises(ImageCheckError):
        process_grid(b"not an image", crop_borders=False, randomize=False, seed=1, persona_key="x", first_index=0)


def test_thumbnail_and_jpeg_helpers() -> None:
    img = _tile((10, 20, 30), 600)
    assert encode_jpeg(img)[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(make_thumbnail(img))) as thumb:
        assert thumb.size == (256, 256)


def _photo(seed: int, side: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.normal(128, 50, (side // 8, side // 8, 3)).repeat(8, 0).repeat(8, 1)
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def _expected_box(a: np.ndarray, threshold: int, fraction: float) -> tuple[int, int, int, int] | None:
    """The box the DESIGN's rule keeps, written out: from each edge, drop lines with >= ``fraction`` white."""
    white = a.min(axis=2) >= threshold
    rows = [y for y in range(a.shape[0]) if white[y].mean() < fraction]
    cols = [x for x in range(a.shape[1]) if white[:, x].mean() < fraction]
    return (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) if rows and cols else None


def test_trim_and_border_crop_keep_exactly_the_box_the_rule_gives() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(40, 300, 2))
        a = np.full((h, w, 3), 255, np.uint8)
        top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        bottom, right = int(rng.integers(top + 1, h + 1)), int(rng.integers(left + 1, w + 1))
        a[top:bottom, left:right] = rng.integers(0, 256, (bottom - top, right - left, 3))
        a[rng.integers(0, h), :, 1] = 200  # a stray line, sometimes in the margin
        img = Image.fromarray(a)
        box = _expected_box(a, 250, 1.0 - 1e-9) or (0, 0, w, h)
        assert np.array_equal(np.asarray(trim_white_margins(img)), a[box[1]:box[3], box[0]:box[2]])
        box = _expected_box(a, 220, 0.95) or (0, 0, w, h)
        if box[2] - box[0] < 32 or box[3] - box[1] < 32:
            box = (0, 0, w, h)  # nearly all border: left for the checks to judge
        assert np.array_equal(np.asarray(crop_white_borders(img)), a[box[1]:box[3], box[0]:box[2]])


def test_process_grid_crops_what_split_then_trim_then_crop_gives() -> None:
    grid = Image.new("RGB", (460, 440), "white")
    for i in range(4):
        grid.paste(Image.fromarray(_photo(10 + i, 200)), (14 + (i % 2) * 230, 10 + (i // 2) * 218))
    processed = process_grid(_png(grid), crop_borders=True, randomize=False, seed=1, persona_key="x", first_index=0)
    expected = [crop_white_borders(trim_white_margins(tile)) for tile in split_grid(grid)]
    assert [(p.width, p.height) for p in processed] == [t.size for t in expected] == [(200, 200)] * 4
    assert [p.data for p in processed] == [encode_jpeg(t, DEFAULT_JPEG_QUALITY) for t in expected]
    assert [p.phash for p in processed] == [image_hash(p.thumb) for p in processed]


def _draw(img: Image.Image, wanted: Callable[[dict[str, Any]], bool]) -> tuple[Image.Image, dict[str, Any]]:
    """The first style draw (over seeds) whose parameters ``wanted`` accepts."""
    for seed in range(500):
        out, params = randomize_style(img, random.Random(seed))
        if wanted(params):
            return out, params
    raise AssertionError("no such draw in 500 seeds")


def test_grain_has_the_drawn_sigma_and_is_the_same_on_every_channel() -> None:
    flat = Image.new("RGB", (300, 300), (120, 128, 110))
    out, params = _draw(flat, lambda p: "grain_sigma" in p and "vignette" not in p and p["grain_sigma"] > 6)
    a = np.asarray(out).astype(int)
    deviation = a - np.median(a, axis=(0, 1)).astype(int)  # the flat colour after preset and contrast
    assert abs(deviation.std() - params["grain_sigma"]) < 0.1 * params["grain_sigma"]
    assert np.array_equal(deviation[..., 0], deviation[..., 1]) and np.array_equal(deviation[..., 1], deviation[..., 2])


def test_vignette_gain_is_one_at_the_centre_and_one_minus_strength_at_the_corners() -> None:
    gain = _vignette(301, 401, 0.15)
    assert gain.shape == (301, 401)
    assert abs(float(gain[150, 200]) - 1.0) < 1e-6
    assert all(abs(float(gain[y, x]) - 0.85) < 1e-5 for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)))
    assert abs(float(gain[150, 0]) - (1 - 0.15 * 200**2 / (150**2 + 200**2))) < 1e-5


def _edge_energy(img: Image.Image) -> float:
    a = np.asarray(img.convert("L"), dtype=np.float64)
    return float(np.abs(np.diff(a, axis=1)).mean())


def test_blur_softens_and_unsharp_sharpens() -> None:
    photo = Image.fromarray(_photo(4, 160))

    def plain(p: dict[str, Any]) -> bool:
        return p["preset"] == "natural" and "grain_sigma" not in p and "vignette" not in p

    def colour_only(params: dict[str, Any]) -> Image.Image:  # the natural preset and the contrast, no filter
        return ImageEnhance.Contrast(ImageEnhance.Color(photo).enhance(1.08)).enhance(params["contrast"])

    blurred, params = _draw(photo, lambda p: plain(p) and "blur_sigma" in p)
    assert _edge_energy(blurred) < 0.95 * _edge_energy(colour_only(params))
    sharpened, params = _draw(photo, lambda p: plain(p) and "unsharp_amount" in p)
    assert _edge_energy(sharpened) > 1.05 * _edge_energy(colour_only(params))
