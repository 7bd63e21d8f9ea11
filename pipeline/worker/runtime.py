"""What a process needs to serve the app or run workers: settings, migrated database, storage, worker."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from db.session import Database, migrate
from pipeline.core.config import Settings
from pipeline.providers.registry import check_provider_names
from pipeline.storage import Storage, open_storage
from pipeline.worker.executor import Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    storage: Storage
    worker: Worker | None = None
    _worker_thread: threading.Thread | None = field(default=None, repr=False)

    def start_worker(self) -> Worker:
        """Start one in-process executor in a daemon thread (idempotent)."""
        if self.worker is None:
            self.worker = Worker(self.db, self.storage, self.settings)
            self._worker_thread = threading.Thread(target=self.worker.run, name="in-app-worker", daemon=True)
            self._worker_thread.start()
        return self.worker

    def wake_worker(self) -> None:
        """Have the in-process worker, if any, look for work now (after a submit, a retry or a re-run) rather than
        at its next poll."""
        if self.worker is not None:
            self.worker.wake()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            if self._worker_thread is not None:
                self._worker_thread.join(timeout=30)
        self.db.dispose()


def open_runtime(settings: Settings, *, start_worker: bool | None = None) -> Runtime:
    """Validate the configuration, migrate the database and open storage; start the worker if configured."""
    check_provider_names(settings.persona_provider, settings.image_provider)
    settings.cookie_key()  # fails early in production without AUTH_COOKIE_KEY
    migrate(settings.database_url)
    runtime = Runtime(settings, Database(settings.database_url), open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url))
    if settings.worker_in_app if start_worker is None else start_worker:
        runtime.start_worker()
    return runtime
