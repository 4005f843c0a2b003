"""SQL tables (SQLAlchemy Core). Migrations in ``store/migrations`` create exactly these.

Timestamps are ISO-8601 UTC strings with microseconds (``2024-05-02T08:00:00.000000Z``): they sort
lexically, compare the same on SQLite and PostgreSQL and go into FHIR ``meta`` unchanged.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrement needs INTEGER PRIMARY KEY

# Current version of every resource. ``seq`` is the history row of that version: a global,
# monotonic change number used for stable keyset paging and polling.
resources = Table(
    "resources",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("seq", Id, nullable=False, unique=True),
    Column("last_updated", String(32), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=False),
)
Index("ix_resources_type_seq", resources.c.res_type, resources.c.seq)
Index("ix_resources_type_updated", resources.c.res_type, resources.c.last_updated)

resource_history = Table(
    "resource_history",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", String(32), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("method", String(8), nullable=False),
    Column("content", Text, nullable=False),
    UniqueConstraint("res_type", "res_id", "version_id"),
)

# One row per indexed value of a current resource. ``system`` is set for tokens; dates keep their
# range in ``value``..``value_hi``; strings are stored lower-cased for case-insensitive prefix search.
search_index = Table(
    "search_index",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(255), nullable=True),
    Column("value", String(512), nullable=False),
    Column("value_hi", String(32), nullable=True),
)
Index("ix_search_lookup", search_index.c.res_type, search_index.c.param, search_index.c.value)
Index("ix_search_owner", search_index.c.res_type, search_index.c.res_id)

clients = Table(
    "clients",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),  # kept equal to role == "admin"
    Column("organization_id", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("role", String(16), nullable=False, server_default="facility"),  # ltfu.services.policy.ROLES
)

# The facility that created a resource through the API (set by the server): what a facility may see
# besides its cases. One row per resource; admin and internal writes record none.
resource_owners = Table(
    "resource_owners",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("organization_id", String(64), nullable=False, index=True),
)

# OpenHIM client ids (``X-OpenHIM-ClientID``) that a ``gateway`` client may name, and who each one is.
openhim_clients = Table(
    "openhim_clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("role", String(16), nullable=False),  # facility or cht
    Column("organization_id", String(64), nullable=True),
)

# A follow-up case: the ServiceRequest and its Task, with the columns the workflow, the sweeper
# and the dashboard query. The FHIR resources stay the source of truth for clients.
cases = Table(
    "cases",
    metadata,
    Column("case_id", String(64), primary_key=True),  # ServiceRequest id
    Column("task_id", String(64), nullable=False, unique=True),
    Column("request_key", String(600), nullable=False, unique=True),  # SR identifier system|value
    Column("patient_id", String(64), nullable=False),
    Column("organization_id", String(64), nullable=True),
    Column("status", String(32), nullable=False),
    Column("business_status", String(64), nullable=True),
    Column("outcome", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("chw_id", String(128), nullable=True),
    Column("cht_record_id", String(128), nullable=True),
    Column("group_id", String(255), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("sent_to_cht_at", String(32), nullable=True),
    Column("first_attempt_at", String(32), nullable=True),
    Column("closed_at", String(32), nullable=True),
    Column("window_end", String(32), nullable=True),
    Column("purged_at", String(32), nullable=True),  # retention removed its PHI (services/retention.py)
    # how intake found the CHT person: identifier | score | created | review | reviewed (None: the facility knew)
    Column("matched_by", String(16), nullable=True),
)
Index("ix_cases_org_status", cases.c.organization_id, cases.c.status)
Index("ix_cases_patient", cases.c.patient_id)
Index("ix_cases_status_window", cases.c.status, cases.c.window_end)
# The dashboard's case list: newest first (created_at, case_id), by facility, state, outcome or CHW; a
# page is an index range read from where the last one stopped (migration 0013, docs/operations.md).
Index("ix_cases_created_case", cases.c.created_at, cases.c.case_id)
Index("ix_cases_org_created", cases.c.organization_id, cases.c.created_at, cases.c.case_id)
Index("ix_cases_status_created", cases.c.status, cases.c.created_at, cases.c.case_id)
_HAS_OUTCOME = cases.c.outcome.is_not(None)
Index("ix_cases_outcome_created", cases.c.outcome, cases.c.created_at, cases.c.case_id,
      sqlite_where=_HAS_OUTCOME, postgresql_where=_HAS_OUTCOME)
_HAS_CHW = cases.c.chw_id.is_not(None)
Index("ix_cases_chw_created", cases.c.chw_id, cases.c.created_at, cases.c.case_id,
      sqlite_where=_HAS_CHW, postgresql_where=_HAS_CHW)
Index("ix_cases_org_chw", cases.c.organization_id, cases.c.chw_id, sqlite_where=_HAS_CHW, postgresql_where=_HAS_CHW)
Index("ix_cases_closed", cases.c.closed_at)

# Transactional outbox: written in the same transaction as the state change that causes it.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("destination", String(16), nullable=False),  # cht | notify
    Column("kind", String(32), nullable=False),
    Column("order_key", String(160), nullable=False),  # delivered strictly in id order per key
    Column("dedupe_key", String(255), nullable=True, unique=True),
    Column("payload", Text, nullable=False),
    # pending | done | dead; an event is unnumbered until its transaction commits (migration 0015)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", String(32), nullable=False),
    Column("next_attempt_at", String(32), nullable=False),
    Column("last_attempt_at", String(32), nullable=True),
    Column("done_at", String(32), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", String(32), nullable=True),
    Column("case_id", String(64), nullable=True),
    Column("subscription_id", String(64), nullable=True),
    Column("organization_id", String(64), nullable=True),
    # When a worker first took the row to send it (committed before the first byte left); never cleared.
    Column("sent_at", String(32), nullable=True),
)
Index("ix_outbox_due", outbox.c.status, outbox.c.next_attempt_at)
Index("ix_outbox_order", outbox.c.order_key, outbox.c.status, outbox.c.id)
Index("ix_outbox_case", outbox.c.case_id)
# The failing rows (dead, or pending after a failed attempt) newest first: the deliveries page reads a page of
# them, however many rows are stored or queued (migration 0020). ``FAILING`` is the condition a query repeats
# as one of its terms, so that SQLite sees the index applies.
FAILING = "status = 'dead' OR (status = 'pending' AND attempts > 0)"
Index("ix_outbox_failing", outbox.c.id, sqlite_where=text(FAILING), postgresql_where=text(FAILING))
# The oldest pending row per destination (``ltfu_outbox_oldest_due_age_seconds``): one index step each.
_PENDING = outbox.c.status == "pending"
Index("ix_outbox_pending_due", outbox.c.destination, outbox.c.next_attempt_at,
      sqlite_where=_PENDING, postgresql_where=_PENDING)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False, index=True),
    Column("attempted_at", String(32), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("result", String(16), nullable=False),  # ok | retry | dead
    Column("error", Text, nullable=True),
)

# Idempotency of inbound messages (CHT outbound push re-sends forever): key -> hash of what we took.
inbound_receipts = Table(
    "inbound_receipts",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("received_at", String(32), nullable=False),
    Column("result", Text, nullable=False),
)

# Notification events per Subscription (Backport IG event numbers); kept for $events and replay.
subscription_events = Table(
    "subscription_events",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("event_number", Integer, primary_key=True),
    Column("focus", String(200), nullable=False),  # e.g. Task/abc/_history/3
    Column("case_id", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("outbox_id", BigInteger, nullable=True),
)

# One row per notification Subscription: the event counter (row-locked on increment) and its facility.
subscription_counters = Table(
    "subscription_counters",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("organization_id", String(64), nullable=False, index=True),
    Column("events_since_start", Integer, nullable=False, default=0),
    # The callback address that last answered a handshake: events go only there (PHI waits for it).
    Column("verified_address", Text, nullable=True),
)

# Which Organization owns an Endpoint: set by the server when an Organization first references it.
endpoint_owners = Table(
    "endpoint_owners",
    metadata,
    Column("endpoint_id", String(64), primary_key=True),
    Column("organization_id", String(64), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
)

# The real header lines of an Endpoint or Subscription (the resources carry ``Name: ***``),
# sealed by ``store.callbacks.SecretBox`` (Fernet when LTFU_SECRETS_KEY is set).
callback_secrets = Table(
    "callback_secrets",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("headers", Text, nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# Standard Webhooks signing secrets per Subscription; the two newest not retired are live.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False, index=True),
    Column("secret", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("retired_at", String(32), nullable=True),
    Column("shown_at", String(32), nullable=True),  # handed to the facility (null: made with the subscription)
)

# The CHT person and place index (matching): fed by outbound push and the ``_changes`` sync.
cht_places = Table(
    "cht_places",
    metadata,
    Column("place_id", String(128), primary_key=True),
    Column("contact_type", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("name_norm", String(255), nullable=False),  # upper-case ASCII tokens, space-joined
    Column("code", String(64), nullable=True, index=True),
    Column("external_id", String(128), nullable=True, index=True),
    Column("link_facility_code", String(64), nullable=True, index=True),
    Column("parent_id", String(128), nullable=True, index=True),
    Column("lineage", Text, nullable=False),  # JSON list of ancestor ids, nearest first
    Column("updated_at", String(32), nullable=False),
)

cht_persons = Table(
    "cht_persons",
    metadata,
    Column("person_id", String(128), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("given", String(255), nullable=False),  # normalised tokens, space-joined
    Column("family", String(255), nullable=False),
    Column("sex", String(1), nullable=True),
    Column("birth_date", String(10), nullable=True),
    Column("birth_precision", String(8), nullable=True),  # day | year
    Column("phones", Text, nullable=False),  # JSON list of E.164
    Column("identifiers", Text, nullable=False),  # JSON list of [kind, value]
    Column("parent_id", String(128), nullable=True),
    Column("household_id", String(128), nullable=True, index=True),
    Column("chw_area_id", String(128), nullable=True),
    Column("unit_id", String(128), nullable=True, index=True),
    Column("unit_code", String(64), nullable=True),
    Column("facility_code", String(64), nullable=True),
    Column("lineage", Text, nullable=False),  # JSON list of ancestor ids, nearest first
    Column("flags", String(64), nullable=False, default=""),  # dead, muted (space-separated)
    Column("block_keys", Text, nullable=False, default="[]"),  # JSON list: this person's cht_person_keys rows
    Column("updated_at", String(32), nullable=False),
)

# A first full sync from CHT writes here first (append-only, no index but its rowid) and merges into
# cht_persons/cht_person_keys in key order once the feed is read (store/cht_index.py, migration 0023). A row
# is a person as cht_persons holds it, or a deletion (``deleted``); the last staged row of a person counts.
cht_stage_persons = Table(
    "cht_stage_persons",
    metadata,
    Column("stage_id", Id, primary_key=True, autoincrement=True),
    Column("person_id", String(128), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("name", String(255), nullable=False, default=""),
    Column("given", String(255), nullable=False, default=""),
    Column("family", String(255), nullable=False, default=""),
    Column("sex", String(1), nullable=True),
    Column("birth_date", String(10), nullable=True),
    Column("birth_precision", String(8), nullable=True),
    Column("phones", Text, nullable=False, default="[]"),
    Column("identifiers", Text, nullable=False, default="[]"),
    Column("parent_id", String(128), nullable=True),
    Column("household_id", String(128), nullable=True),
    Column("chw_area_id", String(128), nullable=True),
    Column("unit_id", String(128), nullable=True),
    Column("unit_code", String(64), nullable=True),
    Column("facility_code", String(64), nullable=True),
    Column("lineage", Text, nullable=False, default="[]"),
    Column("flags", String(64), nullable=False, default=""),
    Column("block_keys", Text, nullable=False, default="[]"),
    Column("updated_at", String(32), nullable=False),  # when staged
)

# Blocking keys (domain/matching/blocking.py): the candidates of a query are the union of its keys' rows.
# One B-tree keyed (key, person_id) (SQLite: WITHOUT ROWID); a person's rows are found by the keys its
# cht_persons row lists, so no index on person_id (migration 0019).
cht_person_keys = Table(
    "cht_person_keys",
    metadata,
    # PostgreSQL: collated "C", so a key prefix is one range of the index (migration 0023)
    Column("key", String(200).with_variant(String(200, collation="C"), "postgresql"), primary_key=True),
    Column("person_id", String(128), primary_key=True),
    sqlite_with_rowid=False,
)

# How many indexed persons carry each name token (the "*" row: all persons): name-frequency weights.
cht_name_tokens = Table(
    "cht_name_tokens",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("persons", Integer, nullable=False),
)

# Where each sync from CHT stopped (the CouchDB ``_changes`` sequence).
cht_sync_state = Table(
    "cht_sync_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", Text, nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# A facility's catchment beyond ``link_facility_code``: explicit Organization → CHT place mappings.
facility_places = Table(
    "facility_places",
    metadata,
    Column("organization_id", String(64), primary_key=True),
    Column("place_id", String(128), primary_key=True),
)

# The review queue: one item per case whose patient could not be linked or created automatically.
match_reviews = Table(
    "match_reviews",
    metadata,
    Column("review_id", String(64), primary_key=True),
    Column("case_id", String(64), nullable=False, unique=True),
    Column("organization_id", String(64), nullable=True, index=True),
    Column("patient_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # open | deferred | linked | created | rejected | expired
    Column("reason", String(64), nullable=False),
    Column("proposal", Text, nullable=False),  # JSON: the incoming patient, candidates with field weights, places
    Column("created_at", String(32), nullable=False),
    Column("due_at", String(32), nullable=False),
    Column("decided_at", String(32), nullable=True),
)
Index("ix_match_reviews_status_due", match_reviews.c.status, match_reviews.c.due_at)

# Every manual decision (who, when, what, the evidence shown); "not a match" rows are permanent.
match_decisions = Table(
    "match_decisions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("review_id", String(64), nullable=False, index=True),
    Column("patient_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),  # link | create | reject | defer | not-match | duplicate
    Column("person_id", String(128), nullable=True),
    Column("place_id", String(128), nullable=True),
    Column("actor", String(128), nullable=False),
    Column("decided_at", String(32), nullable=False),
    Column("evidence", Text, nullable=False),
)
Index("ix_match_decisions_patient", match_decisions.c.patient_id, match_decisions.c.action)
Index("ix_match_decisions_person", match_decisions.c.person_id, match_decisions.c.action)

# CHT persons a reviewer flagged as one human recorded twice (CHT's own contact merge happens in CHT).
# Matching never auto-links a member of an open group while another member is still indexed.
cht_duplicate_groups = Table(
    "cht_duplicate_groups",
    metadata,
    Column("group_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # open | resolved | merged (into ``merged_into``)
    Column("review_id", String(64), nullable=True),  # the review item it was flagged from
    Column("flagged_by", String(128), nullable=False),
    Column("flagged_at", String(32), nullable=False),
    Column("note", String(500), nullable=False, default=""),
    Column("evidence", Text, nullable=False),  # JSON: the candidates as the reviewer saw them
    Column("resolved_by", String(128), nullable=True),
    Column("resolved_at", String(32), nullable=True),
    Column("merged_into", String(64), nullable=True),  # an overlapping flag joined it to that group (0021)
)
Index("ix_cht_duplicate_groups_status", cht_duplicate_groups.c.status)

cht_duplicate_persons = Table(
    "cht_duplicate_persons",
    metadata,
    Column("group_id", String(64), primary_key=True),
    Column("person_id", String(128), primary_key=True),
)
Index("ix_cht_duplicate_persons_person", cht_duplicate_persons.c.person_id)

# Who changed a facility's explicit catchment, and when (``facility_places`` holds the current list).
catchment_changes = Table(
    "catchment_changes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("organization_id", String(64), nullable=False, index=True),
    Column("place_id", String(128), nullable=False),
    Column("action", String(8), nullable=False),  # add | remove
    Column("actor", String(128), nullable=False),
    Column("changed_at", String(32), nullable=False),
)

# Counts the dashboard, /admin/stats and /metrics show, kept by triggers (migration 0020, ``store/tallies.py``):
# every insert, delete or counted change of a case, outbox row or delivery attempt appends a (metric, scope, key,
# ±1) row to ``tally_deltas`` — insert-only, no row that every writer updates — and the fold (a background task)
# moves them into ``tallies`` in one transaction. A count is the sum over both: exact at any moment.
tallies = Table(
    "tallies",
    metadata,
    Column("metric", String(16), primary_key=True),  # cases | outbox | attempts
    Column("scope", String(64), primary_key=True),  # the organization id ('' for none, or not scoped)
    Column("key", String(400), primary_key=True),  # the counted columns, '|'-joined (store/tallies.py)
    Column("n", BigInteger, nullable=False),
)

tally_deltas = Table(
    "tally_deltas",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("metric", String(16), nullable=False),
    Column("scope", String(64), nullable=False),
    Column("key", String(400), nullable=False),
    Column("n", Integer, nullable=False),
)

# What ``UnitOfWork.lock`` locks on PostgreSQL: one row per identity ever locked (a 64-bit hash of its key). A
# locker inserts or updates the row and so holds a row lock until it commits: row locks live in the rows, not in
# the server's lock table (a few thousand slots), so a 10,000-defaulter list locks each of its 20,000 identities
# and nobody else waits for it (migration 0022). Unused on SQLite (one write transaction at a time).
identity_locks = Table(
    "identity_locks",
    metadata,
    Column("h", BigInteger, primary_key=True, autoincrement=False),
)
