"""Failed logins counted by client as well as by account, and sessions a logout (or a password reset) ends
(issue 20, items 4 and 10).

``login_throttle`` holds one row per key that failed to log in: ``client:<address>`` (a growing delay per
failed attempt from one client, so that a stranger cannot keep an account locked) and ``email:<address>`` for
e-mails that have no account (they lock like a real account does, so a login never tells whether an e-mail
is known). Rows are forgotten a day after their last failure.

``users.sessions_revoked_at``: sessions and login cookies issued before it are refused by the login gate. A
logout sets it (the library's cookie cannot be revoked in the browser that copied it), and so does a password
reset.

Downgrade drops both: nothing but throttling state is lost.

Revision ID: e2b3c4d5e6f7
Revises: d1a2b3c4d5e6
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e2b3c4d5e6f7"
down_revision = "d1a2b3c4d5e6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_failure_at", sa.DateTime(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_login_throttle_key", "login_throttle", ["key"], unique=True)
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("sessions_revoked_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("sessions_revoked_at")
    op.drop_index("ix_login_throttle_key", table_name="login_throttle")
    op.drop_table("login_throttle")
