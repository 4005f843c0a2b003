"""bundle3: identity locks as rows (``UnitOfWork.lock`` on PostgreSQL), not 512 shared advisory-lock buckets

Revision ID: 0022
Revises: 0021
"""

from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('identity_locks',
    sa.Column('h', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.PrimaryKeyConstraint('h', name=op.f('pk_identity_locks'))
    )


def downgrade() -> None:
    op.drop_table('identity_locks')
