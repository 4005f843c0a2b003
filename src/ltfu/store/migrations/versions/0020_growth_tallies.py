"""growth: counts kept by triggers (tallies + tally_deltas); failing and pending-due outbox indexes

Revision ID: 0020
Revises: 0015
"""

from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0015'
branch_labels = None
depends_on = None


# What each metric counts of a row (``R`` is ``NEW`` or ``OLD``): (table, scope, key). The key is the counted
# columns joined by '|', NULL as '' (store/tallies.py reads them back).
def _flag(column: str) -> str:
    return f"CASE WHEN R.{column} IS NULL THEN '0' ELSE '1' END"


COUNTED = {
    'cases': ('cases', "COALESCE(R.organization_id, '')", " || '|' || ".join([
        "R.status", "COALESCE(R.business_status, '')", "COALESCE(R.outcome, '')", "COALESCE(R.matched_by, '')",
        _flag('sent_to_cht_at'), _flag('first_attempt_at'), _flag('closed_at')])),
    'outbox': ('outbox', "COALESCE(R.organization_id, '')",
               "R.destination || '|' || R.status || '|' || CASE WHEN R.attempts > 0 THEN '1' ELSE '0' END"),
    'attempts': ('delivery_attempts', "''", "R.result"),
}
# The columns an update must touch to change a count (SQLite's ``UPDATE OF``: other updates skip the trigger).
UPDATED = {
    'cases': "organization_id, status, business_status, outcome, matched_by, sent_to_cht_at, first_attempt_at, "
             "closed_at",
    'outbox': "organization_id, destination, status, attempts",
}


def _row(metric: str, r: str, n: int) -> str:
    _, scope, key = COUNTED[metric]
    return f"('{metric}', {scope.replace('R.', r + '.')}, {key.replace('R.', r + '.')}, {n})"


def _changed(metric: str) -> str:
    _, scope, key = COUNTED[metric]
    return " OR ".join(f"{e.replace('R.', 'OLD.')} IS DISTINCT FROM {e.replace('R.', 'NEW.')}" for e in (scope, key))


def trigger_sql(dialect: str) -> list[str]:
    out = []
    add = "INSERT INTO tally_deltas (metric, scope, key, n) VALUES "
    for metric, (table, _, _) in COUNTED.items():
        if dialect == 'postgresql':
            out.append(f"""CREATE FUNCTION tally_{metric}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {add}{_row(metric, 'NEW', 1)};
  ELSIF TG_OP = 'DELETE' THEN
    {add}{_row(metric, 'OLD', -1)};
  ELSE
    {add}{_row(metric, 'OLD', -1)}, {_row(metric, 'NEW', 1)};
  END IF;
  RETURN NULL;
END $$""")
            out.append(f"CREATE TRIGGER tally_{metric}_insert_delete AFTER INSERT OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION tally_{metric}()")
            if metric in UPDATED:
                out.append(f"CREATE TRIGGER tally_{metric}_update AFTER UPDATE ON {table} FOR EACH ROW "
                           f"WHEN ({_changed(metric)}) EXECUTE FUNCTION tally_{metric}()")
            continue
        out.append(f"CREATE TRIGGER tally_{metric}_insert AFTER INSERT ON {table} BEGIN "
                   f"{add}{_row(metric, 'NEW', 1)}; END")
        out.append(f"CREATE TRIGGER tally_{metric}_delete AFTER DELETE ON {table} BEGIN "
                   f"{add}{_row(metric, 'OLD', -1)}; END")
        if metric in UPDATED:
            out.append(f"CREATE TRIGGER tally_{metric}_update AFTER UPDATE OF {UPDATED[metric]} ON {table} "
                       f"WHEN {_changed(metric).replace('IS DISTINCT FROM', 'IS NOT')} BEGIN "
                       f"{add}{_row(metric, 'OLD', -1)}, {_row(metric, 'NEW', 1)}; END")
    return out


def drop_trigger_sql(dialect: str) -> list[str]:
    out = []
    for metric in COUNTED:
        if dialect == 'postgresql':
            out.append(f"DROP FUNCTION tally_{metric}() CASCADE")  # and its triggers
        else:
            out += [f"DROP TRIGGER tally_{metric}_{op}" for op in ('insert', 'delete', 'update')
                    if op != 'update' or metric in UPDATED]
    return out


def backfill_sql() -> list[str]:
    out = []
    for metric, (table, scope, key) in COUNTED.items():
        s, k = scope.replace('R.', ''), key.replace('R.', '')
        out.append(f"INSERT INTO tallies (metric, scope, key, n) SELECT '{metric}', {s}, {k}, COUNT(*) "
                   f"FROM {table} GROUP BY 2, 3")
    return out


def _partial(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table('tallies',
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('scope', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('metric', 'scope', 'key', name=op.f('pk_tallies'))
    )
    op.create_table('tally_deltas',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('scope', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tally_deltas'))
    )
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':  # nobody writes a counted table between the backfill and the triggers
        op.execute("LOCK TABLE cases, outbox, delivery_attempts IN SHARE ROW EXCLUSIVE MODE")
    for statement in trigger_sql(dialect):
        op.execute(statement)
    for statement in backfill_sql():
        op.execute(statement)
    op.drop_index('ix_outbox_undone_state', table_name='outbox')
    op.drop_index('ix_outbox_undone_id', table_name='outbox')
    op.create_index('ix_outbox_failing', 'outbox', ['id'],
                    **_partial("status = 'dead' OR (status = 'pending' AND attempts > 0)"))
    op.create_index('ix_outbox_pending_due', 'outbox', ['destination', 'next_attempt_at'],
                    **_partial("status = 'pending'"))


def downgrade() -> None:
    op.drop_index('ix_outbox_pending_due', table_name='outbox')
    op.drop_index('ix_outbox_failing', table_name='outbox')
    op.create_index('ix_outbox_undone_id', 'outbox', ['id'], **_partial("status != 'done'"))
    op.create_index('ix_outbox_undone_state', 'outbox', ['destination', 'status', 'attempts', 'organization_id'],
                    **_partial("status != 'done'"))
    for statement in drop_trigger_sql(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table('tally_deltas')
    op.drop_table('tallies')
