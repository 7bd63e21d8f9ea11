"""Real face pixels for the identity tests: scikit-image's public-domain astronaut portrait (Eileen Collins).

``same_person`` variants (flips, crops, colour and brightness changes, a small rotation) must stay within the
same-person threshold; ``no_face_region`` is a part of the photo without a face. ``FacesImageProvider`` is an
image provider that returns them: a base selfie, and 2x2 grids (white gutters) of same-person variants, with
one quadrant replaced by the no-face region for chosen personas.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

from PIL import Image, ImageEnhance

from pipeline.core.domain import PersonaDraft


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def jpeg(img: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


SAME_PERSON: dict[str, Callable[[Image.Image], Image.Image]] = {
    "flip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "crop": lambda im: im.crop((60, 0, 400, 340)).resize((512, 512)),
    "warm": lambda im: Image.merge("RGB", [b.point(lambda v, f=f: min(255, int(v * f)))  # type: ignore[misc]
                                           for b, f in zip(im.split(), (1.1, 0.95, 0.8), strict=True)]),
    "bright": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "rotate": lambda im: im.rotate(8, fillcolor=(255, 255, 255)),
    "grey": lambda im: im.convert("L").convert("RGB"),
}


def no_face_region(img: Image.Image) -> Image.Image:
    return img.crop((256, 256, 512, 512)).resize((512, 512))


def grid(quadrants: list[Image.Image], side: int = 512, gutter: int = 16) -> bytes:
    """A 2x2 grid with white gutters, as the image models return them."""
    canvas = Image.new("RGB", (2 * side + gutter, 2 * side + gutter), "white")
    for i, quadrant in enumerate(quadrants):
        canvas.paste(quadrant.resize((side, side)), ((i % 2) * (side + gutter), (i // 2) * (side + gutter)))
    return jpeg(canvas)


class FacesImageProvider:
    """Bases and grids of the same real face; a grid quadrant without a face for personas in ``faceless``."""

    name = "faces-test"

    def __init__(self, faceless: int = 0) -> None:
        self.face = astronaut()
        self.faceless = faceless  # how many personas (the first bases asked for) get a faceless quadrant
        self.variants = list(SAME_PERSON.values())
        self._faceless_base = jpeg(self.face, quality=90)  # other bytes, same face: grids recognise it
        self._lock = threading.Lock()

    def generate_base(self, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        with self._lock:
            if self.faceless > 0:
                self.faceless -= 1
                return self._faceless_base
        return jpeg(self.face)

    def edit_face(self, face: bytes, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        return face  # the worst case of leakage: the library face itself

    def make_grid(self, base: bytes, prompt: str, *, seed: int) -> bytes:
        quadrants = [self.variants[(seed + i) % len(self.variants)](self.face) for i in range(4)]
        if base == self._faceless_base:  # the grid provider is not told the persona: it knows it by its base
            quadrants[3] = no_face_region(self.face)
        return grid(quadrants)
