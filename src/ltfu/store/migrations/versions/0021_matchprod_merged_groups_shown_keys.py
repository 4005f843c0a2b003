"""matchprod: duplicate groups merged into one (merged_into); signing keys shown or not yet (shown_at);
review decisions by person (the case a CHT person was linked to before CHT deleted or merged it)

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
    op.add_column('cht_duplicate_groups', sa.Column('merged_into', sa.String(length=64), nullable=True))
    op.add_column('signing_keys', sa.Column('shown_at', sa.String(length=32), nullable=True))
    # A key made before this was maybe handed over already (``ltfu clients secret``): counted as shown, so the
    # next issue is a rotation as it was.
    op.execute("UPDATE signing_keys SET shown_at = created_at")
    op.create_index('ix_match_decisions_person', 'match_decisions', ['person_id', 'action'])


def downgrade() -> None:
    op.drop_index('ix_match_decisions_person', table_name='match_decisions')
    with op.batch_alter_table('signing_keys') as batch:
        batch.drop_column('shown_at')
    with op.batch_alter_table('cht_duplicate_groups') as batch:
        batch.drop_column('merged_into')
