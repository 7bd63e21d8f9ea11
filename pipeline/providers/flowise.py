"""Flowise agent flows: the persona flow (a batch of personas) and the prompt flow (one grid prompt).

Wire format (DESIGN §4): ``POST {FLOWISE_BASE_URL}/api/v1/prediction/{flow_id}`` with a bearer key and
``{"question": "go", "overrideConfig": {"startState": {"startAgentflow_0": [{"key": K, "value": V}, ...]}}}``.
The reply's ``text`` holds the flow's output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.core.config import Settings
from pipeline.core.domain import BIO_PLATFORMS, PersonaBatch, PersonaDraft, PersonaRequest
from pipeline.core.errors import PipelineError, ProviderError
from pipeline.providers.http import HttpClient, HttpProvider, bearer_headers, join_url
from pipeline.providers.parsing import final_prompt, personas_from_text
from pipeline.providers.prompts import person_data_json

PROVIDER = "flowise"
START_NODE = "startAgentflow_0"
CHECK_TIMEOUT_SECONDS = 10.0
MAX_EXCLUDED_NAMES = 200


def override_payload(values: Mapping[str, str]) -> dict[str, Any]:
    """The prediction body that sets the flow's start state to ``values`` (in order)."""
    state = [{"key": key, "value": value} for key, value in values.items()]
    return {"question": "go", "overrideConfig": {"startState": {START_NODE: state}}}


def describe_slot(index: int, slot: Mapping[str, Any]) -> str:
    """One slot as plain English, e.g. ``Persona 2: gender f, age 25–34, ethnicity Black``."""
    parts = []
    if slot.get("gender"):
        parts.append(f"gender {slot['gender']}")
    low, high = slot.get("age_min"), slot.get("age_max")
    if low is not None and high is not None:
        parts.append(f"age {low}–{high}" if low != high else f"age {low}")
    if slot.get("ethnicity"):
        parts.append(f"ethnicity {slot['ethnicity']}")
    if slot.get("locale"):
        parts.append(f"from the {slot['locale']} locale")
    return f"Persona {index}: " + ", ".join(parts) if parts else ""


def request_constraints(request: PersonaRequest) -> str:
    """The excluded names and per-persona slots of ``request`` as plain-English sentences (may be empty)."""
    sentences = []
    if request.exclude_names:
        names = list(dict.fromkeys(request.exclude_names))[-MAX_EXCLUDED_NAMES:]
        sentences.append("Do not reuse these names: " + ", ".join(names) + ".")
    slots = [text for i, slot in enumerate(request.slots, 1) if (text := describe_slot(i, slot))]
    if slots:
        sentences.append("Match these demographics exactly, one persona each. " + "; ".join(slots) + ".")
    return " ".join(sentences)


class _FlowiseFlow(HttpProvider):
    """What both flows share: the client, the configuration check and the reachability check."""

    name = PROVIDER
    provider = PROVIDER
    flow_variable = ""  # the setting that holds this flow's id

    def __init__(self, settings: Settings, client: HttpClient):
        super().__init__(settings, client)
        self.flow_id = getattr(settings, self.flow_variable.lower())

    @classmethod
    def headers_for(cls, settings: Settings) -> dict[str, str]:
        return bearer_headers(settings.flowise_api_key)

    def _require(self) -> None:
        self.settings.require("FLOWISE_BASE_URL", self.flow_variable)

    def _predict(self, values: Mapping[str, str]) -> str:
        self._require()
        url = join_url(str(self.settings.flowise_base_url), f"api/v1/prediction/{self.flow_id}")
        reply = self.client.request("POST", url, json=override_payload(values))
        text = reply.get("text")
        if not isinstance(text, str):
            raise ProviderError(PROVIDER, "the reply has no text", retryable=True)
        return text

    def check(self) -> tuple[bool, str]:
        """Reachability (``GET /api/v1/ping``) and, when the key allows it, that the flow exists. Never raises."""
        try:
            self._require()
            base = str(self.settings.flowise_base_url)
            status = self.client.get_status(join_url(base, "api/v1/ping"), timeout=CHECK_TIMEOUT_SECONDS)
            if status != 200:
                return False, f"{base} answered HTTP {status} to /api/v1/ping"
            flow = self.client.get_status(
                join_url(base, f"api/v1/chatflows/{self.flow_id}"), timeout=CHECK_TIMEOUT_SECONDS
            )
        except PipelineError as exc:
            return False, str(exc)
        if flow == 404:
            return False, f"reachable, but flow {self.flow_id} ({self.flow_variable}) does not exist"
        if flow in (401, 403):
            return True, f"reachable; flow {self.flow_id} not verified (the API key may not list flows)"
        if flow >= 400:
            return False, f"reachable, but reading flow {self.flow_id} answered HTTP {flow}"
        return True, f"reachable; flow {self.flow_id} found"


class FlowisePersonaProvider(_FlowiseFlow):
    """A batch of personas from the Flowise persona flow."""

    flow_variable = "FLOWISE_PERSONA_FLOW_ID"

    def values(self, request: PersonaRequest) -> dict[str, str]:
        """The start-state values of the persona flow for ``request``."""
        description = request.description.strip()
        if constraints := request_constraints(request):
            description = f"{description}\n\n{constraints}"
        values = {
            "requested_amount": str(request.count),
            "persona_description": description,
            "bio_language": request.language,
        }
        for platform in BIO_PLATFORMS:
            values[f"instructions_{platform}"] = request.bio_prompts.get(f"bio_prompt_{platform}", "")
        return values

    def generate(self, request: PersonaRequest) -> PersonaBatch:
        return personas_from_text(self._predict(self.values(request)))


class FlowisePromptProvider(_FlowiseFlow):
    """One grid prompt from the Flowise prompt flow, avoiding the ideas already used for this persona."""

    flow_variable = "FLOWISE_PROMPT_FLOW_ID"

    def values(self, persona: PersonaDraft, history: Sequence[str]) -> dict[str, str]:
        values = {"person_data": person_data_json(persona)}
        used = [h for h in history if h and h.strip()]
        if used:
            values["prompts_history"] = "\n".join(used)
        return values

    def grid_prompt(self, persona: PersonaDraft, history: Sequence[str], *, seed: int) -> str:
        return final_prompt(self._predict(self.values(persona, history)), PROVIDER)
