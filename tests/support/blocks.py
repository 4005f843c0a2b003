"""The store's reading rule for blocking keys, written plainly over an in-memory inverted index: what
``ChtIndexRepository.block`` must return (tests compare the two, and use this one where no database runs)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping

from ltfu.domain.matching.blocking import WIDE_CAP, QueryKey


class Keys:
    """Stored keys → person ids, with prefix lookups."""

    def __init__(self, by_key: Mapping[str, Iterable[str]]) -> None:
        self.by_key = {k: set(v) for k, v in by_key.items()}
        self.sorted = sorted(self.by_key)

    def under(self, key: QueryKey) -> tuple[set[str], int]:
        """(the persons stored under a key, its rows): a prefix is every stored key that starts with it, and
        a person under two of them counts twice (the store counts key rows, not persons)."""
        if not key.prefix:
            persons = set(self.by_key.get(key.key, ()))
            return persons, len(persons)
        out: set[str] = set()
        rows = 0
        for stored in self.sorted[bisect_left(self.sorted, key.key) :]:
            if not stored.startswith(key.key):
                break
            out |= self.by_key[stored]
            rows += len(self.by_key[stored])
        return out, rows


def read_block(index: Keys, keys: Iterable[QueryKey], cap: int, wide: int = WIDE_CAP) -> tuple[set[str], list[str]]:
    """(the persons read, the keys reported as overflowing) for a query's ``keys`` with the block cap."""
    found: set[str] = set()
    overflow: set[str] = set()
    for k in keys:
        persons, rows = index.under(k)
        if k.prefix and k.fine is not None and rows > min(wide, cap):
            k = QueryKey(k.fine)
            persons, rows = index.under(k)
        own = cap if k.cap is None else min(k.cap, cap)
        if rows <= own:
            found |= persons
        elif k.cap is None:
            overflow.add(k.key)
    return found, sorted(overflow)
