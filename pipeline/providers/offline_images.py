"""Offline images: procedural portraits and 2x2 grids of the same face with white gutters. No network.

The base portrait is drawn from the persona (skin tone from ethnicity, hair from gender and age, age
cues, clothing and background from the seed). A grid is made *from the stored base image*, as the real
provider edits it: four re-framed, re-lit variations of the same pixels, laid out 2x2 with white gutters,
so the real split/trim path runs. Deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from pipeline.core.config import Settings
from pipeline.core.domain import PersonaDraft
from pipeline.core.images import decode_image

SIDE = 512
GUTTER = 16

_SKIN = {
    "black": [(92, 58, 40), (110, 72, 50), (75, 48, 34)],
    "african": [(92, 58, 40), (110, 72, 50)],
    "south asian": [(160, 112, 80), (140, 98, 70)],
    "middle eastern": [(190, 140, 105), (175, 128, 95)],
    "hispanic": [(196, 145, 110), (180, 130, 96)],
    "latino": [(196, 145, 110), (180, 130, 96)],
    "indigenous": [(170, 118, 85)],
    "east asian": [(232, 196, 160), (222, 184, 148)],
    "southeast asian": [(200, 150, 110), (190, 140, 100)],
    "mixed": [(176, 128, 95), (200, 152, 118)],
    "white": [(240, 205, 180), (230, 190, 165), (245, 215, 195)],
}
_HAIR = [(30, 22, 18), (60, 40, 25), (100, 70, 40), (160, 120, 70), (200, 170, 110), (120, 50, 30)]
_CLOTHES = [(40, 70, 120), (150, 40, 50), (50, 110, 80), (220, 220, 225), (35, 35, 40), (200, 150, 60), (110, 80, 140)]
_BACKGROUNDS = [
    ((200, 215, 230), (120, 140, 170)),
    ((235, 220, 200), (170, 140, 110)),
    ((210, 230, 205), (90, 130, 90)),
    ((225, 225, 225), (150, 150, 160)),
    ((240, 200, 190), (160, 100, 110)),
]


def _skin(persona: PersonaDraft, rng: random.Random) -> tuple[int, int, int]:
    label = (persona.ethnicity or "").casefold()
    for key, tones in _SKIN.items():
        if key in label:
            return rng.choice(tones)
    return rng.choice([tone for tones in _SKIN.values() for tone in tones])


def _encode_png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()



def draw_portrait(persona: PersonaDraft, seed: int, side: int = SIDE) -> Image.Image:
    """A stylised head-and-shoulders portrait of this persona."""
    rng = random.Random(seed)
    top, bottom = rng.choice(_BACKGROUNDS)
    t = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    background = np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t
    canvas = np.broadcast_to(background, (side, side, 3)).copy()
    img = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    s = side / 512
    skin = _skin(persona, rng)
    shade = tuple(int(c * 0.82) for c in skin)
    age = persona.age or rng.randint(20, 60)
    hair = (185, 185, 190) if age >= 60 else (135, 130, 128) if age >= 50 and rng.random() < 0.5 else rng.choice(_HAIR)
    cx = side / 2 + rng.uniform(-20, 20) * s
    face_w, face_h = rng.uniform(150, 180) * s, rng.uniform(195, 225) * s
    cy = rng.uniform(215, 235) * s
    long_hair = persona.gender == "f" or (persona.gender == "other" and rng.random() < 0.5) or rng.random() < 0.08

    # shoulders and clothing
    clothes = rng.choice(_CLOTHES)
    draw.ellipse([cx - 210 * s, cy + 150 * s, cx + 210 * s, cy + 460 * s], fill=clothes)
    draw.rectangle([cx - 38 * s, cy + 70 * s, cx + 38 * s, cy + 170 * s], fill=shade)  # neck
    if long_hair:  # hair behind the head
        draw.rounded_rectangle(
            [cx - face_w / 2 - 28 * s, cy - face_h / 2 - 20 * s, cx + face_w / 2 + 28 * s, cy + face_h / 2 + 90 * s],
            radius=int(70 * s),
            fill=hair,
        )
    draw.ellipse([cx - face_w / 2, cy - face_h / 2, cx + face_w / 2, cy + face_h / 2], fill=skin)
    draw.ellipse([cx - face_w / 2 - 14 * s, cy - 15 * s, cx - face_w / 2 + 12 * s, cy + 30 * s], fill=shade)  # ears
    draw.ellipse([cx + face_w / 2 - 12 * s, cy - 15 * s, cx + face_w / 2 + 14 * s, cy + 30 * s], fill=shade)
    # hair on top
    draw.chord(
        [cx - face_w / 2 - 8 * s, cy - face_h / 2 - 24 * s, cx + face_w / 2 + 8 * s, cy + face_h * 0.1],
        start=180,
        end=360,
        fill=hair,
    )
    if persona.gender == "m" and age > 45 and rng.random() < 0.4:  # receding hairline
        draw.ellipse([cx - face_w * 0.3, cy - face_h / 2 - 5 * s, cx + face_w * 0.3, cy - face_h * 0.25], fill=skin)
    # eyes, brows, nose, mouth
    eye_y = cy - face_h * 0.02
    eye_dx = face_w * rng.uniform(0.19, 0.23)
    iris = rng.choice([(60, 40, 25), (40, 80, 120), (70, 100, 60), (30, 25, 20)])
    for side_sign in (-1, 1):
        ex = cx + side_sign * eye_dx
        draw.ellipse([ex - 17 * s, eye_y - 8 * s, ex + 17 * s, eye_y + 8 * s], fill=(250, 250, 250))
        draw.ellipse([ex - 7 * s, eye_y - 7 * s, ex + 7 * s, eye_y + 7 * s], fill=iris)
        draw.ellipse([ex - 3 * s, eye_y - 3 * s, ex + 3 * s, eye_y + 3 * s], fill=(10, 10, 10))
        brow_y = eye_y - rng.uniform(22, 28) * s
        draw.line(
            [ex - 20 * s, brow_y + 3 * s, ex + 20 * s, brow_y - 2 * s * side_sign],
            fill=hair,
            width=max(2, int((7 if persona.gender == "m" else 4) * s)),
        )
        if age >= 40:  # crow's feet
            for k in range(2 if age < 60 else 3):
                x0 = ex + side_sign * 22 * s
                draw.line(
                    [x0, eye_y + k * 5 * s, x0 + side_sign * 10 * s, eye_y + k * 7 * s - 4 * s], fill=shade, width=1
                )
    draw.line(
        [cx, eye_y + 10 * s, cx - 8 * s, cy + face_h * 0.18, cx + 4 * s, cy + face_h * 0.2],
        fill=shade,
        width=max(2, int(3 * s)),
    )
    mouth_y = cy + face_h * 0.31
    lips = (170, 90, 90) if persona.gender == "f" else tuple(int(c * 0.7) for c in skin)
    draw.chord([cx - 30 * s, mouth_y - 12 * s, cx + 30 * s, mouth_y + 14 * s], start=0, end=180, fill=lips)
    if persona.gender == "m" and rng.random() < 0.35:  # beard
        draw.chord(
            [cx - face_w / 2 + 6 * s, cy, cx + face_w / 2 - 6 * s, cy + face_h / 2 + 6 * s],
            start=20,
            end=160,
            fill=hair,
        )
        draw.chord([cx - 30 * s, mouth_y - 12 * s, cx + 30 * s, mouth_y + 14 * s], start=0, end=180, fill=lips)
    if age >= 50:  # forehead lines
        for k in range(2):
            y = cy - face_h * 0.3 + k * 9 * s
            draw.arc([cx - 40 * s, y, cx + 40 * s, y + 14 * s], start=200, end=340, fill=shade, width=1)
    img = img.filter(ImageFilter.GaussianBlur(radius=0.8 * s))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 4.0, (side, side, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def _variation(base: Image.Image, rng: random.Random, side: int) -> Image.Image:
    """The same face re-framed and re-lit: zoom, shift, tilt, mirror, light and colour cast."""
    img = ImageOps.mirror(base) if rng.random() < 0.5 else base
    img = img.rotate(
        rng.uniform(-7, 7), resample=Image.Resampling.BICUBIC, expand=False, fillcolor=img.getpixel((2, 2))
    )
    w, h = img.size
    zoom = rng.uniform(0.72, 0.95)
    cw, ch = int(w * zoom), int(h * zoom)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((left, top, left + cw, top + ch)).resize((side, side), Image.Resampling.BILINEAR)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.15))
    arr = np.asarray(img, np.float32)
    cast = np.array([rng.uniform(0.9, 1.1), rng.uniform(0.93, 1.07), rng.uniform(0.9, 1.1)], np.float32)
    return Image.fromarray(np.clip(arr * cast, 0, 245).astype(np.uint8))  # never pure white: gutters stay distinct


class OfflineImageProvider:
    name = "offline"

    def __init__(self, side: int = SIDE):
        self.side = side

    @classmethod
    def from_settings(cls, settings: Settings) -> OfflineImageProvider:
        return cls(settings.offline_image_side)

    def check(self) -> tuple[bool, str]:
        return True, "offline procedural portraits: no network needed"

    def generate_base(self, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        return _encode_png(draw_portrait(persona, seed, self.side))

    def edit_face(self, face: bytes, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        """The library face, square-cropped and given this persona's setting (light and colour)."""
        img = ImageOps.fit(decode_image(face), (self.side, self.side), Image.Resampling.LANCZOS)
        return _encode_png(_variation(img, random.Random(seed), self.side))

    def make_grid(self, base: bytes, prompt: str, *, seed: int) -> bytes:
        rng = random.Random(seed)
        source = decode_image(base)
        tile = self.side
        total = 2 * tile + 3 * GUTTER
        grid = Image.new("RGB", (total, total), (255, 255, 255))
        for i in range(4):
            x = GUTTER + (i % 2) * (tile + GUTTER)
            y = GUTTER + (i // 2) * (tile + GUTTER)
            grid.paste(_variation(source, rng, tile), (x, y))
        return _encode_png(grid)
