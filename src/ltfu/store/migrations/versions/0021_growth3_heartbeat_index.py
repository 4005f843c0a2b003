"""growth: the newest outbox row of each subscription in one index step (the sweeper's heartbeat check)

Revision ID: 0021
Revises: 0020
"""

from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_subscription_created', 'outbox', ['subscription_id', 'created_at'],
                    sqlite_where=sa.text('subscription_id IS NOT NULL'),
                    postgresql_where=sa.text('subscription_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_outbox_subscription_created', table_name='outbox')
