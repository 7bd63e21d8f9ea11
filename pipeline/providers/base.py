"""The provider protocols. Providers are small classes; vendor errors are wrapped in ``ProviderError``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pipeline.core.domain import PersonaBatch, PersonaDraft, PersonaRequest


class PersonaProvider(Protocol):
    """Generates one batch of personas."""

    name: str

    def generate(self, request: PersonaRequest) -> PersonaBatch: ...


class PromptProvider(Protocol):
    """Writes the prompt for one 2x2 grid of variations, avoiding ideas already used."""

    name: str

    def grid_prompt(self, persona: PersonaDraft, history: Sequence[str], *, seed: int) -> str: ...


class ImageProvider(Protocol):
    """Makes the base selfie and the 2x2 grids. Returns encoded image bytes (PNG or JPEG)."""

    name: str

    def generate_base(self, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        """A new base selfie from a text prompt."""
        ...

    def edit_face(self, face: bytes, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
        """A base selfie made by editing a reference face from the face library."""
        ...

    def make_grid(self, base: bytes, prompt: str, *, seed: int) -> bytes:
        """A 2x2 grid of four variations of the person in ``base``."""
        ...
