"""Storage objects a delete could not remove, kept until a worker removes them (issue 20, item 6).

Revision ID: f3c4d5e6f7a8
Revises: e2b3c4d5e6f7
"""

from __future__ import annotations

revision = "f3c4d5e6f7a8"
down_revision = "e2b3c4d5e6f7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
