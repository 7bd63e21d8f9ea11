"""A robust reader of persona replies from LLM flows.

The original stopped at the first unexpected character. Replies really come as several JSON objects one
after another, an array, a ``{"personas": [...]}`` wrapper, fenced in Markdown, with prose around them, with
``bios`` as a JSON *string* or an object, with trailing commas or cut off mid-object. Every piece that looks
like JSON is tried; what cannot be used is counted and described in ``PersonaBatch.problems`` — never
silently dropped, never an exception that loses the rest of the batch.

The reply is untrusted, so the work is bounded: a reply is read up to ``MAX_REPLY_CHARS``, a value nested
deeper than ``MAX_DEPTH`` is refused (Python's decoder would otherwise recurse until ``RecursionError``), an
integer of more than ``MAX_INT_DIGITS`` digits is read as a float (``int()`` refuses 4,300 digits), and each
bracket is matched at most once (a cut-off reply of many unclosed arrays is not scanned again and again).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pipeline.core.domain import PersonaBatch
from pipeline.core.errors import ProviderError
from pipeline.core.personas import flatten_persona, normalise_persona

MAX_REPLY_CHARS = 2_000_000  # ten personas of a dozen 5,000-character fields are well under a megabyte
MAX_DEPTH = 20  # a persona reply needs 4 levels ({"personas": [{"bios": {...}}]}); room for odd wrappers
MAX_INT_DIGITS = 30
SCAN_BUDGET_PER_CHAR = 4  # tokens scanned per character of the reply: a normal reply needs one or two passes


def _parse_int(digits: str) -> int | float:
    """A JSON integer; a longer one than any field needs becomes a float (``inf`` if huge), never an error."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else float(digits)


_DECODER = json.JSONDecoder(parse_int=_parse_int)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_OPENING = re.compile(r"[{\[]")
# A string (its end quote may be missing: cut off) or a bracket; a string is skipped in one step.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_PERSONA_KEYS = {"firstname", "first_name", "firstName", "lastname", "last_name", "lastName", "bios"}
MAX_PROBLEMS = 20


class _TooDeep(ValueError):
    """A JSON value nested deeper than ``MAX_DEPTH``."""


class _TooCostly(Exception):
    """The reply's brackets took more than their budget to match (a crafted, not a cut-off, reply)."""


class _Brackets:
    """Where the brackets of one text close (string-aware), each bracket matched at most once.

    A scan from one bracket records the answer of every bracket it opens on the way: an inner bracket is reached
    outside a string and sees the same characters after it. A bracket inside a string of every earlier scan needs
    a scan of its own; the total work is bounded by a budget of tokens (``_TooCostly``).
    """

    def __init__(self, text: str):
        self.text = text
        self.known: dict[int, int | None] = {}
        self.budget = SCAN_BUDGET_PER_CHAR * len(text) + 1000

    def end(self, start: int) -> int | None:
        """Index just past the bracket closing the one at ``start``, or None if it never closes."""
        if start in self.known:
            return self.known[start]
        text, stack = self.text, []
        for token in _TOKEN.finditer(text, start):
            self.budget -= 1
            if self.budget < 0:
                raise _TooCostly
            at = token.start()
            ch = text[at]
            if ch == '"':
                continue
            if ch in "{[":
                stack.append(("}" if ch == "{" else "]", at))
                continue
            if not stack or stack[-1][0] != ch:
                break  # a mismatched close: this bracket and those still open around it never close
            opened = stack.pop()[1]
            self.known[opened] = at + 1
            if not stack:
                return at + 1
        for _closer, opened in stack:
            self.known[opened] = None
        return None


def _check_depth(value: Any) -> Any:
    """``value`` itself; ``_TooDeep`` when it nests deeper than ``MAX_DEPTH`` (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise _TooDeep
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return value


def _decode(segment: str) -> Any:
    """The one JSON value ``segment`` holds, its depth bounded: ``_TooDeep``, or ``ValueError`` if broken."""
    try:
        value = _DECODER.decode(segment)
    except RecursionError:  # Python's decoder recurses once per level
        raise _TooDeep from None
    return _check_depth(value)


def iter_json_values(text: str, problems: list[str] | None = None) -> Iterator[Any]:
    """Every top-level JSON object or array in ``text``, in order; broken ones are reported in ``problems``."""
    def report(start: int, reason: str) -> None:
        if problems is not None:
            problems.append(f"a JSON fragment at character {start} is {reason}")

    if len(text) > MAX_REPLY_CHARS:
        report(MAX_REPLY_CHARS, f"past the reply's limit of {MAX_REPLY_CHARS:,} characters; the rest was not read")
        text = text[:MAX_REPLY_CHARS]
    brackets = _Brackets(text)
    inside_cut_off = False  # inside an unclosed array: its cut-off is reported once, not for each piece in it
    i = 0
    while (found := _OPENING.search(text, i)) is not None:
        start = found.start()
        try:
            close = brackets.end(start)
        except _TooCostly:
            report(start, "too malformed to read further")
            return
        if close is None:
            # Without a quote up to the end it is prose in brackets ("[citation needed"), not a broken object.
            if not inside_cut_off and text.find('"', start) >= 0:
                report(start, "cut off before its end")
            if text[start] != "[":
                return
            inside_cut_off = True  # an unclosed array may still hold whole objects: look inside
            i = start + 1
            continue
        i = close
        segment = text[start:close]  # the fragments decoded are disjoint: each character is copied once
        try:
            try:
                value = _decode(segment)
            except _TooDeep:
                raise
            except ValueError:
                value = _decode(_TRAILING_COMMA.sub(r"\1", segment))
        except _TooDeep:
            report(start, f"nested more than {MAX_DEPTH} levels deep")
            continue
        except ValueError:
            if '"' in segment:  # without a quote: prose in brackets, not a broken object
                report(start, "not valid JSON")
            continue
        yield value


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
