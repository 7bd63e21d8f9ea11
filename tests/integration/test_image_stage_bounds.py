"""The image stage stores a provider's base image only once it decodes whole within the bounds (issue 20, item 9):
a cut-off file or a decompression bomb fails its persona with the reason, and nothing of it is written."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from db.models import PersonaStatus
from db.session import Database
from pipeline.core.domain import PersonaDraft
from pipeline.providers.registry import ProviderCache, Providers
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def cut_off() -> bytes:
    """A photo whose header is whole and whose pixel data stops halfway (as a reply cut off mid-image)."""
    whole = _png(Image.effect_noise((256, 256), 64).convert("RGB"))
    return whole[: len(whole) // 2]


def bomb() -> bytes:
    """9,000 x 9,000 pixels (over the 64,000,000 limit, under Pillow's refusal at twice it) in a small file."""
    return _png(Image.new("1", (9_000, 9_000)))


class _BadBases(ProviderCache):
    """The offline providers, except that every base selfie is ``data``."""

    def __init__(self, settings: Any, data: bytes):
        super().__init__(settings)
        self.data = data

    def for_names(self, persona: str, image: str) -> Providers:
        base = super().for_names(persona, image)
        outer = self

        class Image:
            name = "bad-bases"

            def generate_base(self, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
                return outer.data

            def edit_face(self, face: bytes, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
                return outer.data

            def make_grid(self, image: bytes, prompt: str, *, seed: int) -> bytes:
                return base.image.make_grid(image, prompt, seed=seed)

        return Providers(base.persona, base.prompt, Image())


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # as in the app (see core.images)
@pytest.mark.parametrize(("make", "reason"), [(cut_off, "not a readable image"), (bomb, "too large")],
                         ids=["cut-off", "bomb"])
def test_a_base_that_does_not_decode_is_never_stored(
    database: Database, db_url: str, tmp_path: Path, make: Any, reason: str
) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    task_id = submit(database, settings, make_user(database), count=2, images=4)
    run_worker(database, storage, settings, providers=_BadBases(settings, make()))
    results = results_of(database, task_id)
    assert len(results) == 2
    for row in results:
        assert row.status == PersonaStatus.FAILED.value and reason in (row.error or ""), (row.status, row.error)
        assert row.base_image_url is None
    stored = [p.name for p in (tmp_path / "media").rglob("*") if p.is_file()]
    assert not [name for name in stored if name.startswith("base")], stored
