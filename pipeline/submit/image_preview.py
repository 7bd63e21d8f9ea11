"""The New-task page's preview of the image toggles: a sample photo before and after the border crop and the style
randomiser, made with the image stage's own operations (``pipeline.core.image_ops``). No provider is called.

The sample is the last base image of the user's own tasks, or an offline portrait drawn here. It is shown as a
tile of a provider's grid arrives, on a light border (the kind ``crop_white_borders`` removes), so that the crop
toggle visibly does what it does to every tile of a task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

import db.queries as q
from db.session import Database
from pipeline.core.domain import PersonaDraft
from pipeline.core.errors import PipelineError
from pipeline.core.image_ops import encode_jpeg, finish_tile, style_rng
from pipeline.core.images import decode_image
from pipeline.providers.offline_images import draw_portrait
from pipeline.storage import Storage, is_legacy_url

log = logging.getLogger(__name__)

SAMPLE_SIDE = 320  # the photo's side in the preview (a tile of a 1024-px grid is about 500 px)
BORDER_COLOR = (240, 238, 233)  # off-white: white to crop_white_borders (>= 220), not to the margin trim (>= 250)
BORDER = (14, 20, 14, 28)  # left, top, right, bottom, in pixels: uneven, as the model draws them
PORTRAIT = PersonaDraft(firstname="Sample", lastname="Portrait", gender="f", ethnicity="mixed", age=34)
PORTRAIT_SEED = 7
PREVIEW_PERSONA_KEY = "preview"  # the style's RNG is drawn from the seed and this, as a task's from a persona's key


@dataclass(frozen=True)
class SamplePhoto:
    data: bytes
    source: str  # where it came from, for the caption


@dataclass(frozen=True)
class TogglePreview:
    before: bytes  # JPEG: the sample as a grid's tile arrives
    after: bytes  # JPEG: what a task with these toggles would store
    before_size: tuple[int, int]
    after_size: tuple[int, int]
    style: dict[str, Any] | None  # what the style randomiser drew (None when off)


def offline_portrait() -> bytes:
    """A drawn portrait (the offline image provider's renderer, called here without a provider): JPEG bytes."""
    return encode_jpeg(draw_portrait(PORTRAIT, PORTRAIT_SEED, side=SAMPLE_SIDE))


def sample_photo(db: Database, storage: Storage, user_id: int) -> SamplePhoto:
    """The last readable base image of the user's own tasks, else an offline portrait.

    A legacy URL (an upgraded database's provider link) is skipped: reading it would be a network call."""
    with db.session() as session:
        uris = q.latest_base_images(session, user_id)
    for uri in uris:
        if is_legacy_url(uri):
            continue
        try:
            data = storage.get(uri)
            decode_image(data, draft_side=SAMPLE_SIDE)
        except (PipelineError, OSError) as exc:  # missing or unreadable: try the next one
            log.info("preview sample %s unusable: %s", uri, exc)
            continue
        return SamplePhoto(data, "the last base image of your tasks")
    return SamplePhoto(offline_portrait(), "an offline portrait (none of your tasks has a base image yet)")


def as_tile(photo: bytes) -> Image.Image:
    """The sample scaled to ``SAMPLE_SIDE`` and set on a light border, as a tile of a provider's grid arrives."""
    img = decode_image(photo, draft_side=SAMPLE_SIDE)
    img = ImageOps.fit(img, (SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.BICUBIC)
    return ImageOps.expand(img, border=BORDER, fill=BORDER_COLOR)


def preview_toggles(photo: bytes, *, crop_borders: bool, randomize_style: bool, seed: int) -> TogglePreview:
    """The sample before and after the image stage's tile processing with these toggles and this seed: the same
    trim, crop and style functions a task applies to each of its tiles."""
    tile = as_tile(photo)
    rng = style_rng(seed, PREVIEW_PERSONA_KEY, 0) if randomize_style else None
    done, style, quality = finish_tile(tile, crop_borders=crop_borders, style_rng=rng)
    return TogglePreview(
        before=encode_jpeg(tile),
        after=encode_jpeg(done, quality),
        before_size=tile.size,
        after_size=done.size,
        style=style,
    )
