"""matching: the CHT index's blocking keys re-derived (narrower name keys: Soundex, birth year, another
token's initial and sex; name pairs with sex)

No schema change: ``cht_person_keys`` is rewritten from ``cht_persons`` with the key definition of
``ltfu.domain.matching.blocking.index_keys`` (the one the index build calls), so an index built before keeps
finding its persons without a full CHT sync.

Revision ID: 0018
Revises: 0013
"""

from collections import namedtuple
from itertools import combinations

import jellyfish
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0013"
branch_labels = None
depends_on = None

_BATCH = 5000


def _rekey(keys_of) -> None:
    """Rewrite every person's keys with ``keys_of(person)``, a batch at a time."""
    from ltfu.store.cht_index import person_from_row

    bind = op.get_bind()
    keys = sa.table("cht_person_keys", sa.column("key"), sa.column("person_id"))
    op.execute(keys.delete())
    result = bind.execute(sa.text("SELECT * FROM cht_persons ORDER BY person_id"))
    row_type = namedtuple("Row", list(result.keys()))
    while batch := result.fetchmany(_BATCH):
        rows = []
        for r in batch:
            person = person_from_row(row_type(*r))
            rows += [{"key": k[:200], "person_id": person.id} for k in sorted(set(keys_of(person)))]
        if rows:
            bind.execute(keys.insert(), rows)


def upgrade() -> None:
    from ltfu.domain.matching.blocking import index_keys

    _rekey(index_keys)


def _keys_0006(person) -> set[str]:
    """The keys of 0006 (Soundex of a token with the birth year; order-free Soundex pairs)."""
    keys = {f"id:{kind}:{value}" for kind, value in person.identifiers if kind != "cht_id"}
    keys |= {f"ph:{p}" for p in person.phones}
    if person.birth is not None:
        keys |= {f"ty:{jellyfish.soundex(t)}:{person.birth.year}" for t in person.tokens}
    codes = sorted({jellyfish.soundex(t) for t in person.tokens})
    keys |= {f"np:{a}:{b}" for a, b in combinations(codes, 2)}
    return keys


def downgrade() -> None:
    _rekey(_keys_0006)
