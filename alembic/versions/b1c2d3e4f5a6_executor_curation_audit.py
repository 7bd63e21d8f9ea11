"""Our additions after the seed: roles and lock-out, executor leases and snapshots, per-persona status and
image metadata, curation and quality, the audit log and saved views.

Existing data is kept: the lowest-id user becomes 'admin' (the original let anyone edit global settings),
legacy results become 'completed' when they have images (else 'pending', so a retry makes them), their
image_count is their number of images, and slot is their position within (task, batch) so the new
uniqueness rule holds for them too.

Revision ID: b1c2d3e4f5a6
Revises: fbc78f685fa2
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "b1c2d3e4f5a6"
down_revision = "fbc78f685fa2"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

def task_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("config_snapshot", JSON_TYPE, nullable=True),
        sa.Column("targets", JSON_TYPE, nullable=True),
        sa.Column("rerun_of", sa.String(length=12), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("quality_summary", JSON_TYPE, nullable=True),
        sa.Column("targets_report", JSON_TYPE, nullable=True),
    )


def result_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("image_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("image_meta", JSON_TYPE, nullable=True),
        sa.Column("favorite", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("tags", JSON_TYPE, nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("curation", sa.String(length=10), nullable=True),
        sa.Column("quality", JSON_TYPE, nullable=True),
        sa.Column("quality_flags", JSON_TYPE, nullable=True),
    )


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(length=20), server_default="user", nullable=False))
        batch.add_column(sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("locked_until", sa.DateTime(), nullable=True))
    op.execute("UPDATE users SET role = 'admin' WHERE id = (SELECT min(id) FROM users)")

    with op.batch_alter_table("generation_tasks") as batch:
        for column in task_columns():
            batch.add_column(column)
        batch.create_index("ix_generation_tasks_lease_expires_at", ["lease_expires_at"], unique=False)

    with op.batch_alter_table("generation_results") as batch:
        for column in result_columns():
            batch.add_column(column)

    conn = op.get_bind()
    results = sa.table(
        "generation_results",
        sa.column("id", sa.Integer()),
        sa.column("task_id", sa.Integer()),
        sa.column("batch_number", sa.Integer()),
        sa.column("images", JSON_TYPE),
        sa.column("slot", sa.Integer()),
        sa.column("status", sa.String()),
        sa.column("image_count", sa.Integer()),
    )
    rows = conn.execute(
        sa.select(results.c.id, results.c.task_id, results.c.batch_number, results.c.images).order_by(
            results.c.task_id, results.c.batch_number, results.c.id
        )
    ).all()
    position: dict[tuple[int, int], int] = {}
    for row_id, task_pk, batch_number, images in rows:
        slot = position.get((task_pk, batch_number), 0)
        position[(task_pk, batch_number)] = slot + 1
        count = len(images) if isinstance(images, list) else 0
        conn.execute(
            sa.update(results)
            .where(results.c.id == row_id)
            .values(slot=slot, image_count=count, status="completed" if count else "pending")
        )

    with op.batch_alter_table("generation_results") as batch:
        batch.create_unique_constraint("uq_generation_results_task_batch_slot", ["task_id", "batch_number", "slot"])
        batch.create_index("ix_generation_results_task_status", ["task_id", "status"], unique=False)

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_audit_log_user_id", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"], unique=False)
    op.create_index("ix_audit_log_target", "audit_log", ["target"], unique=False)

    op.create_table(
        "saved_views",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("params", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_saved_views_user_id", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "name", name="uq_saved_views_user_name"),
    )


def downgrade() -> None:
    op.drop_table("saved_views")
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("generation_results") as batch:
        batch.drop_index("ix_generation_results_task_status")
        batch.drop_constraint("uq_generation_results_task_batch_slot", type_="unique")
        for column in reversed(result_columns()):
            batch.drop_column(column.name)
    with op.batch_alter_table("generation_tasks") as batch:
        batch.drop_index("ix_generation_tasks_lease_expires_at")
        for column in reversed(task_columns()):
            batch.drop_column(column.name)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("locked_until")
        batch.drop_column("failed_logins")
        batch.drop_column("role")
