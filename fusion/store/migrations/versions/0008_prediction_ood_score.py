"""items keep their latest prediction's out-of-distribution score: the Dataset page filters and
sorts by it ("none of these" pages first)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('items', sa.Column('pred_ood', sa.Float(), nullable=True))
    op.create_index('ix_items_ood', 'items', ['project_id', 'pred_ood'])


def downgrade() -> None:
    op.drop_index('ix_items_ood', 'items')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('pred_ood')
