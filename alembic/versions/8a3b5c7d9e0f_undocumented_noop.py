"""Undocumented revision of the original system: kept as a no-op so the chain (and existing databases) line up.

Revision ID: 8a3b5c7d9e0f
Revises: 7e1fabd32d40
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "8a3b5c7d9e0f"
down_revision = "7e1fabd32d40"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
