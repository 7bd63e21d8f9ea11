"""add_max_concurrent_tasks_setting: max_concurrent_tasks='1' (seed revision).

Revision ID: 7e1fabd32d40
Revises: d8982580d2a4
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "7e1fabd32d40"
down_revision = "d8982580d2a4"
branch_labels = None
depends_on = None

SETTINGS = sa.table("settings", sa.column("key", sa.String()), sa.column("value", sa.Text()))


def upgrade() -> None:
    op.bulk_insert(SETTINGS, [{"key": "max_concurrent_tasks", "value": "1"}])


def downgrade() -> None:
    op.execute(SETTINGS.delete().where(SETTINGS.c.key == "max_concurrent_tasks"))
