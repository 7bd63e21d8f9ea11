"""convert_image_urls_to_jsonb_array: image_1_url..image_4_url become the images JSON array (seed revision).

Revision ID: 30c18b6939ce
Revises: 36b6aa503da9
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "30c18b6939ce"
down_revision = "36b6aa503da9"
branch_labels = None
depends_on = None
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
IMAGE_COLUMNS = ("image_1_url", "image_2_url", "image_3_url", "image_4_url")


def _results(*columns: sa.Column) -> sa.Table:
    return sa.table("generation_results", sa.column("id", sa.Integer()), *columns)


def upgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        batch.add_column(sa.Column("images", JSON_TYPE, nullable=True))
    conn = op.get_bind()
    old = _results(*(sa.column(c, sa.Text()) for c in IMAGE_COLUMNS))
    new = _results(sa.column("images", JSON_TYPE))
    rows = conn.execute(sa.select(old.c.id, *(old.c[c] for c in IMAGE_COLUMNS))).all()
    for row in rows:
        urls = [u for u in row[1:] if u]
        if urls:
            conn.execute(sa.update(new).where(new.c.id == row[0]).values(images=urls))
    with op.batch_alter_table("generation_results") as batch:
        for name in IMAGE_COLUMNS:
            batch.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("generation_results") as batch:
        for name in IMAGE_COLUMNS:
            batch.add_column(sa.Column(name, sa.Text(), nullable=True))
    conn = op.get_bind()
    new = _results(sa.column("images", JSON_TYPE))
    old = _results(*(sa.column(c, sa.Text()) for c in IMAGE_COLUMNS))
    for row_id, images in conn.execute(sa.select(new.c.id, new.c.images)).all():
        urls = list(images or [])[:4]  # the old shape holds four images: extras are lost, as the seed notes
        if urls:
            conn.execute(sa.update(old).where(old.c.id == row_id).values(dict(zip(IMAGE_COLUMNS, urls, strict=False))))
    with op.batch_alter_table("generation_results") as batch:
        batch.drop_column("images")
