"""The only ways the CHT emulator may answer differently from the recorded real CHT 5.2, each with why.

Most come from the recording's database: it was pouchdb-server behind a CouchDB facade, and the
recordings flag what pouchdb produced (``pouchdb_artefacts`` and the README's "The CouchDB was not a
CouchDB"). The emulator follows CouchDB 3 there. A few come from the recorder itself (trimmed bodies),
and one from the randomness of ids. An allowance that no longer matches anything fails the suite, so
this list cannot go stale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Allowed:
    file: str
    exchanges: tuple[int, ...] | None  # None: every exchange of the file
    difference: str  # a regular expression on the difference text (see recordings.compare)
    reason: str
    request_path: str = ""  # a regular expression the request path must match, when set
    by_chance: bool = False  # the difference comes from random ids: some runs do not meet it, it is not stale

    def covers(self, file: str, index: int, path: str, difference: str) -> bool:
        return (
            file == self.file
            and (self.exchanges is None or index in self.exchanges)
            and bool(re.match(self.request_path, path))
            and bool(re.search(self.difference, difference))
        )


_MEDIC = r"^/(medic|medic-sentinel|_users)/"  # not GET /medic: that 302 is the api's own
ALL = ("places.json", "people.json", "users.json", "records.json", "find.json", "changes.json", "outbound.json")

ALLOWED: tuple[Allowed, ...] = (
    *(
        Allowed(
            f,
            None,
            r"^header ",
            "Response headers of /medic... passthroughs are express-pouchdb's (README: no "
            "Server/X-Couch-Request-ID/quoted ETag, content-type and Location differ); the api's own /api "
            "headers are compared",
            request_path=_MEDIC,
        )
        for f in ALL
    ),
    Allowed(
        "find.json",
        None,
        r"^\$\.bookmark: not in the recording",
        "pouchdb-find answers no bookmark (flagged); CouchDB 3's _find always has one",
    ),
    Allowed(
        "find.json",
        (4,),
        r"^\$\.(error|reason)",
        "error body of an unknown operator is pouchdb-find's (flagged); CouchDB 3 says invalid_operator",
    ),
    Allowed(
        "changes.json",
        (0, 1, 4),
        r"^\$\.pending: not in the recording",
        "CouchDB 3's _changes carries pending; pouchdb-server's does not (its feed, flagged)",
    ),
    Allowed(
        "changes.json",
        (3,),
        r"^\$\.(adapter|backend_adapter|auto_compaction|disk_size): missing",
        "db info has pouchdb's shape (flagged: adapter, backend_adapter, auto_compaction); CouchDB 3 has "
        "sizes/props/cluster/purge_seq instead",
    ),
    Allowed(
        "changes.json",
        (5,),
        r".",
        "pouchdb-server ignored timeout on feed=longpoll (flagged); the emulator answers "
        '{"results":[],"last_seq":…} when the timeout passes, as CouchDB 3 does',
    ),
    Allowed(
        "outbound.json",
        (29,),
        r"^\$\.reason: 'deleted' where the recording has 'missing'",
        "a GET of a deleted doc: pouchdb says missing, CouchDB says deleted (README)",
    ),
    Allowed(
        "users.json",
        (10,),
        r"^\$\.iterations: ",
        "_users password hashing is pouchdb-server's (README: iterations 10), not CouchDB's",
    ),
    Allowed(
        "people.json",
        (16,),
        r"^\$\.data\[\d+\]",
        "which persons fill a cht-datasource page follows the order of their random UUIDs: the emulator "
        "pages in the same order (by _id), with other ids",
        by_chance=True,  # now and then the emulator's random ids fill the page as the recording's did
    ),
    Allowed(
        "changes.json",
        (6,),
        r"^\$\.(results|last_seq)",
        "NOT FOLLOWED: the recorded offline feed held only the client ddoc, service-worker-meta, settings "
        "and the user-settings doc (4 results for limit=2), none of the CHW's area; the emulator gives the "
        "CHW what it may replicate (its place, the contacts and reports under it, those docs) and, as "
        "recorded, does not cut at limit. One recording on pouchdb views does not settle which docs the "
        "real filter adds",
    ),
)
