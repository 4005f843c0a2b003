"""Blocking keys: which index entries are worth scoring against an incoming patient.

The index stores :func:`index_keys` of every person; a query asks for the union of :func:`query_keys`.
Keys are chosen so one perturbation never loses a true match on its own: identifiers, phones,
(phonetic name token, birth year) and order-free pairs of phonetic name tokens (given/family swap and
missing birth dates). Soundex is one key among several, never the deciding comparison.
"""

from __future__ import annotations

from itertools import combinations

import jellyfish

from ltfu.domain.matching.records import Person


def phonetic(token: str) -> str:
    return jellyfish.soundex(token)


def _pairs(tokens: tuple[str, ...]) -> set[str]:
    codes = sorted({phonetic(t) for t in tokens})
    return {f"np:{a}:{b}" for a, b in combinations(codes, 2)}


def _identifier_keys(person: Person) -> set[str]:
    """The CHT id is not a key: the index finds a person by its id directly."""
    return {f"id:{kind}:{value}" for kind, value in person.identifiers if kind != "cht_id"}


def index_keys(person: Person) -> set[str]:
    keys = _identifier_keys(person)
    keys |= {f"ph:{p}" for p in person.phones}
    tokens = person.tokens
    if person.birth is not None:
        keys |= {f"ty:{phonetic(t)}:{person.birth.year}" for t in tokens}
    keys |= _pairs(tokens)
    return keys


def query_keys(person: Person) -> set[str]:
    """The index keys of any person the incoming one could be: birth year ±1, swap-free pairs."""
    keys = _identifier_keys(person)
    keys |= {f"ph:{p}" for p in person.phones}
    tokens = person.tokens
    if person.birth is not None:
        years = (person.birth.year - 1, person.birth.year, person.birth.year + 1)
        keys |= {f"ty:{phonetic(t)}:{y}" for t in tokens for y in years}
    keys |= _pairs(tokens)
    return keys
