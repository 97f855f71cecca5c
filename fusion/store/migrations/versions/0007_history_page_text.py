"""history keeps a reviewer's page-text edit: the text before and after

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): SQLite does not rebuild the table, so the
    # append-only triggers on history (0002) stay as they are.
    op.add_column('history', sa.Column('old_text', sa.Text(), nullable=True))
    op.add_column('history', sa.Column('new_text', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('history', schema=None) as batch_op:
        batch_op.drop_column('new_text')
        batch_op.drop_column('old_text')
