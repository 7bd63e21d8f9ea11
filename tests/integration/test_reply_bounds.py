"""Reply bounds (issue 20, item 9): provider replies and legacy image URLs are read up to a size bound and refused
past it with a clear error, without reading (or keeping) the rest; image providers get a larger bound."""

from __future__ import annotations

import base64
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.core.errors import ProviderError, StorageError
from pipeline.providers.http import HttpClient
from pipeline.storage import LocalStorage, read_image
from tests.fakes.servers import FakeFlowise, FakeOpenAI, portrait_png, reply
from tests.integration.test_http_providers import flowise_personas, openai_images, persona_request

MB = 2**20
MAX_REPLY_BYTES, MAX_IMAGE_REPLY_BYTES = 8 * MB, 64 * MB  # as in pipeline.core.replies (the messages name them)
STREAM_END_BYTES = 200 * MB  # where the endless reply ends, so that an unbounded client fails instead of hanging
CHUNK = b"x" * MB


class _Flood(BaseHTTPRequestHandler):
    """``/endless``: a chunked body of ``STREAM_END_BYTES`` with no length announced. ``/declared``: a length of a
    terabyte announced, then a kilobyte a second (for at most ``seconds``). Counts requests and bytes sent."""

    protocol_version = "HTTP/1.1"
    server: _FloodServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests += 1
        url = urlsplit(self.path)
        try:
            if url.path == "/endless":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(STREAM_END_BYTES // len(CHUNK)):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                    self.server.sent += len(CHUNK)
                self.wfile.write(b"0\r\n\r\n")
            else:
                seconds = float(parse_qs(url.query).get("seconds", ["20"])[0])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    self.wfile.write(b"x" * 1024)
                    self.wfile.flush()
                    self.server.sent += 1024
                    time.sleep(1)
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading and left: as it should
            self.close_connection = True


class _FloodServer(ThreadingHTTPServer):
    daemon_threads = True
    requests = 0
    sent = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def flood() -> Iterator[_FloodServer]:
    server = _FloodServer(("127.0.0.1", 0), _Flood)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: _FloodServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_an_endless_reply_is_refused_at_the_bound_with_flat_memory(flood: _FloodServer) -> None:
    client = HttpClient("flood", timeout=30, max_attempts=3, max_in_flight=1)  # the default bound: 8 MB
    tracemalloc.start()
    try:
        with pytest.raises(ProviderError, match="larger than 8 MB") as caught:
            client.request("GET", _url(flood, "/endless"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"peak while refusing an endless reply at 8 MB: {peak / MB:.1f} MB")
    assert not caught.value.retryable and flood.requests == 1  # not asked again: it would answer the same
    assert peak < 4 * MAX_REPLY_BYTES, f"peak {peak / MB:.0f} MB while reading"  # not the 200 MB sent


def test_a_client_bound_can_be_set(flood: _FloodServer) -> None:
    client = HttpClient("flood", timeout=30, max_attempts=1, max_in_flight=1, max_reply_bytes=2 * MB)
    with pytest.raises(ProviderError, match="larger than 2 MB"):
        client.request("GET", _url(flood, "/endless"))


def test_a_declared_length_past_the_bound_is_refused_before_reading(flood: _FloodServer) -> None:
    client = HttpClient("flood", timeout=30, max_attempts=1, max_in_flight=1)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="larger than 8 MB"):
        client.request("GET", _url(flood, "/declared?seconds=20"))
    assert time.monotonic() - started < 10  # the server trickles for 20 s: the body was never waited for


def test_a_flow_reply_past_the_bound_is_a_clear_provider_error(tmp_path: Path) -> None:
    with FakeFlowise() as flowise:
        flowise.script(reply({"text": "x" * (MAX_REPLY_BYTES + 1)}))
        with pytest.raises(ProviderError, match="larger than 8 MB") as caught:
            flowise_personas(flowise, tmp_path).generate(persona_request(2))
    assert caught.value.provider == "flowise" and len(flowise.requests) == 1


def test_an_image_provider_reads_replies_past_the_json_bound(tmp_path: Path) -> None:
    big = portrait_png() + b"\0" * (MAX_REPLY_BYTES + MB)  # trailing bytes after the PNG's end: still a PNG
    with FakeOpenAI() as openai:
        openai.script(reply({"created": 1, "data": [{"b64_json": base64.b64encode(big).decode()}]}))
        data = openai_images(openai, tmp_path).client.request("POST", openai.url + "/v1/images/generations", json={})
    assert len(base64.b64decode(data["data"][0]["b64_json"])) == len(big) and len(big) < MAX_IMAGE_REPLY_BYTES


def test_a_legacy_image_url_is_read_up_to_the_image_bound(flood: _FloodServer, tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(StorageError, match="larger than 64 MB"):
            read_image(LocalStorage(tmp_path / "media"), _url(flood, "/endless"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"peak while refusing an endless legacy image at 64 MB: {peak / MB:.1f} MB")
    assert peak < 3 * MAX_IMAGE_REPLY_BYTES
    assert flood.sent < STREAM_END_BYTES  # the read stopped; the server's writes failed once the client left


def test_a_legacy_image_url_with_a_declared_length_past_the_bound(flood: _FloodServer, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(StorageError, match="larger than 64 MB"):
        read_image(LocalStorage(tmp_path / "media"), _url(flood, "/declared?seconds=20"))
    assert time.monotonic() - started < 10
