"""outbox.sent_at: a row that may have been sent is known as such

Revision ID: 0004
Revises: 0008

Rows written before this revision cannot say whether a worker already took them to send (that was
the defect), so every row not yet done is assumed to have been: its next try looks in the receiver
for what an earlier try left behind, and a cancel sends a cancel record rather than dropping it.
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sent_at', sa.String(length=32), nullable=True))
    op.execute("UPDATE outbox SET sent_at = COALESCE(last_attempt_at, created_at) WHERE status != 'done'")


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('sent_at')
