"""Blocking keys: which index entries are worth scoring against an incoming patient.

The index stores :func:`index_keys` of every person; a query asks for the union of :func:`query_keys`.
Keys are chosen so one perturbation never loses a true match on its own, and narrow enough that a common
name does not bring thousands of candidates:

- each identifier, each phone;
- ``pa``: (Soundex of a name token, birth year, the initial of another token of the same person, sex) for
  every ordered pair of tokens. Order-free on both sides, so it survives a given/family swap; a typo in one
  token leaves the pairs where that token gives only its initial; the query asks the birth year ±1. A person
  with one token is stored with an empty initial (every query asks it), one without a birth date under
  the year ``-`` (every dated query asks it);
- ``np``: the order-free pair of Soundex codes with the sex, for a patient without a birth date. A patient
  with a birth date asks only the small ones (``QueryKey.cap``): a pair key holding many persons is made of
  common names, whose agreement cannot outweigh the disagreeing birth date of a person the ``pa`` keys did
  not bring (those keys already hold every person of the pair born within a year).

The sex is part of every name key because a contradicting sex is a veto (``rules.demographic_veto``): a person
of the other sex can only be a match through an identifier, whose key has no sex. An unknown sex is stored
as ``-``, asked by every query; a query without a sex asks both. Soundex is one key among several, never
the deciding comparison; a typo in a token's first letter leaves only the pairs with a third token.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations
from string import ascii_uppercase, digits

import jellyfish

from ltfu.domain.matching.records import Person

# The caps of the name-pair key (``np``) when the patient has a birth date (see the module docstring).
DATED_PAIR_CAP = 100
_INITIALS = ascii_uppercase + digits


def phonetic(token: str) -> str:
    return jellyfish.soundex(token)


@dataclass(frozen=True)
class QueryKey:
    """A key to read; ``cap`` replaces the block cap when set (a key larger than its own cap is skipped
    silently: it is there for completeness, not needed to find the patient)."""

    key: str
    cap: int | None = None


def _sex(person: Person) -> str:
    return person.sex or "-"


def _year(person: Person) -> str:
    return str(person.birth.year) if person.birth is not None else "-"


def _pairs(tokens: tuple[str, ...], sexes: tuple[str, ...]) -> set[str]:
    codes = sorted({phonetic(t) for t in tokens})
    return {f"np:{a}:{b}:{s}" for a, b in combinations(codes, 2) for s in sexes}


def _identifier_keys(person: Person) -> set[str]:
    """The CHT id is not a key: the index finds a person by its id directly."""
    return {f"id:{kind}:{value}" for kind, value in person.identifiers if kind != "cht_id"}


def _contact_keys(person: Person) -> set[str]:
    return _identifier_keys(person) | {f"ph:{p}" for p in person.phones}


def index_keys(person: Person) -> set[str]:
    """The keys a CHT person is stored under (the one function the index build calls)."""
    keys = _contact_keys(person)
    tokens, sex, year = person.tokens, _sex(person), _year(person)
    if len(tokens) == 1:
        keys.add(f"pa:{phonetic(tokens[0])}:{year}::{sex}")
    keys |= {f"pa:{phonetic(a)}:{year}:{b[0]}:{sex}" for a, b in permutations(tokens, 2)}
    keys |= _pairs(tokens, (sex,))
    return keys


def query_keys(person: Person) -> list[QueryKey]:
    """The index keys of any person the incoming one could be: birth year ±1 (or none), swap-free pairs, the
    same sex or an unknown one."""
    keys = [QueryKey(k) for k in sorted(_contact_keys(person))]
    tokens = person.tokens
    sexes = (person.sex, "-") if person.sex else ("M", "F", "-")
    if person.birth is None:
        return keys + [QueryKey(k) for k in sorted(_pairs(tokens, sexes))]
    y = person.birth.year
    years = (str(y - 1), str(y), str(y + 1), "-")
    codes = {phonetic(t) for t in tokens}
    # (a token's code, another token's initial); one token alone: any initial (a stored person has more)
    pairs = {(phonetic(a), b[0]) for a, b in permutations(tokens, 2)}
    if len(tokens) == 1:
        pairs = {(c, i) for c in codes for i in _INITIALS}
    pairs |= {(c, "") for c in codes}  # a stored person with one token
    names = {f"pa:{c}:{yr}:{i}:{s}" for c, i in pairs for yr in years for s in sexes}
    keys += [QueryKey(k) for k in sorted(names)]
    return keys + [QueryKey(k, DATED_PAIR_CAP) for k in sorted(_pairs(tokens, sexes))]
