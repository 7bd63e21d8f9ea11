"""Gallery downloads through the real app server (``streamlit run app.py``): a prepared export is streamed from
disk by ``/downloads/<token>`` with the export's exact bytes; forged, expired and revoked links get 403, a
removed file 404; and serving a 200 MB file leaves the server's peak memory nearly where it was.

Also, without a server: a second prepare of the same view reuses the file until the view's data changes, and
files nobody prepared for an hour are removed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from starlette.requests import Request

from db.models import GenerationResult, GenerationTask, User, utcnow
from db.session import Database, migrate
from pipeline.core.config import Settings, reset_settings_cache
from pipeline.core.errors import AccessDenied, NotFoundError, ValidationError
from pipeline.outputs import downloads
from pipeline.outputs.browse import GalleryFilter, set_favorite
from pipeline.outputs.exports import export_view
from pipeline.storage import LocalStorage
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60
COOKIE_KEY = "test-cookie-key-for-download-links"
BIG = 200 * 1024 * 1024


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def peak_rss_kb(self) -> int:
        """The server process's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/_stcore/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> tuple[Database, Settings, User, str]:
    """A migrated SQLite database with a finished task of four personas, the settings the server will share."""
    migrate(sqlite_url)
    database = Database(sqlite_url)
    settings = make_settings(sqlite_url, tmp_path, auth_cookie_key=COOKIE_KEY)
    user = make_user(database)
    task_id = submit(database, settings, user, count=4, images=4)
    run_worker(database, local_storage(tmp_path), settings)
    return database, settings, user, task_id


@pytest.fixture
def server(tmp_path: Path, world: tuple[Database, Settings, User, str]) -> Iterator[AppServer]:
    """``streamlit run app.py`` on a free port, on the world's database, data folder and cookie key."""
    _, settings, _, _ = world
    port = _free_port()
    foreign = ("STREAMLIT_", "FLOWISE_", "OPENAI_", "S3_", "FACES_", "AUTH_COOKIE_", "DATABASE_", "STORAGE_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(foreign)}
    env.update(
        DATABASE_URL=settings.database_url, STORAGE_URL=settings.storage_url, DATA_DIR=str(settings.data_dir),
        AUTH_COOKIE_KEY=COOKIE_KEY, PERSONA_PROVIDER="offline", IMAGE_PROVIDER="offline", WORKER_IN_APP="0",
        APP_ENV="test", PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "streamlit.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    app = AppServer(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _healthy(app.url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.25)
        yield app
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _fetch(url: str) -> requests.Response:
    return requests.get(url, stream=True, timeout=60, headers={"Accept-Encoding": "identity"})


def test_the_route_streams_the_prepared_export_and_refuses_bad_links(
    server: AppServer, world: tuple[Database, Settings, User, str], tmp_path: Path
) -> None:
    database, settings, user, task_id = world
    storage = local_storage(tmp_path)
    flt = GalleryFilter(task_ids=[task_id])
    for fmt in ("csv", "zip"):
        prepared = downloads.prepare_download(database, storage, settings, user, flt, fmt)
        reference = export_view(database, storage, user, flt, fmt, tmp_path / f"reference-{fmt}.{fmt}")
        with _fetch(server.url + prepared.url) as reply:
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-disposition"] == f'attachment; filename="{prepared.filename}"'
            assert reply.headers["content-type"].startswith(downloads.MIME_TYPES[fmt])
            body = b"".join(reply.iter_content(1 << 16))
        if fmt == "csv":
            assert body == reference.read_bytes()
        else:  # a ZIP's manifest holds its export time: compare the entries
            with zipfile.ZipFile(io.BytesIO(body)) as got, zipfile.ZipFile(reference) as want:
                assert got.namelist() == want.namelist()
                assert all(got.read(n) == want.read(n) for n in want.namelist() if n != "manifest.json")

    prepared = downloads.prepare_download(database, storage, settings, user, flt, "csv")
    payload, _, signature = prepared.token.partition(".")
    forged = downloads.sign_link(make_settings(settings.database_url, tmp_path, auth_cookie_key="another key"),
                                 user, _stored_name(settings), prepared.expires_at)
    expired = downloads.sign_link(settings, user, _stored_name(settings), time.time() - 1)
    for token in (f"{payload}.{signature[:-2]}AA", forged, expired, "nonsense", payload):
        with _fetch(server.url + downloads.ROUTE + token) as reply:
            assert reply.status_code == 403, (token, reply.text)
            assert "download link" in reply.text
    with database.transaction() as session:  # a deactivated user's links stop working at once
        session.execute(sa.update(User).where(User.id == user.id).values(is_active=False))
    with _fetch(server.url + prepared.url) as reply:
        assert reply.status_code == 403
    with database.transaction() as session:
        session.execute(sa.update(User).where(User.id == user.id).values(is_active=True))
    with _fetch(server.url + prepared.url) as reply:
        assert reply.status_code == 200
    for path in downloads.downloads_dir(settings).iterdir():
        path.unlink()
    with _fetch(server.url + prepared.url) as reply:
        assert reply.status_code == 404 and "prepare it again" in reply.text


def _stored_name(settings: Settings) -> str:
    return next(p.name for p in downloads.downloads_dir(settings).iterdir() if p.name.endswith(".csv"))


def test_a_large_download_leaves_the_server_memory_flat(
    server: AppServer, world: tuple[Database, Settings, User, str]
) -> None:
    _, settings, user, _ = world
    folder = downloads.downloads_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    name = "0" * 64 + "-personas.zip"
    with (folder / name).open("wb") as out:  # a sparse 200 MB file: no disk, all of it read back as zeros
        out.truncate(BIG)
    token = downloads.sign_link(settings, user, name, time.time() + 60)
    with _fetch(server.url + downloads.ROUTE + token) as warm:  # the route's first use: imports, pool, thread
        assert warm.status_code == 200
        next(warm.iter_content(1 << 16))
    before = server.peak_rss_kb()
    received = 0
    with _fetch(server.url + downloads.ROUTE + token) as reply:
        assert reply.status_code == 200 and int(reply.headers["content-length"]) == BIG
        for chunk in reply.iter_content(1 << 20):
            received += len(chunk)
    after = server.peak_rss_kb()
    assert received == BIG
    growth_mb = (after - before) / 1024
    print(f"peak RSS {before / 1024:.0f} MB -> {after / 1024:.0f} MB while serving {BIG >> 20} MB")
    assert growth_mb < 20, growth_mb  # the file is 200 MB: it is streamed, never held


def test_prepare_reuses_the_file_while_the_view_is_unchanged(
    world: tuple[Database, Settings, User, str], tmp_path: Path
) -> None:
    database, settings, user, task_id = world
    storage = local_storage(tmp_path)
    flt = GalleryFilter(task_ids=[task_id])
    first = downloads.prepare_download(database, storage, settings, user, flt, "jsonl")
    path = downloads.open_download(database, settings, first.token).path
    written = path.stat().st_mtime_ns
    again = downloads.prepare_download(database, storage, settings, user, flt, "jsonl")
    assert downloads.open_download(database, settings, again.token).path == path
    assert path.read_text().count("\n") == 4
    other_view = downloads.prepare_download(database, storage, settings, user, GalleryFilter(task_ids=[task_id],
                                                                                           favorite=True), "jsonl")
    assert downloads.open_download(database, settings, other_view.token).path != path
    os.utime(path, ns=(written - 10**9, written - 10**9))
    set_favorite(database, user, results_of(database, task_id)[0].id, True)  # the data changed: a new file
    changed = downloads.prepare_download(database, storage, settings, user, flt, "jsonl")
    assert downloads.open_download(database, settings, changed.token).path != path
    with pytest.raises(ValidationError):
        downloads.prepare_download(database, storage, settings, user, flt, "exe")
    stranger = make_user(database, "stranger@example.org", admin=False)
    with pytest.raises(NotFoundError):
        downloads.prepare_download(database, storage, settings, stranger, flt, "csv")
    with pytest.raises(AccessDenied):  # a link for an administrator's view dies with the role
        with database.transaction() as session:
            session.execute(sa.update(User).where(User.id == user.id).values(role="user"))
        downloads.open_download(database, settings, changed.token)
    with pytest.raises(AccessDenied):
        downloads.open_download(database, settings, changed.token, now=changed.expires_at + 1)

    later = time.time() + downloads.KEEP_SECONDS + 1  # an hour on, nobody prepared them: removed
    downloads.remove_stale(downloads.downloads_dir(settings), later)
    assert list(downloads.downloads_dir(settings).iterdir()) == []


# --- preparing and serving a large download, in this process -------------------------------------------------

LARGE_PERSONAS, LARGE_VARIATIONS = 200, 4
PHOTO_BYTES = 256 * 1024  # a 1024 x 1024 JPEG from an image model is a few hundred KB


class _Photos(LocalStorage):
    """A local storage whose every image reads as ``PHOTO_BYTES`` of incompressible data behind a JPEG
    signature, different for every key (as real photos are: no format may deduplicate them), without the
    disk a thousand real files would take."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.body = os.urandom(PHOTO_BYTES)

    def get(self, uri: str) -> bytes:
        return b"\xff\xd8\xff\xe0" + hashlib.sha256(uri.encode()).digest() + self.body[36:]


def _seed_large_task(database: Database, user: User) -> str:
    """A completed task of ``LARGE_PERSONAS`` personas, each with a base and ``LARGE_VARIATIONS`` variations."""
    task_id, now = "largeexport1", utcnow()
    with database.transaction() as session:
        session.execute(sa.insert(GenerationTask), [{
            "task_id": task_id, "user_id": user.id, "persona_description": "a large view", "bio_language": "English",
            "number_to_generate": LARGE_PERSONAS, "images_per_persona": LARGE_VARIATIONS, "seed": 1,
            "status": "completed", "created_at": now, "updated_at": now, "started_at": now, "completed_at": now,
            "attempts": 1, "cancel_requested": False, "config_snapshot": {"providers": {"persona": "offline"}},
        }])
        pk = session.scalar(sa.select(GenerationTask.id).where(GenerationTask.task_id == task_id))
        rows = []
        for n in range(LARGE_PERSONAS):
            batch, slot = n // 10 + 1, n % 10
            keys = [f"{task_id}/b{batch:03d}-s{slot:02d}/{name}.jpg"
                    for name in ["base", *(f"img{i:02d}" for i in range(1, LARGE_VARIATIONS + 1))]]
            rows.append({
                "task_id": pk, "batch_number": batch, "slot": slot, "firstname": f"Ana{n}", "lastname": "Silva",
                "gender": "f", "age": 30, "bio_facebook": "cyclist " * 40, "status": "completed",
                "favorite": n == 0, "base_image_url": keys[0], "images": keys[1:], "image_count": LARGE_VARIATIONS,
                "image_meta": {"base": {"key": keys[0]}, "images": [{"key": k} for k in keys[1:]]},
                "created_at": now, "updated_at": now,
            })
        session.execute(sa.insert(GenerationResult), rows)
    return task_id


def _memory_kb() -> tuple[int, int]:
    """This process's resident memory now and its peak since the last ``_reset_peak`` (VmRSS, VmHWM)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            found[line.split(":")[0]] = int(line.split()[1])
    return found["VmRSS"], found["VmHWM"]


def _reset_peak() -> bool:
    """Start a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    rss, peak = _memory_kb()
    return peak <= rss + 1024


def _serve(token: str) -> int:
    """Run the app's download route for ``token`` as the server would; the bytes it sends, counted and dropped."""
    import app  # the Streamlit app module (imported here: it builds the st.App, which only this test needs)

    scope = {"type": "http", "method": "GET", "path": downloads.ROUTE + token, "path_params": {"token": token},
             "headers": [], "query_string": b"", "http_version": "1.1"}
    sent = 0
    status = 0

    requested = False

    async def receive() -> dict[str, object]:
        nonlocal requested
        if requested:  # the client stays connected: the response listens for a disconnect while it streams
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        nonlocal sent, status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]
        elif message["type"] == "http.response.body":
            sent += len(message.get("body", b""))  # type: ignore[arg-type]

    async def run() -> None:
        response = await app.download(Request(scope, receive))
        await response(scope, receive, send)

    asyncio.run(run())
    assert status == 200, status
    return sent


@pytest.mark.parametrize("fmt", ["zip", "hf", "parquet-images"])
def test_preparing_and_serving_a_large_download_keeps_memory_flat(
    fmt: str, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(sqlite_url)
    database = Database(sqlite_url)
    settings = make_settings(sqlite_url, tmp_path, auth_cookie_key=COOKIE_KEY)
    for key, value in {"DATABASE_URL": sqlite_url, "STORAGE_URL": settings.storage_url,
                       "DATA_DIR": str(settings.data_dir), "AUTH_COOKIE_KEY": COOKIE_KEY}.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    user = make_user(database)
    task_id = _seed_large_task(database, user)
    storage = _Photos(tmp_path / "media")
    flt = GalleryFilter(task_ids=[task_id])
    small = downloads.prepare_download(database, storage, settings, user, GalleryFilter(task_ids=[task_id],
                                                                                       favorite=True), fmt)
    _serve(small.token)  # first use: imports, connection pools, pyarrow's allocator
    if not _reset_peak():
        pytest.skip("peak memory cannot be measured here (needs Linux's /proc/self/clear_refs)")
    before, _ = _memory_kb()
    prepared = downloads.prepare_download(database, storage, settings, user, flt, fmt)
    sent = _serve(prepared.token)
    _, peak = _memory_kb()
    reset_settings_cache()
    images = LARGE_PERSONAS * (1 + LARGE_VARIATIONS)
    assert sent == prepared.size > images * PHOTO_BYTES
    growth = (peak - before) * 1024
    print(f"{fmt}: {prepared.size / 1e6:.0f} MB prepared and served, peak memory +{growth / 1e6:.1f} MB")
    assert growth < prepared.size / 5, (growth, prepared.size)  # a few personas' images at a time, never the file
    database.dispose()
