"""Provider limits shared by every worker: calls in flight and the adaptive limit (issue 21).

Revision ID: a4d5e6f7a8b9
Revises: f3c4d5e6f7a8
"""

from __future__ import annotations

revision = "a4d5e6f7a8b9"
down_revision = "f3c4d5e6f7a8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
