"""The HTTP providers against loopback fakes of Flowise and OpenAI: wire formats, retries, limits, safe errors.

No patching: every call goes through ``pipeline.providers.http.HttpClient`` and a real socket to ``tests.fakes.servers``.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.core.config import Settings
from pipeline.core.domain import BIO_PROMPT_KEYS, PersonaDraft, PersonaRequest
from pipeline.core.errors import ConfigError, ProviderError, RefusalError
from pipeline.providers.flowise import FlowisePersonaProvider, FlowisePromptProvider
from pipeline.providers.http import Attempt, HttpClient, observe, parse_retry_after
from pipeline.providers.openai_chat import OpenAIChatPersonaProvider, OpenAIChatPromptProvider
from pipeline.providers.openai_images import OpenAIImageProvider
from pipeline.providers.registry import ProviderCache
from tests.fakes.servers import (
    CHAT_MODEL,
    FLOWISE_PERSONA_FLOW,
    FLOWISE_PROMPT_FLOW,
    IMAGE_MODEL,
    FakeFlowise,
    FakeOpenAI,
    bad_json,
    error,
    malformed,
    portrait_png,
    rate_limited,
    refusal,
    reply,
    server_error,
    slow,
    truncated,
)

FLOWISE_KEY = "flowise-test-key-not-secret"
OPENAI_KEY = "openai-test-key-not-secret"
BACKOFF = 0.01  # seconds: keep the retry tests fast
BIO_PROMPTS = {key: f"Write the {key.removeprefix('bio_prompt_')} bio in one line." for key in BIO_PROMPT_KEYS}
PERSONA = PersonaDraft(
    firstname="Ana", lastname="Silva", gender="f", ethnicity="White", age=31, bio_facebook="Cyclist in Lisbon."
)


@pytest.fixture
def flowise() -> Iterator[FakeFlowise]:
    with FakeFlowise() as fake:
        yield fake


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "http_timeout_seconds": 5.0,
        "http_max_attempts": 3,
        "provider_max_in_flight": 8,
        "flowise_api_key": FLOWISE_KEY,
        "flowise_persona_flow_id": FLOWISE_PERSONA_FLOW,
        "flowise_prompt_flow_id": FLOWISE_PROMPT_FLOW,
        "openai_api_key": OPENAI_KEY,
        "openai_chat_model": CHAT_MODEL,
        "openai_image_model": IMAGE_MODEL,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def persona_request(count: int = 3, **overrides: Any) -> PersonaRequest:
    values: dict[str, Any] = {
        "description": "urban cyclists in Lisbon, 25-40",
        "language": "Portuguese",
        "count": count,
        "bio_prompts": BIO_PROMPTS,
        "seed": 7,
        "batch_number": 1,
    }
    values.update(overrides)
    return PersonaRequest(**values)


def flowise_personas(fake: FakeFlowise, tmp_path: Path, **overrides: Any) -> FlowisePersonaProvider:
    return FlowisePersonaProvider.from_settings(
        settings_for(tmp_path, flowise_base_url=fake.url, **overrides), backoff_base=BACKOFF
    )


def openai_images(fake: FakeOpenAI, tmp_path: Path, **overrides: Any) -> OpenAIImageProvider:
    return OpenAIImageProvider.from_settings(
        settings_for(tmp_path, openai_base_url=fake.url + "/v1", **overrides), backoff_base=BACKOFF
    )


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(portrait_png())).save(out, format="JPEG")
    return out.getvalue()


# -- Flowise wire format ---------------------------------------------------------------------------------------
def test_flowise_persona_request_is_the_documented_override_config(flowise: FakeFlowise, tmp_path: Path) -> None:
    batch = flowise_personas(flowise, tmp_path).generate(persona_request(3))

    [rec] = flowise.requests
    assert (rec.method, rec.path) == ("POST", f"/api/v1/prediction/{FLOWISE_PERSONA_FLOW}")
    assert rec.headers["Authorization"] == f"Bearer {FLOWISE_KEY}"
    assert rec.json == {
        "question": "go",
        "overrideConfig": {
            "startState": {
                "startAgentflow_0": [
                    {"key": "requested_amount", "value": "3"},
                    {"key": "persona_description", "value": "urban cyclists in Lisbon, 25-40"},
                    {"key": "bio_language", "value": "Portuguese"},
                    {"key": "instructions_facebook", "value": BIO_PROMPTS["bio_prompt_facebook"]},
                    {"key": "instructions_instagram", "value": BIO_PROMPTS["bio_prompt_instagram"]},
                    {"key": "instructions_x", "value": BIO_PROMPTS["bio_prompt_x"]},
                    {"key": "instructions_tiktok", "value": BIO_PROMPTS["bio_prompt_tiktok"]},
                ]
            }
        },
    }
    # several JSON objects one after another, bios as a JSON string: all three parsed with their bios
    assert len(batch.personas) == 3 and batch.rejected == 0
    first = batch.personas[0]
    assert (first.firstname, first.gender, first.current_city) == ("Ana", "f", "Lisbon")
    assert isinstance(first.age, int) and first.bio_facebook


def test_flowise_persona_constraints_and_no_key(flowise: FakeFlowise, tmp_path: Path) -> None:
    provider = flowise_personas(flowise, tmp_path, flowise_api_key=None)
    slots = ({"gender": "f", "age_min": 25, "age_max": 34}, {"gender": "m", "ethnicity": "Black"})
    provider.generate(persona_request(2, exclude_names=("Ana Silva", "Bruno Costa"), slots=slots))

    [rec] = flowise.requests
    assert "Authorization" not in rec.headers
    description = FakeFlowise.start_state(rec)["persona_description"]
    assert description.startswith("urban cyclists in Lisbon, 25-40")
    assert "Do not reuse these names: Ana Silva, Bruno Costa." in description
    assert "Persona 1: gender f, age 25–34" in description
    assert "Persona 2: gender m, ethnicity Black" in description


def test_flowise_prompt_flow(flowise: FakeFlowise, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, flowise_base_url=flowise.url)
    provider = FlowisePromptProvider.from_settings(settings, backoff_base=BACKOFF)

    first = provider.grid_prompt(PERSONA, [], seed=1)
    second = provider.grid_prompt(PERSONA, [first, "beach at dusk"], seed=2)

    assert first.startswith("A 2x2 grid") and first != second
    without, with_history = (FakeFlowise.start_state(r) for r in flowise.requests)
    assert flowise.requests[0].path == f"/api/v1/prediction/{FLOWISE_PROMPT_FLOW}"
    assert set(without) == {"person_data"}
    assert json.loads(without["person_data"])["firstname"] == "Ana"
    assert with_history["prompts_history"] == f"{first}\nbeach at dusk"


def test_flowise_prompt_without_final_prompt_is_retryable(flowise: FakeFlowise, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, flowise_base_url=flowise.url)
    flowise.script(reply({"text": '{"prompt": "wrong key"}'}))
    with pytest.raises(ProviderError, match="final_prompt") as caught:
        FlowisePromptProvider.from_settings(settings).grid_prompt(PERSONA, [], seed=1)
    assert caught.value.retryable


def test_flowise_prose_reply_counts_a_reject(flowise: FakeFlowise, tmp_path: Path) -> None:
    flowise.script(reply({"text": "Sorry, I can't help with that today."}))
    batch = flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert batch.personas == [] and batch.rejected >= 1 and batch.problems


def test_flowise_missing_configuration_names_the_variable(tmp_path: Path) -> None:
    provider = FlowisePersonaProvider.from_settings(settings_for(tmp_path))
    with pytest.raises(ConfigError, match="FLOWISE_BASE_URL"):
        provider.generate(persona_request())


# -- retries ---------------------------------------------------------------------------------------------------
def test_429_is_retried_after_retry_after(flowise: FakeFlowise, tmp_path: Path) -> None:
    flowise.script(rate_limited(retry_after=1))
    started = time.monotonic()
    batch = flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert time.monotonic() - started >= 1.0
    assert len(batch.personas) == 2 and len(flowise.requests) == 2
    assert flowise.requests[1].at - flowise.requests[0].at >= 1.0


def test_500_then_success(flowise: FakeFlowise, tmp_path: Path) -> None:
    flowise.script(server_error(500), server_error(503))
    batch = flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert len(batch.personas) == 2 and len(flowise.requests) == 3


def test_persistent_5xx_fails_retryable_after_all_attempts(flowise: FakeFlowise, tmp_path: Path) -> None:
    flowise.script(*[server_error(502)] * 3)
    with pytest.raises(ProviderError) as caught:
        flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert caught.value.retryable and caught.value.status == 502 and caught.value.provider == "flowise"
    assert "after 3 attempts" in str(caught.value) and len(flowise.requests) == 3


def test_timeout_fails_after_all_attempts(flowise: FakeFlowise, tmp_path: Path) -> None:
    flowise.script(slow(2), slow(2))
    provider = flowise_personas(flowise, tmp_path, http_timeout_seconds=0.5, http_max_attempts=2)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="timed out") as caught:
        provider.generate(persona_request(2))
    assert caught.value.retryable and "after 2 attempts" in str(caught.value)
    assert len(flowise.requests) == 2 and time.monotonic() - started < 3.0


@pytest.mark.parametrize("broken", [truncated, bad_json], ids=["closed-mid-body", "truncated-json"])
def test_cut_off_reply_is_retried(flowise: FakeFlowise, tmp_path: Path, broken: Any) -> None:
    flowise.script(broken())
    batch = flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert len(batch.personas) == 2 and len(flowise.requests) == 2


def test_malformed_reply_fails_without_the_body(flowise: FakeFlowise, tmp_path: Path) -> None:
    flowise.script(*[malformed()] * 3)
    with pytest.raises(ProviderError, match="invalid JSON reply") as caught:
        flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert "upstream proxy" not in str(caught.value) and caught.value.retryable


def test_a_deeply_nested_reply_is_invalid_json_not_a_crash(flowise: FakeFlowise, tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000  # json.loads recurses once per level: RecursionError
    flowise.script(*[malformed(deep)] * 3)
    with pytest.raises(ProviderError, match="invalid JSON reply") as caught:
        flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert caught.value.retryable


def test_truncated_reply_on_every_attempt(flowise: FakeFlowise, tmp_path: Path) -> None:
    flowise.script(*[truncated()] * 3)
    with pytest.raises(ProviderError, match="closed mid-reply"):
        flowise_personas(flowise, tmp_path).generate(persona_request(2))


def test_other_4xx_is_not_retried_and_clipped(openai: FakeOpenAI, tmp_path: Path) -> None:
    openai.script(error(400, "Invalid size 'huge'. " + "x" * 5000, "invalid_value"))
    with pytest.raises(ProviderError) as caught:
        openai_images(openai, tmp_path).generate_base(PERSONA, "a selfie", seed=1)
    exc = caught.value
    assert (exc.status, exc.retryable, exc.provider) == (400, False, "openai-images")
    assert "Invalid size 'huge'" in str(exc) and len(str(exc)) < 260
    assert len(openai.requests) == 1


def test_moderation_is_a_refusal_without_retry(openai: FakeOpenAI, tmp_path: Path) -> None:
    openai.script(refusal())
    with pytest.raises(RefusalError, match="moderation") as caught:
        openai_images(openai, tmp_path).make_grid(portrait_png(), "a 2x2 grid", seed=1)
    assert not caught.value.retryable and caught.value.status == 400
    assert len(openai.requests) == 1


def test_the_api_key_never_appears_in_errors(openai: FakeOpenAI, tmp_path: Path) -> None:
    provider = openai_images(openai, tmp_path, http_max_attempts=2)
    openai.script(
        error(401, f"Incorrect API key provided: {OPENAI_KEY}.", "invalid_api_key"),
        *[error(503, f"overloaded for key {OPENAI_KEY}")] * 2,
        refusal(f"blocked for {OPENAI_KEY}"),
    )
    messages = []
    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            provider.generate_base(PERSONA, "a selfie", seed=1)
        messages += [str(caught.value), repr(caught.value), *map(str, caught.value.args)]
    assert "check the API key" in messages[0]
    assert all(OPENAI_KEY not in m for m in messages), messages
    assert OPENAI_KEY not in repr(provider.client) and OPENAI_KEY not in repr(provider.settings)


def test_each_attempt_is_reported_to_the_observer_of_the_thread(openai: FakeOpenAI, tmp_path: Path) -> None:
    """The provider limiter (``pipeline.stages.limits``) bounds the calls in flight; the client tells it what each
    attempt came to: the status, the ``Retry-After`` and the latency, or no status when there was no reply."""
    provider = openai_images(openai, tmp_path)
    openai.script(rate_limited(retry_after=0.2), slow(0.3))
    seen: list[Attempt] = []
    with observe(seen.append):
        assert provider.generate_base(PERSONA, "a selfie", seed=1).startswith(b"\x89PNG")
    assert [(a.endpoint, a.status, a.retry_after) for a in seen] == [
        ("POST /v1/images/generations", 429, 0.2), ("POST /v1/images/generations", 200, None)]
    assert seen[1].seconds >= 0.3
    provider.generate_base(PERSONA, "a selfie", seed=1)  # outside the block: no one is told
    assert len(seen) == 2
    client = HttpClient("nowhere", timeout=1, max_attempts=1, max_in_flight=1)
    with observe(seen.append), pytest.raises(ProviderError):
        client.request("GET", free_port_url() + "/v1/models")
    assert seen[-1].status is None


def test_proxies_and_no_proxy_come_from_the_environment(flowise: FakeFlowise, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment is used (here the fake, which sees the absolute URL), and NO_PROXY is honoured.
    The environment is read on every call, as requests does: a client sees a change made after it was built."""
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", flowise.url)
    url = f"http://provider.invalid/api/v1/prediction/{FLOWISE_PROMPT_FLOW}"
    body = {"question": "A prompt", "overrideConfig": {"startState": {"startAgentflow_0": [
        {"key": "person_data", "value": "Ana"}, {"key": "prompts_history", "value": ""}]}}}
    client = HttpClient("proxied", timeout=5, max_attempts=1, max_in_flight=1)
    for _ in range(2):
        assert "final_prompt" in client.request("POST", url, json=body)["text"]
    hosts = [{k.lower(): v for k, v in r.headers.items()}.get("host") for r in flowise.requests]
    assert hosts == ["provider.invalid", "provider.invalid"]  # came through the fake as a proxy
    monkeypatch.setenv("no_proxy", "provider.invalid")
    with pytest.raises(ProviderError, match=r"could not connect to provider\.invalid"):
        client.request("POST", url, json=body)
    with pytest.raises(ProviderError, match=r"could not connect to provider\.invalid"):
        HttpClient("direct", timeout=5, max_attempts=1, max_in_flight=1).request("POST", url, json=body)
    assert len(flowise.requests) == 2


def test_netrc_never_replaces_the_providers_key(
    flowise: FakeFlowise, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests reads ~/.netrc for the host of each call; an entry for the provider's host must not replace the
    provider's own bearer key, yet still serves a client that was given no key."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login netrc-user password netrc-password\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    flowise_personas(flowise, tmp_path).generate(persona_request(1))
    flowise_personas(flowise, tmp_path, flowise_api_key=None).generate(persona_request(1))
    keyed, keyless = flowise.requests
    assert keyed.headers["Authorization"] == f"Bearer {FLOWISE_KEY}"
    assert keyless.headers["Authorization"].startswith("Basic ")  # requests' standard netrc behaviour


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("999") == 30.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= (parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") or 0) <= 30  # a date in the past: no wait


# -- OpenAI images ---------------------------------------------------------------------------------------------
def test_images_generation_wire_format(openai: FakeOpenAI, tmp_path: Path) -> None:
    data = openai_images(openai, tmp_path).generate_base(PERSONA, "an amateur selfie", seed=3)
    [rec] = openai.requests
    assert (rec.method, rec.path) == ("POST", "/v1/images/generations")
    assert rec.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert rec.json == {"model": IMAGE_MODEL, "prompt": "an amateur selfie", "size": "auto", "n": 1}
    assert Image.open(io.BytesIO(data)).format == "PNG"


@pytest.mark.parametrize(
    ("image", "filename", "content_type"),
    [(portrait_png(), "base.png", "image/png"), (jpeg_bytes(), "base.jpg", "image/jpeg")],
    ids=["png", "jpeg"],
)
def test_grid_edit_uploads_image_with_true_type(
    openai: FakeOpenAI, tmp_path: Path, image: bytes, filename: str, content_type: str
) -> None:
    grid = openai_images(openai, tmp_path).make_grid(image, "cafe; park; beach; office", seed=4)

    [rec] = openai.requests
    assert rec.path == "/v1/images/edits" and rec.headers["Content-Type"].startswith("multipart/form-data")
    [upload] = rec.files
    assert (upload.field, upload.filename, upload.content_type, upload.data) == (
        "image[]",
        filename,
        content_type,
        image,
    )
    assert rec.fields["model"] == IMAGE_MODEL and rec.fields["n"] == "1" and rec.fields["size"] == "1024x1024"
    assert "2x2 grid" in rec.fields["prompt"] and "cafe; park; beach; office" in rec.fields["prompt"]
    picture = Image.open(io.BytesIO(grid)).convert("RGB")
    assert picture.size == (512, 512)
    assert picture.getpixel((256, 100)) == (255, 255, 255) and picture.getpixel((100, 256)) == (255, 255, 255)


def test_face_edit_keeps_the_prompt(openai: FakeOpenAI, tmp_path: Path) -> None:
    data = openai_images(openai, tmp_path).edit_face(jpeg_bytes(), PERSONA, "Edit this photo", seed=5)
    [rec] = openai.requests
    assert rec.fields["prompt"] == "Edit this photo" and rec.fields["size"] == "auto"
    assert rec.files[0].filename == "face.jpg" and data.startswith(b"\x89PNG")


def test_images_need_a_key(openai: FakeOpenAI, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        openai_images(openai, tmp_path, openai_api_key=None).generate_base(PERSONA, "a selfie", seed=1)
    assert openai.requests == []


def test_images_reply_without_image_is_retryable(openai: FakeOpenAI, tmp_path: Path) -> None:
    openai.script(reply({"data": [{"url": "https://example.invalid/x.png"}]}))
    with pytest.raises(ProviderError, match="b64_json") as caught:
        openai_images(openai, tmp_path).generate_base(PERSONA, "a selfie", seed=1)
    assert caught.value.retryable


# -- OpenAI-compatible chat ------------------------------------------------------------------------------------
def test_chat_personas(openai: FakeOpenAI, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, openai_base_url=openai.url + "/v1")
    request = persona_request(4, exclude_names=("Ana Silva",))
    batch = OpenAIChatPersonaProvider.from_settings(settings, backoff_base=BACKOFF).generate(request)

    assert len(batch.personas) == 4 and batch.rejected == 0 and batch.personas[0].bio_instagram
    [rec] = openai.requests
    assert rec.path == "/v1/chat/completions" and rec.json["model"] == CHAT_MODEL
    fmt = rec.json["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "personas"
    assert fmt["json_schema"]["schema"]["properties"]["personas"]["type"] == "array"
    system, user = rec.json["messages"]
    assert all(prompt in system["content"] for prompt in BIO_PROMPTS.values())
    assert "Portuguese" in user["content"] and "Number of personas to write: 4" in user["content"]
    assert "Do not reuse these names: Ana Silva." in user["content"]


def test_chat_grid_prompt_lists_ideas_already_used(openai: FakeOpenAI, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, openai_base_url=openai.url + "/v1")
    prompt = OpenAIChatPromptProvider.from_settings(settings).grid_prompt(PERSONA, ["at the beach"], seed=9)
    assert prompt.startswith("A 2x2 grid")
    [rec] = openai.requests
    assert rec.json["response_format"]["json_schema"]["name"] == "grid_prompt"
    assert "- at the beach" in rec.json["messages"][-1]["content"]


def test_chat_refusal_and_missing_model(openai: FakeOpenAI, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, openai_base_url=openai.url + "/v1")
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    openai.script(reply({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}))
    with pytest.raises(RefusalError):
        OpenAIChatPersonaProvider.from_settings(settings).generate(persona_request(2))
    no_model = settings_for(tmp_path, openai_base_url=openai.url + "/v1", openai_chat_model=None)
    with pytest.raises(ConfigError, match="OPENAI_CHAT_MODEL"):
        OpenAIChatPersonaProvider.from_settings(no_model).generate(persona_request(2))


# -- checks and registry ---------------------------------------------------------------------------------------
def free_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_checks(flowise: FakeFlowise, openai: FakeOpenAI, tmp_path: Path) -> None:
    base = openai.url + "/v1"
    assert flowise_personas(flowise, tmp_path).check()[0]
    assert FlowisePromptProvider.from_settings(settings_for(tmp_path, flowise_base_url=flowise.url)).check()[0]
    ok, message = flowise_personas(flowise, tmp_path, flowise_persona_flow_id="no-such-flow").check()
    assert not ok and "no-such-flow" in message
    assert OpenAIImageProvider.from_settings(settings_for(tmp_path, openai_base_url=base)).check()[0]
    assert OpenAIChatPromptProvider.from_settings(settings_for(tmp_path, openai_base_url=base)).check()[0]
    ok, message = OpenAIChatPersonaProvider.from_settings(
        settings_for(tmp_path, openai_base_url=base, openai_chat_model="gpt-nope")
    ).check()
    assert not ok and "gpt-nope" in message
    assert all(r.method == "GET" for r in flowise.requests + openai.requests)  # no generation spent

    openai.script(error(401, f"Incorrect API key provided: {OPENAI_KEY}", "invalid_api_key"))
    ok, message = OpenAIImageProvider.from_settings(settings_for(tmp_path, openai_base_url=base)).check()
    assert not ok and "401" in message and OPENAI_KEY not in message


def test_checks_never_raise(tmp_path: Path) -> None:
    dead = free_port_url()
    cases: list[Any] = [
        FlowisePersonaProvider.from_settings(settings_for(tmp_path, flowise_base_url=dead)),
        FlowisePromptProvider.from_settings(settings_for(tmp_path)),  # FLOWISE_BASE_URL unset
        OpenAIImageProvider.from_settings(settings_for(tmp_path, openai_base_url=dead)),
        OpenAIChatPersonaProvider.from_settings(settings_for(tmp_path, openai_api_key=None)),  # api.openai.com
    ]
    results = [provider.check() for provider in cases]
    assert [ok for ok, _ in results] == [False] * 4
    assert "could not connect" in results[0][1] and "FLOWISE_BASE_URL" in results[1][1]
    assert "OPENAI_API_KEY" in results[3][1]


def test_registry_builds_the_http_providers(tmp_path: Path) -> None:
    cache = ProviderCache(settings_for(tmp_path, flowise_base_url="http://127.0.0.1:9"))
    assert isinstance(cache.get("persona", "flowise"), FlowisePersonaProvider)
    assert isinstance(cache.get("prompt", "flowise"), FlowisePromptProvider)
    assert isinstance(cache.get("persona", "openai"), OpenAIChatPersonaProvider)
    assert isinstance(cache.get("prompt", "openai"), OpenAIChatPromptProvider)
    assert isinstance(cache.get("image", "openai"), OpenAIImageProvider)
