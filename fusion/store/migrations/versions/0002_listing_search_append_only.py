"""Indexes for the filtered, sorted item list; full-text search; history append-only in the database

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# Each filter x sort the list offers is an index range, so a page of 50 never sorts 100k rows.
LIST_INDEXES = {
    "ix_items_status_updated": ["project_id", "status", "updated_at"],
    "ix_items_status_confidence": ["project_id", "status", "pred_confidence"],
    "ix_items_label_updated": ["project_id", "label", "updated_at"],
    "ix_items_split_updated": ["project_id", "split", "updated_at"],
    "ix_items_updated": ["project_id", "updated_at"],
    "ix_items_added": ["project_id", "added_at"],
    "ix_items_confidence": ["project_id", "pred_confidence"],
    "ix_items_filename": ["project_id", "filename"],
}

# SQLite full-text index over what a reviewer searches for, kept in step by triggers. Its
# `content=items` makes it an index only: the text itself stays in `items`.
SQLITE_SEARCH = [
    "CREATE VIRTUAL TABLE items_search USING fts5(filename, caption, ocr_text, content='items', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER items_search_insert AFTER INSERT ON items BEGIN "
    "INSERT INTO items_search(rowid, filename, caption, ocr_text) "
    "VALUES (new.id, new.filename, new.caption, new.ocr_text); END",
    "CREATE TRIGGER items_search_update AFTER UPDATE OF filename, caption, ocr_text ON items BEGIN "
    "INSERT INTO items_search(items_search, rowid, filename, caption, ocr_text) "
    "VALUES ('delete', old.id, old.filename, old.caption, old.ocr_text); "
    "INSERT INTO items_search(rowid, filename, caption, ocr_text) "
    "VALUES (new.id, new.filename, new.caption, new.ocr_text); END",
    "CREATE TRIGGER items_search_delete AFTER DELETE ON items BEGIN "
    "INSERT INTO items_search(items_search, rowid, filename, caption, ocr_text) "
    "VALUES ('delete', old.id, old.filename, old.caption, old.ocr_text); END",
    "INSERT INTO items_search(items_search) VALUES ('rebuild')",   # the items already there
]


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        for name, columns in LIST_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_SEARCH:
            op.execute(statement)
        # Who changed what is evidence: no code path, ours or anyone's, may rewrite it.
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER history_no_{verb.lower()} BEFORE {verb} ON history "
                       f"BEGIN SELECT RAISE(ABORT, 'history is append-only'); END")
    elif dialect == "postgresql":
        op.execute("CREATE FUNCTION history_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'history is append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history "
                   "FOR EACH ROW EXECUTE FUNCTION history_append_only()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("history_no_update", "history_no_delete", "items_search_insert", "items_search_update",
                     "items_search_delete"):
            op.execute(f"DROP TRIGGER {name}")
        op.execute("DROP TABLE items_search")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER history_append_only ON history")
        op.execute("DROP FUNCTION history_append_only()")
    with op.batch_alter_table('items', schema=None) as batch_op:
        for name in LIST_INDEXES:
            batch_op.drop_index(name)
