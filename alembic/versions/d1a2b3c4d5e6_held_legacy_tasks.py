"""Tasks left running by the original system wait, held, with a configuration frozen at upgrade time (issue 20, item 2).

Revision ID: d1a2b3c4d5e6
Revises: c4e5f6a7b8c9
"""

from __future__ import annotations

revision = "d1a2b3c4d5e6"
down_revision = "c4e5f6a7b8c9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
