"""add_supplementary_persona_fields_job_education_location_about (seed revision).

Revision ID: 7e69fd85074a
Revises: 8a3b5c7d9e0f
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "7e69fd85074a"
down_revision = "8a3b5c7d9e0f"
branch_labels = None
depends_on = None

COLUMNS = (
    ("job_title", sa.Text()),
    ("workplace", sa.Text()),
    ("edu_establishment", sa.Text()),
    ("edu_study", sa.Text()),
    ("current_city", sa.String(length=255)),
    ("current_state", sa.String(length=255)),
    ("prev_city", sa.String(length=255)),
    ("prev_state", sa.String(length=255)),
    ("about", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
