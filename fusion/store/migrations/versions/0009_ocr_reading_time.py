"""a page's stored reading keeps how long it took and which way up the page was: the Review page
says "read earlier: 4.1 s" instead of a reading time of zero

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('ocr_words', sa.Column('ms', sa.Float(), nullable=True))
    op.add_column('ocr_words', sa.Column('angle', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ocr_words', schema=None) as batch_op:
        batch_op.drop_column('angle')
        batch_op.drop_column('ms')
