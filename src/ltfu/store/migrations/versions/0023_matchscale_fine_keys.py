"""matching at 1e6: the ``pa`` name keys carry a finer mark (sex before it, the other token's initial and
first Soundex digit), read only when the (code, year, sex, initial) prefix is crowded; the staging table of
a first full CHT sync

The stored keys are re-derived from ``cht_persons`` with ``ltfu.domain.matching.blocking.index_keys`` (and
each row's ``block_keys`` list with them), so no CHT sync is needed. The key rows are written unindexed
first and then into the key table in key order (one pass of its B-tree, not a page rewrite per batch).
PostgreSQL: the key column is collated ``"C"``, so that a prefix is one range of its index whatever the
database's collation.

Revision ID: 0023
Revises: 0022
"""

from collections import namedtuple

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_BATCH = 5000


def _rekey(keys_of) -> None:
    """Rewrite every person's keys (and its ``block_keys`` list) with ``keys_of(person)``."""
    import orjson

    from ltfu.store.cht_index import person_from_row

    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.execute("CREATE TEMPORARY TABLE rekey_keys (key VARCHAR(200) NOT NULL, person_id VARCHAR(128) NOT NULL)")
    op.execute("CREATE TEMPORARY TABLE rekey_lists (person_id VARCHAR(128) PRIMARY KEY, block_keys TEXT NOT NULL)")
    page = sa.text("SELECT * FROM cht_persons WHERE person_id > :last ORDER BY person_id LIMIT :n")
    last = ""
    while True:  # a page at a time by primary key (a driver may buffer a whole result)
        result = bind.execute(page, {"last": last, "n": _BATCH})
        row_type = namedtuple("Row", list(result.keys()))
        batch = result.fetchall()
        if not batch:
            break
        last = batch[-1].person_id
        keys, lists = [], []
        for r in batch:
            person = person_from_row(row_type(*r))
            stored = sorted({k[:200] for k in keys_of(person)})
            keys += [{"key": k, "person_id": person.id} for k in stored]
            lists.append({"person_id": person.id, "block_keys": orjson.dumps(stored).decode()})
        if keys:
            bind.execute(sa.text("INSERT INTO rekey_keys (key, person_id) VALUES (:key, :person_id)"), keys)
        bind.execute(sa.text("INSERT INTO rekey_lists (person_id, block_keys) VALUES (:person_id, :block_keys)"), lists)
    op.execute(
        "UPDATE cht_persons SET block_keys = (SELECT r.block_keys FROM rekey_lists r "
        "WHERE r.person_id = cht_persons.person_id)"
    )
    if sqlite:
        op.execute("DELETE FROM cht_person_keys")
    else:
        op.execute("TRUNCATE cht_person_keys")
        op.execute('ALTER TABLE cht_person_keys ALTER COLUMN key TYPE VARCHAR(200) COLLATE "C"')
    op.execute(
        "INSERT INTO cht_person_keys (key, person_id) SELECT key, person_id FROM rekey_keys ORDER BY key, person_id"
    )
    op.execute("DROP TABLE rekey_keys")
    op.execute("DROP TABLE rekey_lists")


def upgrade() -> None:
    from ltfu.domain.matching.blocking import index_keys

    op.create_table(
        "cht_stage_persons",
        sa.Column("stage_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("person_id", sa.String(128), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("given", sa.String(255), nullable=False),
        sa.Column("family", sa.String(255), nullable=False),
        sa.Column("sex", sa.String(1), nullable=True),
        sa.Column("birth_date", sa.String(10), nullable=True),
        sa.Column("birth_precision", sa.String(8), nullable=True),
        sa.Column("phones", sa.Text(), nullable=False),
        sa.Column("identifiers", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.String(128), nullable=True),
        sa.Column("household_id", sa.String(128), nullable=True),
        sa.Column("chw_area_id", sa.String(128), nullable=True),
        sa.Column("unit_id", sa.String(128), nullable=True),
        sa.Column("unit_code", sa.String(64), nullable=True),
        sa.Column("facility_code", sa.String(64), nullable=True),
        sa.Column("lineage", sa.Text(), nullable=False),
        sa.Column("flags", sa.String(64), nullable=False),
        sa.Column("block_keys", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    _rekey(index_keys)


def _keys_0018(person) -> set[str]:
    """The keys of 0018: ``pa`` as (code, year, initial, sex), no finer mark."""
    from itertools import permutations

    from ltfu.domain.matching.blocking import index_keys, phonetic

    keys = {k for k in index_keys(person) if not k.startswith("pa:")}
    tokens, sex = person.tokens, person.sex or "-"
    year = str(person.birth.year) if person.birth is not None else "-"
    if len(tokens) == 1:
        keys.add(f"pa:{phonetic(tokens[0])}:{year}::{sex}")
    keys |= {f"pa:{phonetic(a)}:{year}:{b[0]}:{sex}" for a, b in permutations(tokens, 2)}
    return keys


def downgrade() -> None:
    op.drop_table("cht_stage_persons")
    _rekey(_keys_0018)
