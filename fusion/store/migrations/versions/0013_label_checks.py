"""items keep the latest check of their label (fusion.ml.label_issues): the out-of-fold probability
of their label, the label the model suggests, each head's opinion, and whether confident learning
flags it; the Review queue and the Dataset page list the flagged ones until a person decides, and
who did (a label a person kept is not flagged again)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('check_quality', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('check_flagged', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('check_suggested', sa.String(128), nullable=True))
        batch_op.add_column(sa.Column('check_heads', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('checked_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('check_reviewed_by', sa.String(128), nullable=True))
    op.create_index('ix_items_check', 'items', ['project_id', 'check_flagged', 'check_quality'])


def downgrade() -> None:
    op.drop_index('ix_items_check', 'items')
    with op.batch_alter_table('items', schema=None) as batch_op:
        for column in ('check_reviewed_by', 'checked_at', 'check_heads', 'check_suggested', 'check_flagged',
                       'check_quality'):
            batch_op.drop_column(column)
