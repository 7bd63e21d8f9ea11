"""Loopback fake Flowise and OpenAI servers (real HTTP on 127.0.0.1, one thread per request).

Each fake records every request in ``.requests`` and answers from a FIFO script of behaviours; when the
script is empty it answers normally, like the real service would::

    with FakeFlowise() as flowise:
        flowise.script(rate_limited(retry_after=1), ok())
        settings = Settings(flowise_base_url=flowise.url, ...)

``max_in_flight`` is the highest number of requests the fake was serving at the same instant. ``latency``
(seconds, default 0) makes every reply leave at least that long after its request line arrived (plus any
scripted delay), like a remote service's fixed response time (the executor benchmark uses it): parsing the
request and building the reply happen within it, as a remote service's own work is part of its latency.

Provider limits: ``hidden_limit`` makes the fake answer 429 with ``Retry-After: hidden_retry_after`` to a request
that arrives while that many are already in flight (a provider's limit the client does not know; ``throttled``
counts them), and ``always`` answers every unscripted request with one behaviour (e.g. a revoked key's 401).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

FLOWISE_PERSONA_FLOW = "persona-flow-0001"
FLOWISE_PROMPT_FLOW = "prompt-flow-0002"
CHAT_MODEL = "fake-chat-model"
IMAGE_MODEL = "fake-image-model"
GRID_SIZE_PX, GUTTER_PX = 512, 16

FIRST_NAMES = ("Ana", "Bruno", "Carla", "Diogo", "Eva", "Filipe", "Gabriela", "Hugo", "Inês", "João", "Kátia", "Luís")
LAST_NAMES = ("Silva", "Santos", "Ferreira", "Pereira", "Oliveira", "Costa", "Rodrigues", "Martins", "Sousa", "Lopes")


# -- behaviours ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one request. ``kind``: ok, status, truncated, bad_json, malformed, json."""

    kind: str = "ok"
    delay: float = 0.0
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    payload: Any = None


def ok() -> Behaviour:
    return Behaviour()


def slow(seconds: float) -> Behaviour:
    """A normal reply after ``seconds`` (before any byte is sent)."""
    return Behaviour(delay=seconds)


def rate_limited(retry_after: float | None = 1) -> Behaviour:
    headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
    payload = {"error": {"message": "Rate limit reached, please retry later", "code": "rate_limit_exceeded"}}
    return Behaviour("status", status=429, headers=headers, payload=payload)


def server_error(status: int = 500) -> Behaviour:
    return Behaviour("status", status=status, payload={"error": {"message": "The server had an error", "code": None}})


def error(status: int, message: str, code: str | None = None) -> Behaviour:
    """An OpenAI-style error body ``{"error": {"message": ..., "code": ...}}``."""
    return Behaviour("status", status=status, payload={"error": {"message": message, "code": code}})


def refusal(message: str = "Your request was rejected by the safety system.") -> Behaviour:
    return error(400, message, "moderation_blocked")


def truncated() -> Behaviour:
    """Announce the whole normal body, send half of it, close the connection."""
    return Behaviour("truncated")


def bad_json() -> Behaviour:
    """A 200 whose body is the first half of the normal JSON (a complete but cut-off reply)."""
    return Behaviour("bad_json")


def malformed(text: str = "<html><body>upstream proxy says hello</body></html>") -> Behaviour:
    """A 200 that is not JSON at all."""
    return Behaviour("malformed", payload=text)


def reply(payload: Any, status: int = 200) -> Behaviour:
    """Exactly this JSON body."""
    return Behaviour("json", status=status, payload=payload)


# -- records ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    field: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)
    at: float = 0.0


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[Upload]]:
    """Form fields and uploaded files of a ``multipart/form-data`` body (werkzeug's parser: the standard library's
    ``email`` parser took 2.5 ms an image edit, 10 times as long, on the CPU the workers share)."""
    _mimetype, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if not boundary:
        raise ValueError(f"not a multipart body: {content_type!r}")
    form, uploads = MultiPartParser().parse(io.BytesIO(body), boundary.encode(), len(body))
    files = [Upload(name, f.filename, f.content_type or "text/plain", f.read()) for name, f in uploads.items(multi=True)]
    return dict(form), files


# -- images ----------------------------------------------------------------------------------------------------
def portrait_png(width: int = 256, height: int = 320, tint: tuple[int, int, int] = (120, 160, 200)) -> bytes:
    """A small drawn head-and-shoulders PNG (not white at the edges, so trimming keeps it)."""
    img = Image.new("RGB", (width, height), tint)
    draw = ImageDraw.Draw(img)
    cx, cy = width // 2, height * 2 // 5
    draw.ellipse((cx - width // 2, height * 3 // 4, cx + width // 2, height + height // 3), fill=(60, 70, 110))
    draw.ellipse((cx - width // 5, cy - height // 5, cx + width // 5, cy + height // 5), fill=(224, 180, 150))
    for dx in (-width // 12, width // 12):
        draw.ellipse((cx + dx - 5, cy - 10, cx + dx + 5, cy), fill=(40, 30, 30))
    draw.arc((cx - 20, cy + 10, cx + 20, cy + 35), 20, 160, fill=(150, 60, 60), width=3)
    return _png(img)


def grid_png(source: bytes) -> bytes:
    """A 512x512 2x2 grid of four variations of ``source`` with 16-px white gutters."""
    cell = (GRID_SIZE_PX - 3 * GUTTER_PX) // 2
    face = ImageOps.fit(Image.open(io.BytesIO(source)).convert("RGB"), (cell, cell))
    tiles = [
        face,
        ImageOps.mirror(face),
        ImageEnhance.Brightness(face).enhance(1.15),
        ImageEnhance.Color(face).enhance(0.6),
    ]
    grid = Image.new("RGB", (GRID_SIZE_PX, GRID_SIZE_PX), (255, 255, 255))
    for i, tile in enumerate(tiles):
        grid.paste(tile, (GUTTER_PX + (i % 2) * (cell + GUTTER_PX), GUTTER_PX + (i // 2) * (cell + GUTTER_PX)))
    return _png(grid)


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# -- the server ------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    arrived: float

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def parse_request(self) -> bool:
        self.arrived = time.monotonic()  # the request line is in: the call's latency counts from here
        return super().parse_request()

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    def do_POST(self) -> None:
        self.server.fake.handle(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that timed out and left
        pass


Route = Callable[[Recorded], tuple[int, Any]]


class FakeServer:
    """The loopback server, the script and the records; subclasses route paths to normal replies."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self.hidden_limit: int | None = None
        self.hidden_retry_after = 1.0
        self.throttled = 0
        self.always: Behaviour | None = None
        self._script: deque[Behaviour] = deque()
        self._made = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order (then normal replies)."""
        with self._lock:
            self._script.extend(behaviours)

    def _next(self) -> int:
        """A number never used before by this fake (persona names stay unique across batches)."""
        with self._lock:
            self._made += 1
            return self._made - 1

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def route(self, rec: Recorded) -> tuple[int, Any]:  # pragma: no cover - overridden
        return 404, {"error": {"message": "no such path"}}

    # -- request handling ---------------------------------------------------------------------------------------
    def handle(self, h: _Handler) -> None:
        arrived = h.arrived
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            behaviour = self._script.popleft() if self._script else (self.always or Behaviour())
            if self.hidden_limit is not None and self._in_flight > self.hidden_limit and behaviour.kind == "ok":
                behaviour = rate_limited(self.hidden_retry_after)
                self.throttled += 1
        counted = True
        try:
            reply = self._reply(self._record(h), behaviour)
            wait = behaviour.delay + max(0.0, self.latency - (time.monotonic() - arrived) if self.latency else 0.0)
            if wait:
                time.sleep(wait)
            # No longer "in flight" once the reply starts: the client may send its next request the moment it
            # has read this one, before this handler thread gets to run its last lines.
            with self._lock:
                self._in_flight -= 1
                counted = False
            _write(h, reply)
        finally:
            if counted:
                with self._lock:
                    self._in_flight -= 1

    def _record(self, h: _Handler) -> Recorded:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        content_type = h.headers.get("Content-Type", "")
        rec = Recorded(h.command, urlsplit(h.path).path, dict(h.headers.items()), at=time.monotonic())
        if content_type.startswith("application/json") and body:
            rec.json = json.loads(body)
        elif content_type.startswith("multipart/form-data"):
            rec.fields, rec.files = parse_multipart(content_type, body)
        with self._lock:
            self.requests.append(rec)
        return rec

    def _reply(self, rec: Recorded, b: Behaviour) -> _Reply:
        if b.kind == "status":
            return _Reply(b.status, json.dumps(b.payload).encode(), headers=b.headers)
        if b.kind == "json":
            return _Reply(b.status, json.dumps(b.payload).encode())
        if b.kind == "malformed":
            return _Reply(200, str(b.payload).encode(), content_type="text/html")
        status, payload = self.route(rec)
        body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        if b.kind == "bad_json":
            return _Reply(status, body[: len(body) // 2])
        if b.kind == "truncated":
            return _Reply(status, body, cut=True)
        return _Reply(status, body, content_type="text/plain" if isinstance(payload, bytes) else "application/json")


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    cut: bool = False  # announce the whole body, send half of it and close the connection


def _write(h: _Handler, reply: _Reply) -> None:
    h.send_response(reply.status)
    h.send_header("Content-Type", reply.content_type)
    h.send_header("Content-Length", str(len(reply.body)))
    for name, value in reply.headers:
        h.send_header(name, value)
    h.end_headers()
    if reply.cut:
        h.wfile.write(reply.body[: len(reply.body) // 2])
        h.wfile.flush()
        h.close_connection = True
    else:
        h.wfile.write(reply.body)


def _persona(n: int, language: str) -> dict[str, Any]:
    first, last = FIRST_NAMES[n % len(FIRST_NAMES)], LAST_NAMES[(n // len(FIRST_NAMES)) % len(LAST_NAMES)]
    return {
        "firstname": first,
        "lastname": last if n < len(FIRST_NAMES) * len(LAST_NAMES) else f"{last}-{n}",
        "gender": "female" if n % 2 == 0 else "male",
        "ethnicity": "White",
        "bios": {
            "facebook_bio": f"{first} from Lisbon ({language}).",
            "instagram_bio": "coffee | bikes | sunsets",
            "x_bio": f"Opinions are my own. #{n}",
            "tiktok_bio": "daily rides",
            "age": 22 + n % 30,
            "job_title": "Designer",
            "workplace": "Atelier Norte",
            "edu_establishment": "Universidade de Lisboa",
            "edu_study": "Design",
            "current_city": "Lisbon",
            "current_state": "Lisboa",
            "prev_city": "Porto",
            "prev_state": "Porto",
            "about": f"{first} rides to work every day.",
        },
    }


class FakeFlowise(FakeServer):
    """``/api/v1/prediction/{flow}``, ``/api/v1/ping`` and ``/api/v1/chatflows/{flow}``."""

    def __init__(
        self, flows: tuple[str, ...] = (FLOWISE_PERSONA_FLOW, FLOWISE_PROMPT_FLOW), *, latency: float = 0.0
    ) -> None:
        super().__init__(latency)
        self.flows = flows

    def __enter__(self) -> FakeFlowise:
        self.start()
        return self

    @staticmethod
    def start_state(rec: Recorded) -> dict[str, str]:
        """The ``startAgentflow_0`` key/value list of a prediction, as a dict."""
        items = rec.json["overrideConfig"]["startState"]["startAgentflow_0"]
        return {item["key"]: item["value"] for item in items}

    def route(self, rec: Recorded) -> tuple[int, Any]:
        if rec.path == "/api/v1/ping":
            return 200, b"pong"
        flow = rec.path.rsplit("/", 1)[-1]
        if flow not in self.flows:
            return 404, {"statusCode": 404, "success": False, "message": f"Chatflow {flow} not found"}
        if rec.path.startswith("/api/v1/chatflows/"):
            return 200, {"id": flow, "name": "fake flow", "type": "AGENTFLOW"}
        state = self.start_state(rec)
        if "person_data" in state:
            used = [line for line in state.get("prompts_history", "").split("\n") if line]
            prompt = f"A 2x2 grid of four amateur photos of the same person, idea set {len(used) + 1}"
            return 200, {"text": json.dumps({"final_prompt": prompt}), "chatId": "fake"}
        objects = []
        for _ in range(int(state["requested_amount"])):
            persona = _persona(self._next(), state.get("bio_language", ""))
            persona["bios"] = json.dumps(persona["bios"], ensure_ascii=False)  # a JSON *string*, as Flowise sends
            objects.append(json.dumps(persona, ensure_ascii=False, indent=2))
        return 200, {"text": "\n".join(objects), "chatId": "fake"}


class FakeOpenAI(FakeServer):
    """``/chat/completions``, ``/images/generations``, ``/images/edits`` and ``/models``."""

    def __init__(self, models: tuple[str, ...] = (CHAT_MODEL, IMAGE_MODEL), *, latency: float = 0.0) -> None:
        super().__init__(latency)
        self.models = models
        # Chat replies carry ``usage`` as OpenAI's do; image replies only when this is set (gpt-image models do,
        # dall-e models do not).
        self.image_usage: dict[str, int] | None = None
        self.usage_sent: list[dict[str, int]] = []  # the ``usage`` of every reply sent, in order

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def route(self, rec: Recorded) -> tuple[int, Any]:
        if rec.path.endswith("/models"):
            return 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        if rec.path.endswith("/chat/completions"):
            return 200, self._chat(rec.json)
        if rec.path.endswith("/images/generations"):
            return 200, self._with_usage(_images(portrait_png()))
        if rec.path.endswith("/images/edits"):
            source = rec.files[0].data if rec.files else portrait_png()
            grid = "grid" in rec.fields.get("prompt", "").lower()
            png = grid_png(source) if grid else _png(Image.open(io.BytesIO(source)).convert("RGB"))
            return 200, self._with_usage(_images(png))
        return 404, {"error": {"message": f"Unknown path {rec.path}", "code": "not_found"}}

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        schema = body.get("response_format", {}).get("json_schema", {}).get("name")
        user = body["messages"][-1]["content"]
        if schema == "personas":
            count = int(re.search(r"Number of personas to write: (\d+)", user).group(1))  # type: ignore[union-attr]
            language = re.search(r"about text: (.*)", user)
            personas = [_persona(self._next(), language.group(1) if language else "") for _ in range(count)]
            content = json.dumps({"personas": personas}, ensure_ascii=False)
        else:
            content = json.dumps({"final_prompt": f"A 2x2 grid of four photos, idea {user.count('- ') + 1}"})
        message = {"role": "assistant", "content": content, "refusal": None}
        return {
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": self._sent(chat_usage(body, content)),
        }

    def _sent(self, usage: dict[str, int]) -> dict[str, int]:
        with self._lock:
            self.usage_sent.append(usage)
        return usage

    def _with_usage(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.image_usage is not None:
            usage = dict(self.image_usage)
            usage["total_tokens"] = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
            payload["usage"] = self._sent(usage)
        return payload


def chat_usage(body: dict[str, Any], content: str) -> dict[str, int]:
    """The ``usage`` of a chat reply: a token per 4 characters of the messages and of the reply (deterministic)."""
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
    completion = len(content) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _images(png: bytes) -> dict[str, Any]:
    return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode()}]}


@pytest.fixture
def fake_flowise() -> Iterator[FakeFlowise]:
    with FakeFlowise() as fake:
        yield fake


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake
