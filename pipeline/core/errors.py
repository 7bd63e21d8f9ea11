"""The one exception hierarchy of the pipeline.

Vendor exceptions (requests, boto3, SQLAlchemy, PIL) are wrapped at the edge and never escape
``pipeline/``; pages show ``PipelineError`` messages with ``st.error``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: the message is safe to show to a user (no secrets, no whole upstream bodies)."""


class ValidationError(PipelineError):
    """Bad input from a user or a script: nothing was written. The CLI exits 2."""


class ConfigError(PipelineError):
    """The configuration is incomplete or inconsistent (names the variable to set)."""


class NotFoundError(PipelineError):
    """A task, user or object that does not exist (or is not visible to the caller)."""


class AccessDenied(PipelineError):
    """The caller may not do this (e.g. a non-admin changing global settings)."""


class ConflictError(PipelineError):
    """The operation does not fit the current state (e.g. deleting a running task)."""


class StorageError(PipelineError):
    """Reading, writing or deleting a stored object failed."""


class ProviderError(PipelineError):
    """A persona, prompt or image provider failed after its retries.

    ``retryable`` tells the executor whether the same unit may succeed on a later attempt.
    """

    def __init__(self, provider: str, message: str, *, status: int | None = None, retryable: bool = True):
        self.provider = provider
        self.status = status
        self.retryable = retryable
        where = f"{provider}" + (f" (HTTP {status})" if status is not None else "")
        super().__init__(f"{where}: {message}")


class RefusalError(ProviderError):
    """The provider refused the content (moderation); retrying the same input will not help."""

    def __init__(self, provider: str, message: str, *, status: int | None = None):
        super().__init__(provider, message, status=status, retryable=False)


class ImageCheckError(PipelineError):
    """A generated image failed a structural check (e.g. a grid that is not 2x2)."""


class LeaseLost(PipelineError):
    """This worker no longer holds the task's lease; it must stop touching the task."""


class TaskCancelled(PipelineError):
    """The task was cancelled by a user; raised between units of work."""
