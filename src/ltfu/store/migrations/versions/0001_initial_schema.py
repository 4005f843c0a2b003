"""initial schema

Revision ID: 0001
Revises: (none)
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cases',
    sa.Column('case_id', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('request_key', sa.String(length=600), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('business_status', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('chw_id', sa.String(length=128), nullable=True),
    sa.Column('cht_record_id', sa.String(length=128), nullable=True),
    sa.Column('group_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=False),
    sa.Column('updated_at', sa.String(length=32), nullable=False),
    sa.Column('sent_to_cht_at', sa.String(length=32), nullable=True),
    sa.Column('first_attempt_at', sa.String(length=32), nullable=True),
    sa.Column('closed_at', sa.String(length=32), nullable=True),
    sa.Column('window_end', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('case_id', name=op.f('pk_cases')),
    sa.UniqueConstraint('request_key', name=op.f('uq_cases_request_key')),
    sa.UniqueConstraint('task_id', name=op.f('uq_cases_task_id'))
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_created', ['created_at'], unique=False)
        batch_op.create_index('ix_cases_org_status', ['organization_id', 'status'], unique=False)
        batch_op.create_index('ix_cases_patient', ['patient_id'], unique=False)
        batch_op.create_index('ix_cases_status_window', ['status', 'window_end'], unique=False)

    op.create_table('clients',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_clients'))
    )
    op.create_table('delivery_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('outbox_id', sa.BigInteger(), nullable=False),
    sa.Column('attempted_at', sa.String(length=32), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_attempts_outbox_id'), ['outbox_id'], unique=False)

    op.create_table('inbound_receipts',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.String(length=32), nullable=False),
    sa.Column('result', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_inbound_receipts'))
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('destination', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('order_key', sa.String(length=160), nullable=False),
    sa.Column('dedupe_key', sa.String(length=255), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.String(length=32), nullable=False),
    sa.Column('next_attempt_at', sa.String(length=32), nullable=False),
    sa.Column('last_attempt_at', sa.String(length=32), nullable=True),
    sa.Column('done_at', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.String(length=32), nullable=True),
    sa.Column('case_id', sa.String(length=64), nullable=True),
    sa.Column('subscription_id', sa.String(length=64), nullable=True),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_outbox_dedupe_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_case', ['case_id'], unique=False)
        batch_op.create_index('ix_outbox_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_outbox_order', ['order_key', 'status', 'id'], unique=False)

    op.create_table('resource_history',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.String(length=32), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_resource_history')),
    sa.UniqueConstraint('res_type', 'res_id', 'version_id', name=op.f('uq_resource_history_res_type_res_id_version_id'))
    )
    op.create_table('resources',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('last_updated', sa.String(length=32), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('res_type', 'res_id', name=op.f('pk_resources')),
    sa.UniqueConstraint('seq', name=op.f('uq_resources_seq'))
    )
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.create_index('ix_resources_type_seq', ['res_type', 'seq'], unique=False)
        batch_op.create_index('ix_resources_type_updated', ['res_type', 'last_updated'], unique=False)

    op.create_table('search_index',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('value_hi', sa.String(length=32), nullable=True)
    )
    with op.batch_alter_table('search_index', schema=None) as batch_op:
        batch_op.create_index('ix_search_lookup', ['res_type', 'param', 'value'], unique=False)
        batch_op.create_index('ix_search_owner', ['res_type', 'res_id'], unique=False)

    op.create_table('subscription_counters',
    sa.Column('subscription_id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('events_since_start', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('subscription_id', name=op.f('pk_subscription_counters'))
    )
    with op.batch_alter_table('subscription_counters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscription_counters_organization_id'), ['organization_id'], unique=False)

    op.create_table('subscription_events',
    sa.Column('subscription_id', sa.String(length=64), nullable=False),
    sa.Column('event_number', sa.Integer(), nullable=False),
    sa.Column('focus', sa.String(length=200), nullable=False),
    sa.Column('case_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=False),
    sa.Column('outbox_id', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('subscription_id', 'event_number', name=op.f('pk_subscription_events'))
    )
