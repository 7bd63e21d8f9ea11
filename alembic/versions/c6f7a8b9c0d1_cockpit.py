"""Per-task diversity figures for the cockpit (issue 22).

Revision ID: c6f7a8b9c0d1
Revises: b5e6f7a8b9c0
"""

from __future__ import annotations

revision = "c6f7a8b9c0d1"
down_revision = "b5e6f7a8b9c0"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
