"""Image post-processing: the 2x2 check and split, margin trim, border crop, style randomiser, JPEG keys."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import ImageCheckError
from pipeline.core.keys import extension_for
from pipeline.stages.images.imaging import (
    crop_white_borders,
    encode_jpeg,
    make_thumbnail,
    process_grid,
    randomize_style,
    split_grid,
    style_rng,
    trim_white_margins,
)


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
