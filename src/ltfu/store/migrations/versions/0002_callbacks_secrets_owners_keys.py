"""callback secrets apart from resources, Endpoint owners, signing keys, verified callback address

Existing Endpoint/Subscription header values move to ``callback_secrets`` (as ``plain:``; they are
sealed with LTFU_SECRETS_KEY the next time they are written) and are masked in the resources and
in every history version. Owners come from the Organizations that reference an Endpoint (the first
one). Subscriptions already active keep their current address as verified.

Revision ID: 0002
Revises: 0006
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0006"  # applied order: 0001, 0008, 0004, 0003, 0006, 0002
branch_labels = None
depends_on = None


def _masked(lines: list) -> list:
    return [f"{str(line).partition(':')[0].strip()}: ***" for line in lines]


def _headers_of(resource: dict) -> list | None:
    if resource.get("resourceType") == "Endpoint":
        return resource.get("header")
    if resource.get("resourceType") == "Subscription":
        return (resource.get("channel") or {}).get("header")
    return None


def _mask_resource(resource: dict) -> dict:
    if resource.get("resourceType") == "Endpoint" and resource.get("header"):
        resource["header"] = _masked(resource["header"])
    elif resource.get("resourceType") == "Subscription" and (resource.get("channel") or {}).get("header"):
        resource["channel"]["header"] = _masked(resource["channel"]["header"])
    return resource


def upgrade() -> None:
    op.create_table(
        "endpoint_owners",
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_id", name=op.f("pk_endpoint_owners")),
    )
    op.create_index(op.f("ix_endpoint_owners_organization_id"), "endpoint_owners", ["organization_id"])
    op.create_table(
        "callback_secrets",
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("res_type", "res_id", name=op.f("pk_callback_secrets")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("retired_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
    )
    op.create_index(op.f("ix_signing_keys_subscription_id"), "signing_keys", ["subscription_id"])
    with op.batch_alter_table("subscription_counters") as batch:
        batch.add_column(sa.Column("verified_address", sa.Text(), nullable=True))
    _move_existing_secrets()


def _move_existing_secrets() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    res = sa.table("resources", sa.column("res_type"), sa.column("res_id"), sa.column("content"),
                   sa.column("deleted"))
    hist = sa.table("resource_history", sa.column("seq"), sa.column("res_type"), sa.column("content"))
    secrets = sa.table("callback_secrets", sa.column("res_type"), sa.column("res_id"), sa.column("headers"),
                       sa.column("updated_at"))
    owners = sa.table("endpoint_owners", sa.column("endpoint_id"), sa.column("organization_id"),
                      sa.column("created_at"))
    counters = sa.table("subscription_counters", sa.column("subscription_id"), sa.column("verified_address"))
    kinds = ("Endpoint", "Subscription")
    for r in conn.execute(sa.select(res.c.res_type, res.c.res_id, res.c.content, res.c.deleted)
                          .where(res.c.res_type.in_(kinds))).all():
        resource = json.loads(r.content)
        lines = _headers_of(resource)
        if lines and not r.deleted:
            conn.execute(sa.insert(secrets).values(res_type=r.res_type, res_id=r.res_id, updated_at=now,
                                                   headers="plain:" + json.dumps([str(x) for x in lines])))
        if lines:
            conn.execute(sa.update(res).where(sa.and_(res.c.res_type == r.res_type, res.c.res_id == r.res_id))
                         .values(content=json.dumps(_mask_resource(resource))))
        if r.res_type == "Subscription" and not r.deleted and resource.get("status") in ("active", "error"):
            conn.execute(sa.update(counters).where(counters.c.subscription_id == r.res_id)
                         .values(verified_address=(resource.get("channel") or {}).get("endpoint")))
    for h in conn.execute(sa.select(hist.c.seq, hist.c.content).where(hist.c.res_type.in_(kinds))).all():
        resource = json.loads(h.content)
        if _headers_of(resource):
            conn.execute(sa.update(hist).where(hist.c.seq == h.seq).values(content=json.dumps(_mask_resource(resource))))
    seen: set[str] = set()
    for r in conn.execute(sa.select(res.c.res_id, res.c.content).where(sa.and_(
            res.c.res_type == "Organization", res.c.deleted.is_(False))).order_by(res.c.res_id)).all():
        for ref in json.loads(r.content).get("endpoint") or []:
            ref_s = str((ref or {}).get("reference", ""))
            if ref_s.startswith("Endpoint/") and ref_s[9:] not in seen:
                seen.add(ref_s[9:])
                conn.execute(sa.insert(owners).values(endpoint_id=ref_s[9:], organization_id=r.res_id,
                                                      created_at=now))


def downgrade() -> None:
    with op.batch_alter_table("subscription_counters") as batch:
        batch.drop_column("verified_address")
    op.drop_index(op.f("ix_signing_keys_subscription_id"), table_name="signing_keys")
    op.drop_table("signing_keys")
    op.drop_table("callback_secrets")
    op.drop_index(op.f("ix_endpoint_owners_organization_id"), table_name="endpoint_owners")
    op.drop_table("endpoint_owners")
