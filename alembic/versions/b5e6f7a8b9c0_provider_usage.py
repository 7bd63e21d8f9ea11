"""Provider usage and task budgets (issue 21): ``provider_usage``, one row per call a task made to a provider
(whether it succeeded, the images it made, the tokens the provider reported, its seconds and its cost at the prices
of the time), and ``generation_tasks.budget``, the most a task may spend (nullable: no budget). The prices are rows
of ``settings`` (``price:<provider>:<model>``); a downgrade leaves them there, unread.

The usage table is a ledger: no foreign key to the task, so a week's spend stays when a task is deleted.

Revision ID: b5e6f7a8b9c0
Revises: a4d5e6f7a8b9
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b5e6f7a8b9c0"
down_revision = "a4d5e6f7a8b9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_pk", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=12), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("tokens_unpriced", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_provider_usage_task_pk", "provider_usage", ["task_pk"], unique=False)
    op.create_index("ix_provider_usage_provider_created_at", "provider_usage", ["provider", "created_at"], unique=False)
    op.create_index("ix_provider_usage_created_at", "provider_usage", ["created_at"], unique=False)
    with op.batch_alter_table("generation_tasks") as batch:
        batch.add_column(sa.Column("budget", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_tasks") as batch:
        batch.drop_column("budget")
    op.drop_index("ix_provider_usage_created_at", table_name="provider_usage")
    op.drop_index("ix_provider_usage_provider_created_at", table_name="provider_usage")
    op.drop_index("ix_provider_usage_task_pk", table_name="provider_usage")
    op.drop_table("provider_usage")
