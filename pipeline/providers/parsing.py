"""A robust reader of persona replies from LLM flows.

The original stopped at the first unexpected character. Replies really come as several JSON objects one
after another, an array, a ``{"personas": [...]}`` wrapper, fenced in Markdown, with prose around them, with
``bios`` as a JSON *string* or an object, with trailing commas or cut off mid-object. Every piece that looks
like JSON is tried; what cannot be used is counted and described in ``PersonaBatch.problems`` — never
silently dropped, never an exception that loses the rest of the batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pipeline.core.domain import PersonaBatch
from pipeline.core.errors import ProviderError
from pipeline.core.personas import flatten_persona, normalise_persona

_DECODER = json.JSONDecoder()
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_PERSONA_KEYS = {"firstname", "first_name", "firstName", "lastname", "last_name", "lastName", "bios"}
MAX_PROBLEMS = 20


def _matching_end(text: str, start: int) -> int | None:
    """Index just past the bracket closing the one at ``start`` (string-aware), or None if it never closes."""
    stack: list[str] = []
    in_string = escaped = False
    pairs = {"{": "}", "[": "]"}
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in "}]":
            if not stack or stack[-1] != ch:
                return None
            stack.pop()
            if not stack:
                return i + 1
    return None


def iter_json_values(text: str, problems: list[str] | None = None) -> Iterator[Any]:
    """Every top-level JSON object or array in ``text``, in order; broken ones are reported in ``problems``."""
    i, n = 0, len(text)
    while i < n:
        brace, bracket = text.find("{", i), text.find("[", i)
        candidates = [p for p in (brace, bracket) if p >= 0]
        if not candidates:
            return
        start = min(candidates)
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            close = _matching_end(text, start)
            segment = text[start:close] if close else text[start:]
            repaired = _TRAILING_COMMA.sub(r"\1", segment)
            try:
                value = json.loads(repaired) if close else None
            except json.JSONDecodeError:
                value = None
            if value is None:
                if '"' in segment and problems is not None:
                    reason = "cut off before its end" if close is None else "not valid JSON"
                    problems.append(f"a JSON fragment at character {start} is {reason}")
                if close is None:
                    if text[start] == "[":  # an unclosed array may still hold whole objects: look inside
                        i = start + 1
                        continue
                    return
                i = close
                continue
            end = close or len(text)
        yield value
        i = end


def _persona_objects(value: Any) -> Iterator[Any]:
    """Persona-like objects inside a decoded value (arrays and wrapper objects are opened)."""
    if isinstance(value, list):
        for item in value:
            yield from _persona_objects(item)
    elif isinstance(value, dict):
        if _PERSONA_KEYS & value.keys():
            yield value
            return
        lists = [v for v in value.values() if isinstance(v, list)]
        if lists:
            for item in lists:
                yield from _persona_objects(item)
        else:
            yield value  # an object that is not a persona: rejected below with a reason
    else:
        yield value


def _bios(value: Any, problems: list[str]) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        for candidate in iter_json_values(text):
            if isinstance(candidate, dict):
                return candidate
        problems.append("a persona's bios are not JSON; kept without them")
    return None


def personas_from_text(text: str) -> PersonaBatch:
    """All usable personas in an LLM reply, with the count and reasons of the unusable pieces."""
    batch = PersonaBatch()
    problems: list[str] = []
    for value in iter_json_values(str(text or ""), problems):
        for obj in _persona_objects(value):
            if not isinstance(obj, dict):
                batch.rejected += 1
                problems.append(f"a {type(obj).__name__} where a persona object was expected")
                continue
            try:
                fields = flatten_persona(obj, _bios(obj.get("bios"), problems))
                batch.personas.append(normalise_persona(fields))
            except ValueError as exc:
                batch.rejected += 1
                problems.append(f"a persona was rejected: {exc}")
    batch.rejected += sum(1 for p in problems if p.startswith("a JSON fragment"))
    if not batch.personas and not problems and str(text or "").strip():
        batch.rejected += 1
        problems.append("the reply holds no JSON object")
    batch.problems = problems[:MAX_PROBLEMS]
    return batch


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (fences and prose tolerated); ``ValueError`` when there is none."""
    for value in iter_json_values(str(text or "")):
        if isinstance(value, dict):
            return value
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    return item
    raise ValueError("no JSON object in the reply")


def final_prompt(text: str, provider: str) -> str:
    """The ``final_prompt`` of a grid-prompt reply; a retryable ``ProviderError`` naming ``provider`` if absent."""
    try:
        prompt = parse_json_object(text).get("final_prompt")
    except ValueError:
        raise ProviderError(provider, "the grid-prompt reply holds no JSON object", retryable=True) from None
    if not isinstance(prompt, str) or not prompt.strip():
        raise ProviderError(provider, "the grid-prompt reply has no final_prompt", retryable=True)
    return prompt.strip()
