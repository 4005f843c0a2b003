"""matching: CHT person/place index, blocking keys, name frequencies, sync state, catchment, review queue

Revision ID: 0006
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0003'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('cht_places',
    sa.Column('place_id', sa.String(length=128), nullable=False),
    sa.Column('contact_type', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('name_norm', sa.String(length=255), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=True),
    sa.Column('external_id', sa.String(length=128), nullable=True),
    sa.Column('link_facility_code', sa.String(length=64), nullable=True),
    sa.Column('parent_id', sa.String(length=128), nullable=True),
    sa.Column('lineage', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('place_id', name=op.f('pk_cht_places'))
    )
    op.create_index('ix_cht_places_code', 'cht_places', ['code'])
    op.create_index('ix_cht_places_external_id', 'cht_places', ['external_id'])
    op.create_index('ix_cht_places_link_facility_code', 'cht_places', ['link_facility_code'])
    op.create_index('ix_cht_places_parent_id', 'cht_places', ['parent_id'])

    op.create_table('cht_persons',
    sa.Column('person_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('given', sa.String(length=255), nullable=False),
    sa.Column('family', sa.String(length=255), nullable=False),
    sa.Column('sex', sa.String(length=1), nullable=True),
    sa.Column('birth_date', sa.String(length=10), nullable=True),
    sa.Column('birth_precision', sa.String(length=8), nullable=True),
    sa.Column('phones', sa.Text(), nullable=False),
    sa.Column('identifiers', sa.Text(), nullable=False),
    sa.Column('parent_id', sa.String(length=128), nullable=True),
    sa.Column('household_id', sa.String(length=128), nullable=True),
    sa.Column('chw_area_id', sa.String(length=128), nullable=True),
    sa.Column('unit_id', sa.String(length=128), nullable=True),
    sa.Column('unit_code', sa.String(length=64), nullable=True),
    sa.Column('facility_code', sa.String(length=64), nullable=True),
    sa.Column('lineage', sa.Text(), nullable=False),
    sa.Column('flags', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('person_id', name=op.f('pk_cht_persons'))
    )
    op.create_index('ix_cht_persons_household_id', 'cht_persons', ['household_id'])
    op.create_index('ix_cht_persons_unit_id', 'cht_persons', ['unit_id'])

    op.create_table('cht_person_keys',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('person_id', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('key', 'person_id', name=op.f('pk_cht_person_keys'))
    )
    op.create_index('ix_cht_person_keys_person', 'cht_person_keys', ['person_id'])

    op.create_table('cht_name_tokens',
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('persons', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('token', name=op.f('pk_cht_name_tokens'))
    )

    op.create_table('cht_sync_state',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_cht_sync_state'))
    )

    op.create_table('facility_places',
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('place_id', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('organization_id', 'place_id', name=op.f('pk_facility_places'))
    )

    op.create_table('match_reviews',
    sa.Column('review_id', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('proposal', sa.Text(), nullable=False),
    sa.Column('created_at', sa.String(length=32), nullable=False),
    sa.Column('due_at', sa.String(length=32), nullable=False),
    sa.Column('decided_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('review_id', name=op.f('pk_match_reviews')),
    sa.UniqueConstraint('case_id', name=op.f('uq_match_reviews_case_id'))
    )
    op.create_index('ix_match_reviews_organization_id', 'match_reviews', ['organization_id'])
    op.create_index('ix_match_reviews_status_due', 'match_reviews', ['status', 'due_at'])

    op.create_table('match_decisions',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('review_id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('person_id', sa.String(length=128), nullable=True),
    sa.Column('place_id', sa.String(length=128), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('decided_at', sa.String(length=32), nullable=False),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_match_decisions'))
    )
    op.create_index('ix_match_decisions_review_id', 'match_decisions', ['review_id'])
    op.create_index('ix_match_decisions_patient', 'match_decisions', ['patient_id', 'action'])


def downgrade() -> None:
    for table in ('match_decisions', 'match_reviews', 'facility_places', 'cht_sync_state', 'cht_name_tokens',
                  'cht_person_keys', 'cht_persons', 'cht_places'):
        op.drop_table(table)
