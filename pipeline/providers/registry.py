"""Providers picked by name from registries; unknown names fail listing the valid ones."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Settings
from pipeline.core.errors import ConfigError
from pipeline.providers.base import ImageProvider, PersonaProvider, PromptProvider

# name -> "module:Class"; imported lazily so an unused provider's dependencies are never loaded.
PERSONA_PROVIDERS: dict[str, str] = {
    "offline": "pipeline.providers.offline_personas:OfflinePersonaProvider",
    "flowise": "pipeline.providers.flowise:FlowisePersonaProvider",
    "openai": "pipeline.providers.openai_chat:OpenAIChatPersonaProvider",
}
# The grid-prompt provider follows the persona provider.
PROMPT_PROVIDERS: dict[str, str] = {
    "offline": "pipeline.providers.offline_personas:OfflinePromptProvider",
    "flowise": "pipeline.providers.flowise:FlowisePromptProvider",
    "openai": "pipeline.providers.openai_chat:OpenAIChatPromptProvider",
}
IMAGE_PROVIDERS: dict[str, str] = {
    "offline": "pipeline.providers.offline_images:OfflineImageProvider",
    "openai": "pipeline.providers.openai_images:OpenAIImageProvider",
}
_REGISTRIES = {"persona": PERSONA_PROVIDERS, "prompt": PROMPT_PROVIDERS, "image": IMAGE_PROVIDERS}
_ENV_NAMES = {"persona": "PERSONA_PROVIDER", "prompt": "PERSONA_PROVIDER", "image": "IMAGE_PROVIDER"}


@dataclass(frozen=True)
class Providers:
    persona: PersonaProvider
    prompt: PromptProvider
    image: ImageProvider


def check_provider_names(persona: str, image: str) -> None:
    """Raise ``ConfigError`` for an unknown provider name, listing the valid ones."""
    for kind, name in (("persona", persona), ("image", image)):
        registry = _REGISTRIES[kind]
        if name not in registry:
            valid = ", ".join(sorted(registry))
            raise ConfigError(f"unknown {kind} provider {name!r} ({_ENV_NAMES[kind]}); valid ones are: {valid}")


def _load(kind: str, name: str, settings: Settings) -> Any:
    registry = _REGISTRIES[kind]
    if name not in registry:
        raise ConfigError(f"unknown {kind} provider {name!r}; valid ones are: {', '.join(sorted(registry))}")
    module_name, class_name = registry[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_settings(settings)


class ProviderCache:
    """Provider instances shared by all tasks of a process, built on first use per name."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._instances: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, name: str) -> Any:
        with self._lock:
            key = (kind, name)
            if key not in self._instances:
                self._instances[key] = _load(kind, name, self.settings)
            return self._instances[key]

    def for_names(self, persona: str, image: str) -> Providers:
        return Providers(self.get("persona", persona), self.get("prompt", persona), self.get("image", image))

    def for_snapshot(self, snapshot: dict[str, Any] | None) -> Providers:
        """The providers a task's config snapshot names (the configured ones where it names none)."""
        names = (snapshot or {}).get("providers", {})
        return self.for_names(names.get("persona", self.settings.persona_provider),
                              names.get("image", self.settings.image_provider))
