"""add_s3_image_url_fields_to_generation_results (seed revision).

Revision ID: 36b6aa503da9
Revises: 3d677a879bd9
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "36b6aa503da9"
down_revision = "3d677a879bd9"
branch_labels = None
depends_on = None

IMAGE_COLUMNS = ("image_1_url", "image_2_url", "image_3_url", "image_4_url")


def upgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        batch.add_column(sa.Column("base_image_url", sa.Text(), nullable=True))
        for name in IMAGE_COLUMNS:
            batch.add_column(sa.Column(name, sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        for name in reversed(IMAGE_COLUMNS):
            batch.drop_column(name)
        batch.drop_column("base_image_url")
