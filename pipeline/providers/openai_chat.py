"""Any OpenAI-compatible chat endpoint as the persona provider and the grid-prompt provider.

``POST {OPENAI_BASE_URL}/chat/completions`` with structured output (``response_format`` ``json_schema``).
The four bio prompts become the system instructions; the reply uses the same persona fields as Flowise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.core.config import DEFAULT_OPENAI_BASE_URL, Settings
from pipeline.core.domain import BIO_PLATFORMS, GENDERS, PersonaBatch, PersonaDraft, PersonaRequest
from pipeline.core.errors import PipelineError, ProviderError, RefusalError
from pipeline.providers.flowise import request_constraints
from pipeline.providers.http import HttpClient, HttpProvider, bearer_headers, join_url, reply_usage, report_usage
from pipeline.providers.parsing import final_prompt, personas_from_text
from pipeline.providers.prompts import person_data_json

PROVIDER = "openai-chat"
CHECK_TIMEOUT_SECONDS = 10.0
SEED_MODULUS = 2**31 - 1
PLATFORM_LABELS = {"facebook": "Facebook", "instagram": "Instagram", "x": "X (Twitter)", "tiktok": "TikTok"}
_DETAILS = "age job_title workplace edu_establishment edu_study current_city current_state prev_city prev_state about"
BIO_FIELDS = (*(f"{p}_bio" for p in BIO_PLATFORMS), *_DETAILS.split())  # the keys of a persona's ``bios`` object


def _strict_object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": list(properties), "properties": properties}


PERSONA_SCHEMA = _strict_object(
    {
        "firstname": {"type": "string"},
        "lastname": {"type": "string"},
        "gender": {"type": "string", "enum": list(GENDERS)},
        "ethnicity": {"type": "string"},
        "bios": _strict_object({k: {"type": "integer" if k == "age" else "string"} for k in BIO_FIELDS}),
    }
)
PERSONAS_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "personas",
        "strict": True,
        "schema": _strict_object({"personas": {"type": "array", "items": PERSONA_SCHEMA}}),
    },
}
GRID_PROMPT_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "grid_prompt",
        "strict": True,
        "schema": _strict_object({"final_prompt": {"type": "string"}}),
    },
}
GRID_PROMPT_SYSTEM = (
    "You write one prompt for an image-editing model. The model receives a selfie of a person and must return "
    "a 2x2 grid of four different amateur photos of that same person, separated by thin white gutters: same "
    "face, identity and age in all four, each photo a different everyday scene, outfit, framing and light that "
    "fits the person's life, low-production phone-camera look, no text or watermarks. Do not repeat any idea "
    'already used. Reply with JSON only: {"final_prompt": "..."}.'
)


def persona_messages(request: PersonaRequest) -> list[dict[str, str]]:
    """The system and user messages of one persona batch."""
    rules = "\n".join(
        f"- {PLATFORM_LABELS[p]} bio (field {p}_bio): {request.bio_prompts.get(f'bio_prompt_{p}', '').strip()}"
        for p in BIO_PLATFORMS
    )
    system = (
        "You write realistic synthetic social-media personas for research. Reply with JSON only, as "
        '{"personas": [...]}. Each persona has firstname, lastname, gender (m, f or other), ethnicity, and bios: '
        "an object with " + ", ".join(BIO_FIELDS) + " (age is a whole number). "
        "Names must be distinct. Write the bios following these instructions:\n" + rules
    )
    user = [
        f"Population description: {request.description.strip()}",
        f"Language of the bios and the about text: {request.language}",
        f"Number of personas to write: {request.count}",
    ]
    if constraints := request_constraints(request):
        user.append(constraints)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(user)}]


def grid_prompt_messages(persona: PersonaDraft, history: Sequence[str]) -> list[dict[str, str]]:
    """The system and user messages asking for one grid prompt, listing the ideas already used."""
    user = f"The person (JSON): {person_data_json(persona)}"
    used = [h.strip() for h in history if h and h.strip()]
    if used:
        user += "\n\nIdeas already used (do not repeat them):\n" + "\n".join(f"- {h}" for h in used)
    return [{"role": "system", "content": GRID_PROMPT_SYSTEM}, {"role": "user", "content": user}]


def check_models(client: HttpClient, base_url: str, model: str | None) -> tuple[bool, str]:
    """``GET {base}/models``: reachable, key accepted and ``model`` offered (when the endpoint lists models)."""
    try:
        reply = client.request("GET", join_url(base_url, "models"), attempts=1, timeout=CHECK_TIMEOUT_SECONDS)
    except PipelineError as exc:
        return False, str(exc)
    ids = {str(m.get("id")) for m in reply.get("data") or [] if isinstance(m, dict)}
    if model and ids and model not in ids:
        return False, f"reachable, but model {model!r} is not offered by {base_url}"
    return True, f"reachable; model {model} available" if model else "reachable"


class OpenAIHttpProvider(HttpProvider):
    """Any provider of an OpenAI-compatible API: a bearer key when one is set."""

    name = "openai"

    @classmethod
    def headers_for(cls, settings: Settings) -> dict[str, str]:
        return bearer_headers(settings.openai_api_key)


class _OpenAIChat(OpenAIHttpProvider):
    provider = PROVIDER

    def _require(self) -> None:
        self.settings.require("OPENAI_CHAT_MODEL")
        if self.settings.openai_base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL:
            self.settings.require("OPENAI_API_KEY")  # local OpenAI-compatible servers may need none

    def _complete(self, messages: list[dict[str, str]], response_format: dict[str, Any], seed: int) -> str:
        """The text of the first choice; a refusal raises ``RefusalError``."""
        self._require()
        body = {
            "model": self.settings.openai_chat_model,
            "messages": messages,
            "response_format": response_format,
            "seed": seed % SEED_MODULUS,
        }
        reply = self.client.request("POST", join_url(self.settings.openai_base_url, "chat/completions"), json=body)
        report_usage(reply_usage(reply))  # the tokens billed, as the reply counts them
        try:
            choice = reply["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise ProviderError(PROVIDER, "the reply has no choices[0].message", retryable=True) from None
        if message.get("refusal") or choice.get("finish_reason") == "content_filter":
            raise RefusalError(PROVIDER, "the model refused the request")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ProviderError(PROVIDER, "the reply has no message content", retryable=True)
        return content

    def check(self) -> tuple[bool, str]:
        """``GET {OPENAI_BASE_URL}/models`` (spends no generation credits). Never raises."""
        try:
            self._require()
        except PipelineError as exc:
            return False, str(exc)
        return check_models(self.client, self.settings.openai_base_url, self.settings.openai_chat_model)


class OpenAIChatPersonaProvider(_OpenAIChat):
    """A batch of personas as structured JSON output."""

    def generate(self, request: PersonaRequest) -> PersonaBatch:
        return personas_from_text(self._complete(persona_messages(request), PERSONAS_FORMAT, request.seed))


class OpenAIChatPromptProvider(_OpenAIChat):
    """One grid prompt as ``{"final_prompt": ...}``, avoiding the ideas already used."""

    def grid_prompt(self, persona: PersonaDraft, history: Sequence[str], *, seed: int) -> str:
        return final_prompt(self._complete(grid_prompt_messages(persona, history), GRID_PROMPT_FORMAT, seed), PROVIDER)
