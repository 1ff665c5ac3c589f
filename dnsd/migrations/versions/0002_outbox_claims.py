"""outbox claims: a sender claims a row (who, until when) before it sends it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as b:
        b.add_column(sa.Column('claimed_by', sa.String(length=128), nullable=True))
        b.add_column(sa.Column('claimed_until', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox') as b:
        b.drop_column('claimed_until')
        b.drop_column('claimed_by')
