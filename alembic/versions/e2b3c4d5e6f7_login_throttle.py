"""Failed logins counted by client as well as by account (issue 20, item 4).

Revision ID: e2b3c4d5e6f7
Revises: d1a2b3c4d5e6
"""

from __future__ import annotations

revision = "e2b3c4d5e6f7"
down_revision = "d1a2b3c4d5e6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
