"""PostgreSQL: a full-text index for the item search (SQLite has had one since 0002)

The words of the file name, caption and page text, split at everything that is not a letter or a
digit as SQLite's unicode61 tokenizer splits them, lower-cased, without positions (no phrase
search), in a generated column with a GIN index. The first 500,000 characters are indexed: a
tsvector holds at most 1 MB.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

SEARCH_WORDS = ("strip(to_tsvector('simple', regexp_replace(lower(left(coalesce(filename, '') || ' ' || "
                "coalesce(caption, '') || ' ' || coalesce(ocr_text, ''), 500000)), '[^[:alnum:]]+', ' ', 'g')))")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE items ADD COLUMN search_words tsvector GENERATED ALWAYS AS ({SEARCH_WORDS}) STORED")
        op.execute("CREATE INDEX ix_items_search_words ON items USING gin (search_words)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_items_search_words")
        op.execute("ALTER TABLE items DROP COLUMN search_words")
