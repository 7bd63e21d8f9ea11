"""OpenAI images: the base selfie (``/images/generations``) and face/grid edits (``/images/edits``).

Edits upload the image as the multipart field ``image[]`` with its true file name extension and content type
(detected from its magic bytes), as the original should have. Replies carry ``data[0].b64_json``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pipeline.core.domain import PersonaDraft
from pipeline.core.errors import PipelineError, ProviderError
from pipeline.core.keys import content_type_for, extension_for
from pipeline.core.replies import MAX_IMAGE_REPLY_BYTES
from pipeline.providers.http import join_url, reply_usage, report_usage
from pipeline.providers.openai_chat import OpenAIHttpProvider, check_models
from pipeline.providers.prompts import grid_prompt_wrapper

PROVIDER = "openai-images"
BASE_SIZE = "auto"
GRID_SIZE = "1024x1024"  # square, so the 2x2 split gives four equal tiles


def upload(data: bytes, stem: str = "image") -> tuple[str, bytes, str]:
    """The ``(file name, bytes, content type)`` of an upload, named and typed after its real format."""
    ext = extension_for(data)
    if ext == "bin":
        raise ProviderError(PROVIDER, "the image to edit is not a PNG, JPEG or WebP file", retryable=False)
    name = f"{stem}.{ext}"
    return name, data, content_type_for(name)


class OpenAIImageProvider(OpenAIHttpProvider):
    """Base selfies and 2x2 grids from an OpenAI image model (the seed is not supported by the API)."""

    provider = PROVIDER
    max_reply_bytes = MAX_IMAGE_REPLY_BYTES  # a reply carries the image in base64

    def _url(self, path: str) -> str:
        self.settings.require("OPENAI_API_KEY", "OPENAI_IMAGE_MODEL")
        return join_url(self.settings.openai_base_url, path)

    def generate_base(self, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        body = {"model": self.settings.openai_image_model, "prompt": prompt, "size": BASE_SIZE, "n": 1}
        return self._image(self.client.request("POST", self._url("images/generations"), json=body))

    def edit_face(self, face: bytes, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        return self._edit(face, prompt, BASE_SIZE, stem="face")

    def make_grid(self, base: bytes, prompt: str, *, seed: int) -> bytes:
        if "grid" not in prompt.lower():  # a bare scene idea: say that four tiles in a 2x2 grid are wanted
            prompt = grid_prompt_wrapper(prompt)
        return self._edit(base, prompt, GRID_SIZE, stem="base")

    def _edit(self, image: bytes, prompt: str, size: str, *, stem: str) -> bytes:
        url = self._url("images/edits")
        fields = {"prompt": prompt, "model": self.settings.openai_image_model, "n": "1", "size": size}
        reply = self.client.request("POST", url, data=fields, files=[("image[]", upload(image, stem))])
        return self._image(reply)

    @staticmethod
    def _image(reply: dict[str, Any]) -> bytes:
        report_usage(reply_usage(reply))  # gpt-image models report the tokens billed; others none
        try:
            encoded = reply["data"][0]["b64_json"]
            data = base64.b64decode(encoded, validate=True)
        except (KeyError, IndexError, TypeError, binascii.Error, ValueError):
            raise ProviderError(PROVIDER, "the reply has no data[0].b64_json image", retryable=True) from None
        if extension_for(data) == "bin":
            raise ProviderError(PROVIDER, "the reply's image is not a PNG, JPEG or WebP file", retryable=True)
        return data

    def check(self) -> tuple[bool, str]:
        """``GET {OPENAI_BASE_URL}/models`` (spends no credits). Never raises."""
        try:
            self.settings.require("OPENAI_API_KEY", "OPENAI_IMAGE_MODEL")
        except PipelineError as exc:
            return False, str(exc)
        return check_models(self.client, self.settings.openai_base_url, self.settings.openai_image_model)
