"""create_generation_results_table (seed revision).

Revision ID: 3d677a879bd9
Revises: 3a0f944324eb
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "3d677a879bd9"
down_revision = "3a0f944324eb"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generation_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("batch_number", sa.Integer(), nullable=False),
        sa.Column("firstname", sa.String(length=100), nullable=False),
        sa.Column("lastname", sa.String(length=100), nullable=False),
        sa.Column("gender", sa.String(length=10), nullable=False),
        sa.Column("bio_facebook", sa.Text(), nullable=True),
        sa.Column("bio_instagram", sa.Text(), nullable=True),
        sa.Column("bio_x", sa.Text(), nullable=True),
        sa.Column("bio_tiktok", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["generation_tasks.id"], name="fk_generation_results_task_id", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_generation_results_task_id", "generation_results", ["task_id"], unique=False)
    op.create_index("ix_generation_results_batch_number", "generation_results", ["batch_number"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_generation_results_batch_number", table_name="generation_results")
    op.drop_index("ix_generation_results_task_id", table_name="generation_results")
    op.drop_table("generation_results")
