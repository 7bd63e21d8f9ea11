"""add_randomize_image_style_config: one more FALSE row in config (seed revision).

Revision ID: d8982580d2a4
Revises: 70c50b9233b6
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d8982580d2a4"
down_revision = "70c50b9233b6"
branch_labels = None
depends_on = None

CONFIG = sa.table("config", sa.column("key", sa.String()), sa.column("value", sa.Boolean()))


def upgrade() -> None:
    op.bulk_insert(CONFIG, [{"key": "randomize_image_style", "value": False}])


def downgrade() -> None:
    op.execute(CONFIG.delete().where(CONFIG.c.key == "randomize_image_style"))
