"""add_ethnicity_and_age_to_generation_results (seed revision; production databases are here).

Revision ID: fbc78f685fa2
Revises: 7e69fd85074a
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "fbc78f685fa2"
down_revision = "7e69fd85074a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        batch.add_column(sa.Column("ethnicity", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("age", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        batch.drop_column("age")
        batch.drop_column("ethnicity")
