"""The researcher's cockpit: ``generation_tasks.diversity``, the diversity figures the review computes once per
task (Vendi score, mean pairwise distance and distinct-n of bios, unique names, face diversity and the identity
check's same-/different-person distance histograms with the equal-error rate), and
``generation_results.bio_terms``, each persona's bio words counted once by the review (a hash and a count per
distinct word), which the dataset map reads instead of re-reading and re-splitting every bio at each draw.
Both nullable: older tasks have no figures, and the map counts the words of older personas as it draws them.

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
    with op.batch_alter_table("generation_results") as batch:
        batch.add_column(sa.Column("bio_terms", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        batch.drop_column("bio_terms")
    with op.batch_alter_table("generation_tasks") as batch:
        batch.drop_column("diversity")
