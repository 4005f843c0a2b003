"""client roles, resource owners, OpenHIM client map

Revision ID: 0008
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False, server_default='facility'))
    op.execute("UPDATE clients SET role = 'admin' WHERE is_admin")
    op.create_table('resource_owners',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('res_type', 'res_id')
    )
    with op.batch_alter_table('resource_owners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resource_owners_organization_id'), ['organization_id'], unique=False)
    op.create_table('openhim_clients',
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('client_id')
    )


def downgrade() -> None:
    op.drop_table('openhim_clients')
    with op.batch_alter_table('resource_owners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resource_owners_organization_id'))
    op.drop_table('resource_owners')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('role')
