"""The faster image post-processing computes what the straightforward versions compute."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.stages.images import imaging
from pipeline.stages.images.imaging import (
    _blur_array,
    _ChannelMin,
    _content_box,
    _grain,
    _unsharp_array,
    _vignette,
    encode_jpeg,
    pixel_view,
    process_grid,
    split_grid,
    trim_and_crop,
)


def _photo(seed: int, side: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.normal(128, 50, (side // 8, side // 8, 3)).repeat(8, 0).repeat(8, 1)
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def _reference_3x3(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The 3x3 filter in float64, rounded and clipped, the border left as it is."""
    x = a.astype(np.float64)
    out = x.copy()
    h, w = a.shape[:2]
    acc = np.zeros((h - 2, w - 2, 3))
    for dy in range(3):
        for dx in range(3):
            acc += kernel[dy, dx] * x[dy:dy + h - 2, dx:dx + w - 2]
    out[1:-1, 1:-1] = acc
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _gaussian(sigma: float) -> np.ndarray:
    g = np.exp(-(np.arange(-1, 2) ** 2) / (2 * sigma * sigma))
    k = np.outer(g, g)
    return k / k.sum()


@pytest.mark.parametrize("sigma", [0.3, 0.5, 0.7])
def test_integer_blur_matches_the_float_3x3_gaussian(sigma: float) -> None:
    a = _photo(1)
    diff = _blur_array(a, sigma).astype(int) - _reference_3x3(a, _gaussian(sigma))
    assert np.abs(diff).max() <= 1 and abs(diff.mean()) < 0.1


@pytest.mark.parametrize("amount", [0.4, 0.55, 0.7])
def test_integer_unsharp_matches_the_float_kernel(amount: float) -> None:
    a = _photo(2)
    identity = np.zeros((3, 3))
    identity[1, 1] = 1
    diff = _unsharp_array(a, amount).astype(int) - _reference_3x3(a, (1 + amount) * identity - amount * _gaussian(1.0))
    assert np.abs(diff).max() <= 2 and abs(diff.mean()) < 0.1


def test_grain_is_gaussian_with_the_drawn_sigma_and_seeded() -> None:
    noise = _grain(7, (400, 500), 5.0)
    assert noise.dtype == np.float32 and noise.shape == (400, 500)
    assert abs(float(noise.std()) - 5.0) < 0.05 and abs(float(noise.mean())) < 0.05
    assert abs(float(np.mean(np.abs(noise) < 5.0)) - 0.6827) < 0.005  # one sigma holds 68%
    assert np.array_equal(noise, _grain(7, (400, 500), 5.0)) and not np.array_equal(noise, _grain(8, (400, 500), 5.0))


def test_pixel_view_shares_pillow_memory_and_copies_only_images_in_several_blocks() -> None:
    img = Image.fromarray(_photo(4, 96))
    view = pixel_view(img)
    assert view.shape == (96, 96, 4) and np.array_equal(view[..., :3], np.asarray(img))
    img.putpixel((95, 95), (1, 2, 3))  # the view is Pillow's own memory, not a copy
    assert tuple(view[95, 95, :3]) == (1, 2, 3)
    big = Image.new("RGB", (4096, 4096), (9, 8, 7))  # 64 MB: rows in several blocks, so a copy
    copied = pixel_view(big)
    assert copied.shape == (4096, 4096, 3) and tuple(copied[-1, -1]) == (9, 8, 7)
    rgb = _photo(5, 64)
    rgbx = np.concatenate([rgb, np.zeros((64, 64, 1), np.uint8)], axis=2)  # the padding byte is never read
    assert np.array_equal(_ChannelMin(rgbx).values(), _ChannelMin(rgb).values())
    assert np.array_equal(_ChannelMin(rgbx)[5:40, 3:50].values(), rgb.min(axis=2)[5:40, 3:50])


def test_edge_scan_finds_the_box_a_full_scan_finds() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        h, w = rng.integers(40, 300, 2)
        a = np.full((h, w, 3), 255, np.uint8)
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        bottom, right = rng.integers(top + 1, h + 1), rng.integers(left + 1, w + 1)
        a[top:bottom, left:right] = rng.integers(0, 256, (bottom - top, right - left, 3))
        a[rng.integers(0, h), :, 1] = 200  # a stray line, sometimes in the margin
        minimum = a.min(axis=2)
        for threshold, fraction in ((250, 1.0 - 1e-9), (220, 0.95)):
            mask = minimum >= threshold
            rows = np.flatnonzero(mask.mean(axis=1) < fraction)
            cols = np.flatnonzero(mask.mean(axis=0) < fraction)
            full = None if rows.size == 0 or cols.size == 0 else (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
            assert _content_box(_ChannelMin(a), threshold, fraction) == full


def test_process_grid_crops_what_split_then_trim_crops() -> None:
    grid = Image.new("RGB", (460, 440), "white")
    for i in range(4):
        grid.paste(Image.fromarray(_photo(10 + i, 200)), (14 + (i % 2) * 230, 10 + (i // 2) * 218))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    processed = process_grid(buffer.getvalue(), crop_borders=True, randomize=False, seed=1, persona_key="x",
                             first_index=0)
    expected = [trim_and_crop(tile, True) for tile in split_grid(grid)]
    assert [(p.width, p.height) for p in processed] == [t.size for t in expected]
    assert [p.data for p in processed] == [encode_jpeg(t, imaging.DEFAULT_JPEG_QUALITY) for t in expected]


def test_integer_grain_and_vignette_paths_match_the_float_ones() -> None:
    whole = _grain(7, (400, 500), 5.0, whole=True)
    assert whole.dtype == np.int16
    assert np.array_equal(whole, np.floor(_grain(7, (400, 500), 5.0)).astype(np.int16))  # same draws, floored
    float_mask, steps = _vignette(301, 400, 0.15), _vignette(301, 400, 0.15, steps=256)
    assert steps.dtype == np.uint16 and np.abs(steps / 256 - float_mask).max() <= 1 / 512 + 1e-6
    assert float_mask[150, 199] > 0.999 and abs(float(float_mask[0, 0]) - 0.85) < 1e-5


def test_tiles_on_threads_and_jpeg_via_memfd_give_the_bytes_of_the_serial_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The four tiles styled on the shared pool, and the JPEGs encoded into an in-memory file, are byte for byte
    what one thread encoding into ``BytesIO`` makes (style draws per tile index, not per thread)."""
    grid = Image.new("RGB", (460, 440), "white")
    for i in range(4):
        grid.paste(Image.fromarray(_photo(20 + i, 200)), (14 + (i % 2) * 230, 10 + (i // 2) * 218))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")

    def run() -> list[tuple[bytes, bytes, object]]:
        out = process_grid(buffer.getvalue(), crop_borders=True, randomize=True, seed=5, persona_key="b1-s2",
                           first_index=4)
        return [(p.data, p.thumb, p.style) for p in out]

    threaded = run()
    monkeypatch.setattr(imaging, "TILE_THREADS", 1)
    monkeypatch.setattr(imaging, "_MEMFD", False)
    assert len(threaded) == 4 and run() == threaded


def test_blockwise_grain_with_vignette_matches_the_whole_array_formula() -> None:
    """The grain-plus-vignette pass runs by row blocks; it equals the formula on the whole array."""
    arr = _photo(3, 200)[:150]  # a height that is not a multiple of the block
    h, w = arr.shape[:2]
    assert h > imaging._BLOCK_ROWS
    noise, gain = _grain(11, (h, w), 6.0), _vignette(h, w, 0.15)
    expected = arr.astype(np.float32)
    expected += noise[..., None]
    expected *= gain[..., None]
    expected = np.clip(expected, 0, 255).astype(np.uint8)
    assert np.array_equal(imaging._grain_and_vignette(arr, noise, gain), expected)
