"""The one HTTP client of all providers: timeouts, bounded retries, safe errors, and a report of each attempt.

Retried (exponential backoff with jitter, ``Retry-After`` honoured): timeouts, connection errors, a reply cut
off mid-body, invalid JSON, 408, 429 and 5xx. Not retried: other 4xx, and moderation refusals, which raise
``RefusalError``, and an exhausted quota (429 ``insufficient_quota``: waiting does not refill it). Error messages
name the provider and the status and carry at most the upstream error *message*, clipped — never a whole body, a
header or an API key. A reply body is read up to a bound (``max_reply_bytes``: 8 MB, 64 MB for image providers)
and refused past it, so a misbehaving server cannot fill the process's memory.

How many calls are in flight is not decided here but by the provider limiter (``pipeline.stages.limits``), which
learns what each attempt came to (status, ``Retry-After``, latency) through ``observe``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from pipeline.core.config import Settings
from pipeline.core.errors import ProviderError, RefusalError
from pipeline.core.replies import MAX_REPLY_BYTES, read_capped, size_text

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 8.0
RETRY_AFTER_CAP_SECONDS = 30.0
CONNECT_TIMEOUT_CAP_SECONDS = 10.0
MESSAGE_MAX_CHARS = 200
RETRIED_STATUSES = frozenset({408, 429})
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
QUOTA_CODES = frozenset({"insufficient_quota"})


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt came to, as the provider limiter sees it (``observe``)."""

    endpoint: str  # method and path, e.g. "POST /v1/images/edits": latencies are compared per endpoint
    status: int | None  # None: no reply (a timeout, a refused or dropped connection)
    seconds: float
    retry_after: float | None = None


_observers = threading.local()


@contextlib.contextmanager
def observe(callback: Callable[[Attempt], None]) -> Iterator[None]:
    """Call ``callback`` with each HTTP attempt this thread makes inside the block (it may block or raise: the
    attempt is over, and an exception ends the request)."""
    previous = getattr(_observers, "callback", None)
    _observers.callback = callback
    try:
        yield
    finally:
        _observers.callback = previous


def _report(attempt: Attempt) -> None:
    callback = getattr(_observers, "callback", None)
    if callback is not None:
        callback(attempt)


@dataclass(frozen=True)
class Usage:
    """The tokens a provider's reply says one call used (None where it does not say): its own count, never a
    guess."""

    input_tokens: int | None = None
    output_tokens: int | None = None


_usage = threading.local()


@contextlib.contextmanager
def collect_usage() -> Iterator[list[Usage]]:
    """Gather what the replies received by this thread inside the block report (``report_usage``)."""
    previous = getattr(_usage, "sink", None)
    sink: list[Usage] = []
    _usage.sink = sink
    try:
        yield sink
    finally:
        _usage.sink = previous


def report_usage(usage: Usage) -> None:
    """Hand a reply's usage to the caller's ``collect_usage`` (nothing happens outside one)."""
    sink = getattr(_usage, "sink", None)
    if sink is not None:
        sink.append(usage)


def reply_usage(reply: Mapping[str, Any]) -> Usage:
    """The tokens an OpenAI-style reply reports in ``usage``: ``prompt_tokens``/``completion_tokens`` (chat) or
    ``input_tokens``/``output_tokens`` (gpt-image models); None where it reports none."""
    usage = reply.get("usage")
    if not isinstance(usage, Mapping):
        return Usage()
    return Usage(_count(usage.get("prompt_tokens", usage.get("input_tokens"))),
                 _count(usage.get("completion_tokens", usage.get("output_tokens"))))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class _Call:
    """One request as ``HttpClient.request`` was asked for it; every attempt sends it as it is."""

    method: str
    url: str
    json: Any = None
    data: Mapping[str, Any] | None = None
    files: Any = None
    timeout: float | None = None


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class TransientError(Exception):
    """One failed attempt that may succeed if tried again (internal to the retry loop)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


def clip(text: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def parse_retry_after(value: str | None, cap: float = RETRY_AFTER_CAP_SECONDS) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), capped; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


def upstream_error(body: bytes) -> tuple[str | None, str | None]:
    """``(message, code)`` of a JSON error body: ``error.message``/``error.code`` (OpenAI) or ``message`` (Flowise)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than json can read
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, dict):
        message, code = error.get("message"), error.get("code") or error.get("type")
        return (str(message) if message else None), (str(code) if code else None)
    if isinstance(error, str):
        return error, None
    message = data.get("message")
    return (str(message) if isinstance(message, str | int | float) and message != "" else None), None


class HttpClient:
    """JSON over HTTP for one provider. Thread-safe: share one client between the threads of a process."""

    def __init__(
        self,
        provider: str,
        *,
        timeout: float,
        max_attempts: int,
        max_in_flight: int,
        headers: Mapping[str, str] | None = None,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        retry_after_cap: float = RETRY_AFTER_CAP_SECONDS,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ):
        self.provider = provider
        self.max_reply_bytes = max_reply_bytes
        self.timeout = float(timeout)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._secrets = [v.split(" ", 1)[-1] for k, v in (headers or {}).items() if v and _is_secret_header(k)]
        self._session = requests.Session()  # trust_env: proxies, NO_PROXY, CA bundle and ~/.netrc, per call
        extra = dict(headers or {})
        authorization = next((k for k in extra if k.lower() == "authorization"), None)
        if authorization is not None:
            # Given as the session's auth, not a plain header: requests applies ~/.netrc only when no auth is
            # set, and a netrc entry for the provider's host would otherwise replace the provider's key.
            self._session.auth = _Authorization(extra.pop(authorization))
        self._session.headers.update(extra)
        # Connections kept open for reuse; more calls than this at once still go out (on fresh connections).
        pool = max(1, int(max_in_flight))
        adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:  # never show the headers (they hold the key)
        return f"HttpClient({self.provider!r})"

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
        attempts: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send the request (retrying transient faults) and return the reply's JSON object.

        Raises ``RefusalError`` for a moderation refusal, ``ProviderError`` (``retryable=False``) for other
        4xx replies and ``ProviderError`` (``retryable=True``) once the attempts are spent.
        """
        attempts = self.max_attempts if attempts is None else max(1, attempts)
        call = _Call(method, url, json, data, files, timeout)
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            retry=retry_if_exception_type(TransientError),
            wait=self._wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    reply = self._send(call)
                    return self._decode(reply)
        except TransientError as exc:
            raise ProviderError(
                self.provider,
                self._safe(f"{exc.message} (after {attempts} attempts)"),
                status=exc.status,
                retryable=True,
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def get_status(self, url: str, *, timeout: float | None = None) -> int:
        """One GET without retries, for reachability checks: the HTTP status (raises ``ProviderError`` if none)."""
        try:
            return self._send(_Call("GET", url, timeout=timeout)).status
        except TransientError as exc:
            raise ProviderError(self.provider, self._safe(exc.message), status=exc.status, retryable=True) from None

    # -- one attempt -----------------------------------------------------------------------------------------
    def _send(self, call: _Call) -> _Reply:
        read_timeout = self.timeout if call.timeout is None else call.timeout
        limits = (min(read_timeout, CONNECT_TIMEOUT_CAP_SECONDS), read_timeout)
        host = urlsplit(call.url).netloc or call.url
        endpoint = f"{call.method} {urlsplit(call.url).path}"
        started = time.monotonic()
        try:
            response = self._session.request(
                call.method, call.url, json=call.json, data=call.data, files=call.files, timeout=limits, stream=True
            )
            try:
                body = read_capped(response, self.max_reply_bytes)  # the whole body: a cut-off reply fails here
            finally:
                response.close()
        except requests.Timeout:
            _report(Attempt(endpoint, None, time.monotonic() - started))
            raise TransientError(f"timed out after {read_timeout:g} s waiting for {host}") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
            _report(Attempt(endpoint, None, time.monotonic() - started))
            raise TransientError(f"connection to {host} closed mid-reply") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ):
            raise ProviderError(
                self.provider, f"invalid URL for {host}: check the base URL", retryable=False
            ) from None
        except requests.ConnectionError:
            _report(Attempt(endpoint, None, time.monotonic() - started))
            raise TransientError(f"could not connect to {host}") from None
        except requests.RequestException as exc:
            _report(Attempt(endpoint, None, time.monotonic() - started))
            raise TransientError(f"request to {host} failed ({type(exc).__name__})") from None
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.retry_after_cap)
        _report(Attempt(endpoint, response.status_code, time.monotonic() - started, retry_after))
        if body is None:  # not retried: the same request would most likely be answered the same way
            raise ProviderError(
                self.provider,
                f"the reply from {host} is larger than {size_text(self.max_reply_bytes)}; refused",
                status=response.status_code,
                retryable=False,
            )
        return _Reply(response.status_code, response.headers, body)

    def _decode(self, reply: _Reply) -> dict[str, Any]:
        status = reply.status
        if status >= 400:
            message, code = upstream_error(reply.body)
            text = clip(self._safe(message)) if message else _reason(status)
            if status in (401, 403):
                text = f"{text} (check the API key)"
            if code in REFUSAL_CODES:
                raise RefusalError(self.provider, f"refused by moderation: {text}", status=status)
            if code in QUOTA_CODES:
                raise ProviderError(self.provider, f"quota exhausted: {text}", status=status, retryable=False)
            if status in RETRIED_STATUSES or status >= 500:
                retry_after = parse_retry_after(reply.headers.get("Retry-After"), self.retry_after_cap)
                raise TransientError(text, status=status, retry_after=retry_after)
            raise ProviderError(self.provider, text, status=status, retryable=False)
        try:
            parsed = json.loads(reply.body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep to read
            raise TransientError("invalid JSON reply", status=status) from None
        if not isinstance(parsed, dict):
            raise TransientError("invalid JSON reply (not an object)", status=status)
        return parsed

    # -- retry policy ----------------------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exponent = max(0, state.attempt_number - 1)
        seconds = min(self.backoff_cap, self.backoff_base * 2**exponent) + random.uniform(0, self.backoff_base)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            seconds = max(seconds, exc.retry_after)  # the server said when: never earlier
        return seconds

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: attempt %d failed (%s); retrying in %.2f s", self.provider, state.attempt_number, exc, sleep)

    def _safe(self, text: str) -> str:
        """``text`` with any credential of this client blanked out (an upstream may echo it back)."""
        for secret in self._secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text


class _Authorization(AuthBase):
    """The provider's own ``Authorization`` header on every request."""

    def __init__(self, value: str):
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.value
        return request

    def __repr__(self) -> str:  # never show the key
        return "_Authorization(***)"


def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in {"authorization", "proxy-authorization", "cookie"} or "key" in lowered or "token" in lowered


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error reply"


def bearer_headers(api_key: str | None) -> dict[str, str]:
    """An ``Authorization: Bearer`` header when a key is set, else none."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def client_from_settings(
    provider: str,
    settings: Settings,
    headers: Mapping[str, str] | None = None,
    *,
    backoff_base: float = BACKOFF_BASE_SECONDS,
    max_reply_bytes: int = MAX_REPLY_BYTES,
) -> HttpClient:
    """A client with the timeout, attempts and in-flight limit of the settings (``backoff_base``: tests shorten it)."""
    return HttpClient(
        provider,
        timeout=settings.http_timeout_seconds,
        max_attempts=settings.http_max_attempts,
        max_in_flight=settings.provider_max_in_flight,
        headers=headers,
        backoff_base=backoff_base,
        max_reply_bytes=max_reply_bytes,
    )


def join_url(base: str, path: str) -> str:
    """``base`` and ``path`` with exactly one slash between them."""
    return base.rstrip("/") + "/" + path.lstrip("/")


class HttpProvider:
    """Base of the HTTP providers: the settings and one ``HttpClient`` named after the provider."""

    provider = "http"
    max_reply_bytes = MAX_REPLY_BYTES  # an image provider allows more: its JSON replies carry images

    def __init__(self, settings: Any, client: HttpClient):
        self.settings = settings
        self.client = client

    @classmethod
    def headers_for(cls, settings: Any) -> dict[str, str]:
        return {}

    @classmethod
    def from_settings(cls, settings: Any, *, backoff_base: float = BACKOFF_BASE_SECONDS) -> Self:
        client = client_from_settings(
            cls.provider, settings, cls.headers_for(settings), backoff_base=backoff_base, max_reply_bytes=cls.max_reply_bytes
        )
        return cls(settings, client)
