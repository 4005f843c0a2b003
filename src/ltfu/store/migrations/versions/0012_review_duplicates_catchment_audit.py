"""review: flagged CHT duplicate groups; audit of explicit catchment changes

Revision ID: 0012
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cht_duplicate_groups',
    sa.Column('group_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('review_id', sa.String(length=64), nullable=True),
    sa.Column('flagged_by', sa.String(length=128), nullable=False),
    sa.Column('flagged_at', sa.String(length=32), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=False),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.Column('resolved_by', sa.String(length=128), nullable=True),
    sa.Column('resolved_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('group_id', name=op.f('pk_cht_duplicate_groups'))
    )
    op.create_index('ix_cht_duplicate_groups_status', 'cht_duplicate_groups', ['status'], unique=False)
    op.create_table('cht_duplicate_persons',
    sa.Column('group_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('group_id', 'person_id', name=op.f('pk_cht_duplicate_persons'))
    )
    op.create_index('ix_cht_duplicate_persons_person', 'cht_duplicate_persons', ['person_id'], unique=False)
    op.create_table('catchment_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('place_id', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('changed_at', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catchment_changes'))
    )
    op.create_index(op.f('ix_catchment_changes_organization_id'), 'catchment_changes', ['organization_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_catchment_changes_organization_id'), table_name='catchment_changes')
    op.drop_table('catchment_changes')
    op.drop_index('ix_cht_duplicate_persons_person', table_name='cht_duplicate_persons')
    op.drop_table('cht_duplicate_persons')
    op.drop_index('ix_cht_duplicate_groups_status', table_name='cht_duplicate_groups')
    op.drop_table('cht_duplicate_groups')
