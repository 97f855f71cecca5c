"""History is append-only, enforced by the database; indexes for the filtered, sorted item list

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

LIST_INDEXES = {
    "ix_items_project_status": ["project_id", "status", "updated_at"],
    "ix_items_project_label": ["project_id", "label", "updated_at"],
    "ix_items_project_updated": ["project_id", "updated_at"],
    "ix_items_project_confidence": ["project_id", "pred_confidence"],
}


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        for name, columns in LIST_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
    if op.get_bind().dialect.name == "sqlite":
        # Who changed what is evidence: no code path, ours or anyone's, may rewrite it.
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER history_no_{verb.lower()} BEFORE {verb} ON history "
                       f"BEGIN SELECT RAISE(ABORT, 'history is append-only'); END")
    elif op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION history_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'history is append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history "
                   "FOR EACH ROW EXECUTE FUNCTION history_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER history_no_update")
        op.execute("DROP TRIGGER history_no_delete")
    elif op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER history_append_only ON history")
        op.execute("DROP FUNCTION history_append_only()")
    with op.batch_alter_table('items', schema=None) as batch_op:
        for name in LIST_INDEXES:
            batch_op.drop_index(name)
