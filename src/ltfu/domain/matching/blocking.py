"""Blocking keys: which index entries are worth scoring against an incoming patient.

The index stores :func:`index_keys` of every person; a query asks for the union of :func:`query_keys`.
Keys are chosen so one perturbation never loses a true match on its own, and narrow enough that a common
name does not bring thousands of candidates:

- each identifier, each phone;
- ``pa``: (Soundex of a name token, birth year, sex, the initial of another token of the same person) for
  every ordered pair of tokens. Order-free on both sides, so it survives a given/family swap; a typo in one
  token leaves the pairs where that token gives only its initial; the query asks the birth year ±1. A person
  with one token is stored with an empty initial (every query asks it), one without a birth date under
  the year ``-`` (every dated query asks it). The stored key ends with a finer mark: the other token's
  initial *and* the first digit of its Soundex (``K5`` for Kamau); a query reads the whole (code, year, sex,
  initial) prefix while it holds at most ``WIDE_CAP`` persons, and only its own finer key beyond (at 1e6
  persons a prefix such as (J500, 2017, male, K) holds ~900). The finer key of each ordered pair keeps a typo
  in either token reachable (the other pair's finer key is the unmistyped token's), and the Soundex digit
  survives a typo in a vowel, a dropped or doubled letter; a query never reads the smaller keys first (a
  mistyped token gives a small key without the person);
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
from functools import lru_cache
from itertools import combinations, permutations
from string import ascii_uppercase, digits

import jellyfish

from ltfu.domain.matching.records import Person

# The caps of the name-pair key (``np``) when the patient has a birth date (see the module docstring).
DATED_PAIR_CAP = 100
# Key rows (about one per person) a (code, year, sex, initial) prefix of the ``pa`` keys holds beyond which
# only its finer key is read.
WIDE_CAP = 200
_INITIALS = ascii_uppercase + digits


@lru_cache(maxsize=1 << 16)
def phonetic(token: str) -> str:
    """Soundex; a community repeats its names, so each token is coded once (a bounded cache, a few MB)."""
    return jellyfish.soundex(token)


@dataclass(frozen=True)
class QueryKey:
    """A key to read; ``cap`` replaces the block cap when set (a key larger than its own cap is skipped
    silently: it is there for completeness, not needed to find the patient).

    ``prefix``: the key names every stored key that starts with it. With ``fine`` (a stored key under the
    prefix), the prefix is read while it holds at most ``WIDE_CAP`` key rows (nor more than the block cap) and
    ``fine`` instead beyond
    (within the block cap, reported above it); without, the prefix is read within the block cap."""

    key: str
    cap: int | None = None
    prefix: bool = False
    fine: str | None = None

    def reaches(self, stored: str) -> bool:
        """Whether a stored key is under this one (the fine rule aside)."""
        return stored.startswith(self.key) if self.prefix else stored == self.key


def _sex(person: Person) -> str:
    return person.sex or "-"


@lru_cache(maxsize=1 << 16)
def _mark(token: str) -> str:
    """The finer mark of a token in the ``pa`` keys: its initial and the first digit of its Soundex."""
    return token[0] + phonetic(token)[1:2]


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
    codes = [phonetic(t) for t in tokens]
    if len(tokens) == 1:
        keys.add(f"pa:{codes[0]}:{year}:{sex}:")
    cell = f":{year}:{sex}:"
    marks = [_mark(t) for t in tokens]
    keys.update(f"pa:{codes[i]}{cell}{marks[j]}" for i, j in permutations(range(len(tokens)), 2))
    unique = sorted(set(codes))
    keys.update(f"np:{a}:{b}:{sex}" for a, b in combinations(unique, 2))
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
    codes = sorted({phonetic(t) for t in tokens})
    cells = [f"pa:{c}:{yr}:{s}:" for c in codes for yr in years for s in sexes]
    keys += [QueryKey(k) for k in cells]  # a stored person with one token
    if len(tokens) == 1:  # any initial, read whole (a stored person has more tokens, their marks unknown)
        keys += [QueryKey(cell + i, prefix=True) for cell in cells for i in _INITIALS]
    else:  # (a token's code, another token's initial), its finer mark beyond WIDE_CAP persons
        pairs = sorted({(phonetic(a), _mark(b)) for a, b in permutations(tokens, 2)})
        keys += [
            QueryKey(f"pa:{c}:{yr}:{s}:{m[0]}", prefix=True, fine=f"pa:{c}:{yr}:{s}:{m}")
            for c, m in pairs
            for yr in years
            for s in sexes
        ]
    return keys + [QueryKey(k, DATED_PAIR_CAP) for k in sorted(_pairs(tokens, sexes))]
