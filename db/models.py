"""SQLAlchemy 2 typed models.

The seed schema at revision ``fbc78f685fa2`` is kept verbatim (tables, columns, types, index and
constraint names); the columns after the ``# --- additions`` markers come from our own migrations.
Timestamps are stored naive in UTC (as the seed's ``DateTime`` columns) and returned timezone-aware.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A naive ``DateTime`` column holding UTC; Python sees aware datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    GENERATING_DATA = "generating-data"
    DATA_GENERATED = "data-generated"
    GENERATING_IMAGES = "generating-images"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Left unfinished by the original system (no frozen configuration of its own): no worker claims it until an
    # administrator resumes it (then pending) or cancels it. Neither runnable nor finished.
    HELD = "held"

    @classmethod
    def runnable(cls) -> tuple[str, ...]:
        """Statuses a worker may claim (the in-progress ones only with an expired lease)."""
        return (cls.PENDING.value, cls.GENERATING_DATA.value, cls.DATA_GENERATED.value, cls.GENERATING_IMAGES.value)

    @classmethod
    def finished(cls) -> tuple[str, ...]:
        return (cls.COMPLETED.value, cls.PARTIAL.value, cls.FAILED.value, cls.CANCELLED.value)


GENDERS: tuple[str, ...] = ("m", "f", "other")  # a persona's gender; "other" is every value but "m" and "f"


class PersonaStatus(enum.StrEnum):
    PENDING = "pending"  # data stored, images not (all) done
    COMPLETED = "completed"
    FAILED = "failed"



class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (sa.Index("ix_users_email", "email", unique=True),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    password_hash: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    # --- additions
    role: Mapped[str] = mapped_column(sa.String(20), nullable=False, server_default="user", default="user")
    failed_logins: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0", default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # sessions and login cookies issued before this are refused (a logout, a password reset)
    sessions_revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Setting(Base):
    __tablename__ = "settings"
    __table_args__ = (sa.Index("ix_settings_key", "key", unique=True),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    value: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, server_default=sa.func.now())


class Config(Base):
    __tablename__ = "config"
    __table_args__ = (sa.Index("ix_config_key", "key", unique=True),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    value: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, server_default=sa.func.now())


class GenerationTask(Base):
    __tablename__ = "generation_tasks"
    __table_args__ = (
        sa.UniqueConstraint("task_id", name="uq_generation_tasks_task_id"),
        sa.Index("ix_generation_tasks_task_id", "task_id", unique=True),
        sa.Index("ix_generation_tasks_user_id", "user_id"),
        sa.Index("ix_generation_tasks_status", "status"),
        sa.Index("ix_generation_tasks_lease_expires_at", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(12), nullable=False)
    user_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("users.id", name="fk_generation_tasks_user_id"), nullable=False
    )
    persona_description: Mapped[str] = mapped_column(sa.Text, nullable=False)
    bio_language: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    number_to_generate: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    images_per_persona: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    status: Mapped[str] = mapped_column(sa.String(50), nullable=False, server_default="pending", default="pending")
    error_log: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, server_default=sa.func.now())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # --- additions
    seed: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    config_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    targets: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    rerun_of: Mapped[str | None] = mapped_column(sa.String(12), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0", default=0)
    cancel_requested: Mapped[bool] = mapped_column(
        sa.Boolean, nullable=False, server_default=sa.false(), default=False
    )
    quality_summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    targets_report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    diversity: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)  # review: how varied it is
    budget: Mapped[float | None] = mapped_column(sa.Float, nullable=True)  # dollars; None: no budget

    user: Mapped[User] = relationship(lazy="raise")


class GenerationResult(Base):
    __tablename__ = "generation_results"
    __table_args__ = (
        sa.Index("ix_generation_results_task_id", "task_id"),
        sa.Index("ix_generation_results_batch_number", "batch_number"),
        sa.UniqueConstraint("task_id", "batch_number", "slot", name="uq_generation_results_task_batch_slot"),
        sa.Index("ix_generation_results_task_status", "task_id", "status"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(
        sa.Integer,
        sa.ForeignKey("generation_tasks.id", name="fk_generation_results_task_id", ondelete="CASCADE"),
        nullable=False,
    )
    batch_number: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    firstname: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    lastname: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    gender: Mapped[str] = mapped_column(sa.String(10), nullable=False)
    ethnicity: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    age: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    bio_facebook: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    bio_instagram: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    bio_x: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    bio_tiktok: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    job_title: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    workplace: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    edu_establishment: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    edu_study: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    current_city: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    current_state: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    prev_city: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    prev_state: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    about: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    base_image_url: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    images: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, server_default=sa.func.now())
    # --- additions
    slot: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(20), nullable=False, server_default="pending", default="pending")
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0", default=0)
    image_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0", default=0)
    image_meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    favorite: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, server_default=sa.false(), default=False)
    tags: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    rating: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    curation: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)  # keep / reject / NULL
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    quality_flags: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    # the bios' words, counted once by the review for the dataset map (pipeline.core.similarity.bio_terms)
    bio_terms: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=sa.func.now(), default=utcnow, onupdate=utcnow
    )


class AuditLog(Base):
    """Who changed which setting, prompt, toggle or user, from what to what, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_created_at", "created_at"),
        sa.Index("ix_audit_log_target", "target"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        sa.Integer, sa.ForeignKey("users.id", name="fk_audit_log_user_id", ondelete="SET NULL"), nullable=True
    )
    actor: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    target: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    old_value: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    new_value: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=sa.func.now(), default=utcnow
    )


class SavedView(Base):
    """A named gallery view (its filter as query parameters), per user."""

    __tablename__ = "saved_views"
    __table_args__ = (sa.UniqueConstraint("user_id", "name", name="uq_saved_views_user_name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("users.id", name="fk_saved_views_user_id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=sa.func.now(), default=utcnow
    )


class WorkerProcess(Base):
    """A running executor (the app's or a ``python -m pipeline work`` process), seen at each heartbeat: how many
    workers share the waiting tasks, and how many places each has (``db.queries.workers.fair_share``)."""

    __tablename__ = "workers"
    __table_args__ = (sa.Index("ix_workers_seen_at", "seen_at"),)

    worker_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    pid: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    slots: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ProviderSlot(Base):
    """A call to a provider in flight, held by one worker across all processes and hosts
    (``db.queries.limits``): a row counts while ``expires_at`` is ahead (its holder renews it; a dead process's
    row simply expires), and a finished call's row may stay until a minute after ``started_at`` to count
    towards the provider's requests-per-minute limit."""

    __tablename__ = "provider_slots"
    __table_args__ = (sa.Index("ix_provider_slots_provider", "provider"),)

    holder: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    worker_id: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    task_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ProviderState(Base):
    """A provider's adaptive state shared by every worker: the limit it is held to after pushing back (429,
    ``Retry-After``, 503, slow replies), its circuit breaker, and its recent refusals for the Tasks page. Its row
    is also the lock that admits one call at a time (``SELECT … FOR UPDATE``)."""

    __tablename__ = "provider_state"

    provider: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    effective_limit: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)  # None: the configured one
    ceiling: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)  # the limit when it last pushed back
    successes: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)  # since the last change
    refusals_in_row: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_decrease_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_refusal_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    throttled: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)  # refusals since throttled_since
    throttled_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class StorageCleanup(Base):
    """Stored objects (every key below ``prefix``) whose rows are gone but whose removal from storage failed: a
    worker retries it (``pipeline.worker.cleanups``) until the storage confirms, then the row goes."""

    __tablename__ = "storage_cleanups"
    __table_args__ = (sa.Index("ix_storage_cleanups_next_attempt_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(sa.Text, nullable=False)
    reason: Mapped[str] = mapped_column(sa.String(255), nullable=False)  # what removed the rows, e.g. a task delete
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class LoginThrottle(Base):
    """Failed logins of one key: ``client:<address>`` (a growing delay per failure) or ``email:<address>`` of an
    e-mail without an account (locked like an account, so that a login never tells which e-mails exist)."""

    __tablename__ = "login_throttle"
    __table_args__ = (sa.Index("ix_login_throttle_key", "key", unique=True),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(320), nullable=False)
    failures: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0", default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ProviderUsage(Base):
    """One call a task made to a provider (``pipeline.stages.usage``): whether it succeeded, the images it made, the
    tokens the provider reported (None: it reported none), its seconds and its cost at the prices of the time (None:
    the provider had no price; ``tokens_unpriced``: a price per 1k tokens was set but the provider reported no
    tokens, so ``cost`` leaves them out). A ledger: no foreign key to the task, so a week's spend stays when a task
    is deleted."""

    __tablename__ = "provider_usage"
    __table_args__ = (
        sa.Index("ix_provider_usage_task_pk", "task_pk"),
        sa.Index("ix_provider_usage_provider_created_at", "provider", "created_at"),
        sa.Index("ix_provider_usage_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    task_pk: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    task_id: Mapped[str] = mapped_column(sa.String(12), nullable=False)
    user_id: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    worker_id: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    provider: Mapped[str] = mapped_column(sa.String(255), nullable=False)  # kind:provider:model
    kind: Mapped[str] = mapped_column(sa.String(20), nullable=False)  # persona, prompt or image
    ok: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    images: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    input_tokens: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    seconds: Mapped[float] = mapped_column(sa.Float, nullable=False)
    cost: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    tokens_unpriced: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
