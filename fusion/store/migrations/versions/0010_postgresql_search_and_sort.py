"""PostgreSQL: a full-text index for the item search (SQLite has had one since 0002), and the
list's indexes on prediction scores in SQLite's order (no score first)

The words of the file name, caption and page text, split at everything that is not a letter or a
digit as SQLite's unicode61 tokenizer splits them, lower-cased, without positions (no phrase
search), in a generated column with a GIN index. The first 500,000 characters are indexed: a
tsvector holds at most 1 MB.

The list sorts items without a prediction first, as SQLite does (store.list_items asks for NULLS
FIRST ascending, NULLS LAST descending); PostgreSQL's indexes put them last, so those sorts read
every row. Rebuilt NULLS FIRST, one index serves both directions (a page of 50 of 100,000
predicted items by confidence: 49 ms before).

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


SCORE_INDEXES = {  # 0002, 0004, 0008
    "ix_items_status_confidence": "project_id, status, pred_confidence",
    "ix_items_confidence": "project_id, pred_confidence",
    "ix_items_status_entropy": "project_id, status, pred_entropy",
    "ix_items_status_margin": "project_id, status, pred_margin",
    "ix_items_status_disagreement": "project_id, status, pred_disagreement",
    "ix_items_ood": "project_id, pred_ood",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE items ADD COLUMN search_words tsvector GENERATED ALWAYS AS ({SEARCH_WORDS}) STORED")
        op.execute("CREATE INDEX ix_items_search_words ON items USING gin (search_words)")
        for name, columns in SCORE_INDEXES.items():
            op.execute(f"DROP INDEX {name}")
            op.execute(f"CREATE INDEX {name} ON items ({columns} NULLS FIRST)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, columns in SCORE_INDEXES.items():
            op.execute(f"DROP INDEX {name}")
            op.execute(f"CREATE INDEX {name} ON items ({columns})")
        op.execute("DROP INDEX ix_items_search_words")
        op.execute("ALTER TABLE items DROP COLUMN search_words")
