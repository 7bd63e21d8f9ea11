""""Test connection" for the configured providers, storage and face library (settings page, CLI).

Each check spends no generation credits: provider classes answer ``check()`` with a cheap call (a ping, a
model list) and never raise. In the app only administrators may run it; what it shows never includes the
credentials or query of ``STORAGE_URL``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from db.models import User
from pipeline.core.config import Settings
from pipeline.core.errors import AccessDenied, PipelineError
from pipeline.providers.registry import ProviderCache, check_provider_names
from pipeline.storage import open_storage
from pipeline.storage.faces import FaceLibrary


@dataclass(frozen=True)
class ProviderCheck:
    kind: str
    name: str
    ok: bool
    detail: str


def _provider_check(cache: ProviderCache, kind: str, name: str) -> ProviderCheck:
    try:
        provider = cache.get(kind, name)
        ok, detail = provider.check()
    except PipelineError as exc:
        ok, detail = False, str(exc)
    return ProviderCheck(kind, name, bool(ok), detail)


def masked_url(url: str) -> str:
    """``url`` without what may be secret: the user and password, the query (S3 keys can ride there) and the
    fragment. ``s3://key:secret@bucket/prefix?region=x`` shows as ``s3://bucket/prefix``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.split("://", 1)[0] + "://…"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _scrubbed(text: str, url: str) -> str:
    """``text`` (an error, which may quote the URL or parts of it) without ``url``'s credentials and query."""
    text = text.replace(url, masked_url(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    if "@" in parts.netloc:
        text = text.replace(parts.netloc.rsplit("@", 1)[0] + "@", "")
    if parts.query:
        text = text.replace("?" + parts.query, "").replace(parts.query, "…")
    return text


def check_storage(settings: Settings) -> ProviderCheck:
    scheme = settings.storage_url.split("://", 1)[0]
    try:
        storage = open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
        storage.list_keys("__connection_check__/")
    except PipelineError as exc:
        return ProviderCheck("storage", scheme, False, _scrubbed(str(exc), settings.storage_url))
    return ProviderCheck("storage", scheme, True, f"{masked_url(settings.storage_url)} is reachable")


def face_counts(settings: Settings) -> dict[str, int] | None:
    """Faces in the configured library by gender, or None when no library (``FACES_URL``) is configured.

    Raises ``PipelineError`` when the library cannot be read.
    """
    if not settings.faces_url:
        return None
    library = FaceLibrary.from_settings(settings)
    return library.counts() if library else {}


def check_faces(settings: Settings) -> ProviderCheck | None:
    try:
        counts = face_counts(settings)
    except PipelineError as exc:
        return ProviderCheck("faces", "library", False, str(exc))
    if counts is None:
        return None
    detail = ", ".join(f"{n} {gender}" for gender, n in counts.items())
    return ProviderCheck("faces", "library", sum(counts.values()) > 0, detail or "no faces found")


def check_providers(settings: Settings, actor: User | None = None) -> list[ProviderCheck]:
    """One result per configured provider, then storage and the face library (when set). ``actor=None`` is the
    command line; in the app, administrators only."""
    if actor is not None and not actor.is_admin:
        raise AccessDenied("only administrators can test the connections")
    check_provider_names(settings.persona_provider, settings.image_provider)
    cache = ProviderCache(settings)
    results = [
        _provider_check(cache, "persona", settings.persona_provider),
        _provider_check(cache, "prompt", settings.persona_provider),
        _provider_check(cache, "image", settings.image_provider),
        check_storage(settings),
    ]
    faces = check_faces(settings)
    if faces is not None:
        results.append(faces)
    return results
