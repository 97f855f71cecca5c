"""accounts and roles: users, sign-in attempts (the rate limit), account changes (append-only)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('name_key', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('password_changed_at', sa.DateTime(), nullable=False),
    sa.Column('last_sign_in_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name_key'),
    )
    op.create_table('sign_in_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('name_key', sa.String(length=128), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_sign_in_attempts_at', 'sign_in_attempts', ['at'])
    op.create_index('ix_sign_in_attempts_name_at', 'sign_in_attempts', ['name_key', 'at'])
    op.create_table('account_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    )
    # Who gave whom which role is evidence, like the items' history: the database refuses rewrites.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER account_events_no_{verb.lower()} BEFORE {verb} ON account_events "
                       f"BEGIN SELECT RAISE(ABORT, 'account_events is append-only'); END")
    elif dialect == "postgresql":
        op.execute("CREATE FUNCTION account_events_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'account_events is append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER account_events_append_only BEFORE UPDATE OR DELETE ON account_events "
                   "FOR EACH ROW EXECUTE FUNCTION account_events_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER account_events_append_only ON account_events")
        op.execute("DROP FUNCTION account_events_append_only()")
    op.drop_table('account_events')   # SQLite drops a table's triggers with it
    op.drop_table('sign_in_attempts')
    op.drop_table('users')
