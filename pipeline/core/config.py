"""One typed settings object, built once from the environment (and an optional ``.env``).

``get_settings()`` is the only place that reads the environment; everything else receives the
``Settings`` object. Nothing here runs at import time.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.session import DEFAULT_DATABASE_URL
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)
MIN_COOKIE_KEY_CHARS = 32  # secrets.token_urlsafe(32) makes 43

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


class Settings(BaseSettings):
    """Configuration of DESIGN §2. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    storage_url: str = "file://data/media"
    s3_endpoint_url: str | None = None
    persona_provider: str = "offline"
    image_provider: str = "offline"

    flowise_base_url: str | None = None
    flowise_api_key: str | None = Field(default=None, repr=False)
    flowise_persona_flow_id: str | None = None
    flowise_prompt_flow_id: str | None = None

    openai_base_url: str = DEFAULT_OPENAI_BASE_URL
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_chat_model: str | None = None
    openai_image_model: str = "gpt-image-1.5"

    faces_url: str | None = None
    base_prompt_append: str = ""

    app_env: Literal["development", "production", "test"] = "development"
    auth_cookie_key: str | None = Field(default=None, repr=False)
    worker_in_app: bool = True
    trust_proxy_headers: bool = False  # behind a reverse proxy: the login throttle counts X-Forwarded-For's client
    data_dir: Path = Path("data")

    # Executor tuning (documented in the README; defaults suit the embedded setup).
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    task_max_attempts: int = 10  # claims of one task before it is failed (its workers keep dying)
    worker_task_slots: int = 4
    # one task's personas whose images are under way at once; their calls wait for the providers' limits
    personas_in_flight: int = Field(default=64, ge=1, le=1024)
    provider_max_in_flight: int = 8
    http_timeout_seconds: float = 60.0
    http_max_attempts: int = 5
    offline_image_side: int = Field(default=512, ge=64, le=2048)  # offline portraits: side of one photo in px
    identity_processes: int = Field(default=2, ge=1, le=16)  # face-analysis processes of the identity check

    @field_validator("base_prompt_append", mode="before")
    @classmethod
    def _none_to_empty(cls, value: object) -> object:
        return "" if value is None else value

    def require(self, *names: str) -> None:
        """Raise ``ConfigError`` naming the first missing variable among ``names``."""
        for name in names:
            if not getattr(self, name.lower()):
                raise ConfigError(f"{name.upper()} is not set: set it in the environment or in .env")

    def cookie_key(self) -> str:
        """The auth cookie signing key: ``AUTH_COOKIE_KEY`` or, outside production, one made once in data/.

        A ``data/cookie_key`` file shorter than ``MIN_COOKIE_KEY_CHARS`` (empty after a full disk, say) would sign
        cookies anyone could forge: a new key replaces it, which signs everyone out once (a warning in the log)."""
        if self.auth_cookie_key:
            return self.auth_cookie_key
        if self.app_env == "production":
            raise ConfigError("AUTH_COOKIE_KEY is not set: it is required when APP_ENV=production")
        path = self.data_dir / "cookie_key"
        if path.exists():
            key = path.read_text().strip()
            if len(key) >= MIN_COOKIE_KEY_CHARS:
                return key
            log.warning("%s holds %d characters, too short to sign login cookies: a new key replaces it "
                        "(everyone logs in again)", path, len(key))
            path.unlink(missing_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process wrote one first: use theirs
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return Settings()


def reset_settings_cache() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
