"""growth: case-list indexes (newest first by facility, state, outcome, CHW) and partial outbox indexes

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def _partial(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.drop_index('ix_cases_created', table_name='cases')
    op.create_index('ix_cases_created_case', 'cases', ['created_at', 'case_id'])
    op.create_index('ix_cases_org_created', 'cases', ['organization_id', 'created_at', 'case_id'])
    op.create_index('ix_cases_status_created', 'cases', ['status', 'created_at', 'case_id'])
    op.create_index('ix_cases_outcome_created', 'cases', ['outcome', 'created_at', 'case_id'],
                    **_partial("outcome IS NOT NULL"))
    op.create_index('ix_cases_chw_created', 'cases', ['chw_id', 'created_at', 'case_id'],
                    **_partial("chw_id IS NOT NULL"))
    op.create_index('ix_cases_org_chw', 'cases', ['organization_id', 'chw_id'], **_partial("chw_id IS NOT NULL"))
    op.create_index('ix_outbox_undone_id', 'outbox', ['id'], **_partial("status != 'done'"))
    op.create_index('ix_outbox_undone_state', 'outbox', ['destination', 'status', 'attempts', 'organization_id'],
                    **_partial("status != 'done'"))


def downgrade() -> None:
    for name, table in (('ix_outbox_undone_state', 'outbox'), ('ix_outbox_undone_id', 'outbox'),
                        ('ix_cases_org_chw', 'cases'), ('ix_cases_chw_created', 'cases'),
                        ('ix_cases_outcome_created', 'cases'), ('ix_cases_status_created', 'cases'),
                        ('ix_cases_org_created', 'cases'), ('ix_cases_created_case', 'cases')):
        op.drop_index(name, table_name=table)
    op.create_index('ix_cases_created', 'cases', ['created_at'])
