"""``provider_state.ceiling``: the limit at which a provider last pushed back. Near it the adaptive limit grows back
slowly (it probes rather than runs into the provider's own limit again and again); once it grows past it without
a refusal, the column is cleared and the limit grows back at the usual pace. Nullable: none is known at first.

Revision ID: d7a8b9c0d1e2
Revises: c6f7a8b9c0d1
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d7a8b9c0d1e2"
down_revision = "c6f7a8b9c0d1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provider_state") as batch:
        batch.add_column(sa.Column("ceiling", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provider_state") as batch:
        batch.drop_column("ceiling")
