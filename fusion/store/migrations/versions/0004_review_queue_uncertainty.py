"""the review queue's uncertainty columns: entropy, margin and head disagreement, indexed

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

QUEUE_INDEXES = {
    "ix_items_status_entropy": "pred_entropy",
    "ix_items_status_margin": "pred_margin",
    "ix_items_status_disagreement": "pred_disagreement",
}


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild): the search index and history triggers on items stay.
    op.add_column('items', sa.Column('pred_heads', sa.JSON(), nullable=True))
    for column in ('pred_entropy', 'pred_margin', 'pred_disagreement'):
        op.add_column('items', sa.Column(column, sa.Float(), nullable=True))
    for name, column in QUEUE_INDEXES.items():
        op.create_index(name, 'items', ['project_id', 'status', column])


def downgrade() -> None:
    for name in QUEUE_INDEXES:
        op.drop_index(name, 'items')
    with op.batch_alter_table('items') as batch:
        for column in ('pred_disagreement', 'pred_margin', 'pred_entropy', 'pred_heads'):
            batch.drop_column(column)
