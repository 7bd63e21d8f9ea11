"""Tasks the original system left unfinished wait, held, until an administrator resumes or cancels them
(issue 20, item 2).

The original left tasks ``pending`` or ``generating-*`` when it stopped, with no frozen configuration and no
seed: a worker claiming them would call the (paid) providers with empty bio prompts. Each such task (not
finished, no config snapshot) gets a configuration frozen from the settings rows as they are now (the bio
prompts, the toggles, the identity-check mode: the parts of ``pipeline.submit.submission.build_snapshot`` that
live in the database; the providers and models are the process's configuration, added when the task is
resumed), a seed, and the status ``held``, which no worker claims. Any lease is dropped, so a worker of the
previous version that still runs one stops at its next write.

Downgrade: the previous version has no ``held``; a held task becomes ``cancelled`` (its configuration and
seed kept, a line in its error log) so that the previous version does not start it on its own: retry it there.

Revision ID: d1a2b3c4d5e6
Revises: c4e5f6a7b8c9
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "d1a2b3c4d5e6"
down_revision = "c4e5f6a7b8c9"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
HELD = "held"
FINISHED = ("completed", "partial", "failed", "cancelled")
# Written out, not imported: a migration must keep doing what it did when the code around it changes.
# tests/integration/test_held_tasks.py checks they match pipeline.core.domain.
BIO_PROMPT_KEYS = ("bio_prompt_facebook", "bio_prompt_instagram", "bio_prompt_x", "bio_prompt_tiktok")
CONFIG_TOGGLES = ("randomize_face_base", "randomize_face_gender_lock", "crop_white_borders", "randomize_image_style")
IDENTITY_SETTING_KEY = "identity_check"
DOWNGRADE_NOTE = "held at upgrade; cancelled by a downgrade so that it does not start on its own: retry it to run it"

TASKS = sa.table(
    "generation_tasks",
    sa.column("id", sa.Integer()),
    sa.column("status", sa.String()),
    sa.column("seed", sa.BigInteger()),
    sa.column("config_snapshot", JSON_TYPE),
    sa.column("lease_expires_at", sa.DateTime()),
    sa.column("worker_id", sa.String()),
    sa.column("cancel_requested", sa.Boolean()),
    sa.column("error_log", sa.Text()),
    sa.column("completed_at", sa.DateTime()),
    sa.column("updated_at", sa.DateTime()),
)
SETTINGS = sa.table("settings", sa.column("key", sa.String()), sa.column("value", sa.Text()))
CONFIG = sa.table("config", sa.column("key", sa.String()), sa.column("value", sa.Boolean()))


def frozen_snapshot(conn: sa.Connection, now: datetime) -> dict[str, object]:
    """The configuration a held task keeps: what the settings and config rows say now."""
    settings = {key: value for key, value in conn.execute(sa.select(SETTINGS.c.key, SETTINGS.c.value))}
    toggles = {key: value for key, value in conn.execute(sa.select(CONFIG.c.key, CONFIG.c.value))}
    mode = str(settings.get(IDENTITY_SETTING_KEY) or "auto").strip().lower()
    return {
        "frozen_at": now.isoformat(),
        "frozen_by": f"upgrade (migration {revision}): the task was left unfinished by the previous version",
        "bio_prompts": {key: settings.get(key, "") for key in BIO_PROMPT_KEYS},
        "toggles": {key: bool(toggles.get(key, False)) for key in CONFIG_TOGGLES},
        "identity": {"mode": mode if mode in ("auto", "on", "off") else "auto"},
    }


def upgrade() -> None:
    conn = op.get_bind()
    legacy = conn.execute(
        sa.select(TASKS.c.id).where(TASKS.c.status.not_in(FINISHED), TASKS.c.config_snapshot.is_(None))
    ).scalars().all()
    if not legacy:
        return
    now = datetime.now(timezone.utc)
    snapshot = frozen_snapshot(conn, now)
    for task_pk in legacy:
        conn.execute(
            sa.update(TASKS)
            .where(TASKS.c.id == task_pk)
            .values(
                status=HELD,
                config_snapshot=snapshot,
                seed=secrets.randbelow(2**31),  # the range submit_task draws from
                lease_expires_at=None,
                worker_id=None,
                cancel_requested=False,
                updated_at=now.replace(tzinfo=None),
            )
        )


def downgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for task_pk, error_log in conn.execute(sa.select(TASKS.c.id, TASKS.c.error_log).where(TASKS.c.status == HELD)):
        conn.execute(
            sa.update(TASKS)
            .where(TASKS.c.id == task_pk)
            .values(status="cancelled", completed_at=now, updated_at=now,
                    error_log="\n".join(line for line in (error_log, DOWNGRADE_NOTE) if line))
        )
