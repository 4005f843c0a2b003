"""matching: cases.matched_by (how intake found the case's CHT person)

Revision ID: 0009
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cases', sa.Column('matched_by', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('matched_by')
