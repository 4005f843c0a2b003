"""cases.purged_at: when retention removed the case's PHI (ltfu purge)

Revision ID: 0003
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purged_at', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_cases_closed', ['closed_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_closed')
        batch_op.drop_column('purged_at')
