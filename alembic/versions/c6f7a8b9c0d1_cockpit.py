"""The researcher's cockpit: ``generation_tasks.diversity``, the diversity figures the review computes once per
task (Vendi score, mean pairwise distance and distinct-n of bios, unique names, face diversity and the identity
check's same-/different-person distance histograms with the equal-error rate). Nullable: older tasks have none.

Revision ID: c6f7a8b9c0d1
Revises: b5e6f7a8b9c0
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "c6f7a8b9c0d1"
down_revision = "b5e6f7a8b9c0"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("generation_tasks") as batch:
        batch.add_column(sa.Column("diversity", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_tasks") as batch:
        batch.drop_column("diversity")
