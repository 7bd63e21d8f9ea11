"""create_settings_table: key/value settings with the four default bio prompts (seed revision).

Revision ID: d8cfd3cb4083
Revises: 25698f3f906f
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d8cfd3cb4083"
down_revision = "25698f3f906f"
branch_labels = None
depends_on = None

DEFAULT_BIO_PROMPTS = {
    "bio_prompt_facebook": (
        "Write a Facebook 'Intro' bio in the first person, 1-3 sentences, warm and personal: where they live or are "
        "from, what they do, family or hobbies. Natural, unpolished, no hashtags, at most one emoji."
    ),
    "bio_prompt_instagram": (
        "Write an Instagram bio of at most 150 characters: short fragments separated by line breaks or ' | ', "
        "interests and vibe, up to two emojis, no hashtags spam, no links."
    ),
    "bio_prompt_x": (
        "Write an X (Twitter) bio of at most 160 characters: witty or opinionated, profession or passions, "
        "may use one or two relevant hashtags, no links."
    ),
    "bio_prompt_tiktok": (
        "Write a TikTok bio of at most 80 characters: casual, playful, what their videos are about, "
        "one emoji allowed."
    ),
}


def upgrade() -> None:
    settings = op.create_table(
        "settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_settings_key", "settings", ["key"], unique=True)
    op.bulk_insert(settings, [{"key": k, "value": v} for k, v in DEFAULT_BIO_PROMPTS.items()])


def downgrade() -> None:
    op.drop_index("ix_settings_key", table_name="settings")
    op.drop_table("settings")
