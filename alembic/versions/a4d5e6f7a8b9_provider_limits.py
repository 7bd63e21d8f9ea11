"""Provider limits shared by every worker (issue 21): ``provider_slots``, one row per call in flight (and, for a
requests-per-minute limit, per call started in the last minute), and ``provider_state``, each provider's adaptive
limit, circuit breaker and recent refusals. The limits themselves are rows of ``settings``.

Revision ID: a4d5e6f7a8b9
Revises: f3c4d5e6f7a8
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a4d5e6f7a8b9"
down_revision = "f3c4d5e6f7a8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_slots",
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("holder"),
    )
    op.create_index("ix_provider_slots_provider", "provider_slots", ["provider"], unique=False)
    op.create_table(
        "provider_state",
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("effective_limit", sa.Integer(), nullable=True),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("refusals_in_row", sa.Integer(), nullable=False),
        sa.Column("paused_until", sa.DateTime(), nullable=True),
        sa.Column("last_decrease_at", sa.DateTime(), nullable=True),
        sa.Column("last_refusal_at", sa.DateTime(), nullable=True),
        sa.Column("throttled", sa.Integer(), nullable=False),
        sa.Column("throttled_since", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider"),
    )


def downgrade() -> None:
    op.drop_table("provider_state")
    op.drop_index("ix_provider_slots_provider", table_name="provider_slots")
    op.drop_table("provider_slots")
