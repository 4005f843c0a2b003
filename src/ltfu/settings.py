"""One typed settings object: environment variables ``LTFU_*`` and an optional TOML file.

Precedence (highest first): constructor arguments, environment, ``LTFU_CONFIG`` TOML file, defaults.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ltfu.domain.callbacks import Network, parse_networks

ADMIN_PASSWORD_MIN = 12

# Kenyan client-registry and national identifiers by default; deployments add their own systems.
DEFAULT_MATCH_IDENTIFIERS: dict[str, str] = {
    "urn:upi": "upi",
    "urn:nupi": "upi",
    "urn:nid": "national_id",
    "urn:birth-certificate": "birth_certificate",
    "urn:passport": "passport",
    "urn:alien-card": "alien_card",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LTFU_", extra="ignore", hide_input_in_errors=True)

    data_dir: Path = Field(default=Path("ltfu-data"), description="Where the embedded SQLite database lives.")
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://...; default SQLite under data_dir."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str = Field(
        default="https://ltfu.example.org/fhir",
        description="Base for our identifier systems and CodeSystems (not the address we listen on).",
    )
    public_url: str | None = Field(default=None, description="Address clients reach us at (for links).")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    bundle_max_entries: int = Field(
        default=20_000, ge=1, description="Entries a transaction or batch Bundle may carry (a 10,000-patient list "
                                          "is 20,000 entries: each Patient and its ServiceRequest)."
    )
    admin_password: SecretStr | None = Field(
        default=None, description=f"Password of the `admin` client, at least {ADMIN_PASSWORD_MIN} characters."
    )
    gc_gen0_threshold: int = Field(
        default=50_000, ge=0, description="Allocations between the garbage collector's young-generation runs in "
                                          "`ltfu serve`/`ltfu worker` (Python's default: 700; 0 keeps it). A "
                                          "20,000-entry Bundle keeps many objects alive and at 700 the collector "
                                          "took about 15% of its CPU."
    )
    sqlite_inline_writes: bool = Field(
        default=True, description="SQLite: run the writer's statements on the event loop's thread (no thread "
                                  "hop per statement; checkpoints on a thread of their own; see "
                                  "store/sqlite_inline.py). Off: every statement through aiosqlite's thread."
    )

    # Authentication (HTTP Basic, argon2)
    auth_threads: int = Field(default=2, ge=1, description="Password checks (argon2) run at once, off the event loop.")
    auth_max_failures: int = Field(
        default=5, ge=1, description="Wrong passwords for one client name before each further try waits (backoff)."
    )
    auth_max_failures_per_address: int = Field(
        default=20, ge=1, description="Wrong passwords from one remote address before it must wait (backoff)."
    )
    auth_backoff_s: float = Field(default=1.0, gt=0, description="First wait after those failures; doubles each time.")
    auth_lockout_max_s: float = Field(default=300.0, gt=0, description="Longest wait the backoff imposes.")

    # HTTP server (`ltfu serve`): slow or greedy clients cannot hold it
    header_timeout_s: float = Field(default=10.0, gt=0, description="A request's headers must arrive within this.")
    body_timeout_s: float = Field(default=60.0, gt=0, description="A request's body must arrive within this.")
    keep_alive_s: int = Field(default=5, ge=1, description="Idle keep-alive connections are closed after this.")
    limit_concurrency: int = Field(
        default=200, ge=1, description="Connections and requests at once; beyond it new requests get 503."
    )

    # Retention (off unless retention_days is set)
    retention_days: int | None = Field(
        default=None, ge=1, description="Days after a case closes before its PHI is purged (daily, by the worker)."
    )
    retention_interval_s: float = Field(default=24 * 3600.0, gt=0, description="How often the retention sweep runs.")

    # CHT
    cht_url: str | None = None
    cht_username: str | None = None
    cht_password: SecretStr | None = None
    cht_verify_tls: bool = True
    cht_form: str = "interop_follow_up"
    cht_cancel_form: str = "interop_follow_up_cancel"
    cht_max_concurrency: int = Field(default=8, ge=1)
    cht_max_rate_per_s: float = Field(default=20.0, gt=0, description="Requests per second toward CHT, at most.")
    cht_timeout_s: float = 30.0
    cht_version: str | None = Field(
        default=None,
        description="cht-core version (e.g. 5.2.0); unset: asked from CHT's `GET /api/info` once per process.",
    )
    cht_write_identifiers: bool = Field(
        default=False,
        description="Add a linked facility Patient's MRN/UPI to the CHT person (full-doc update, via the outbox).",
    )

    cht_person_types: list[str] = Field(
        default=["person"], description="contact_type ids of person contacts (besides legacy type: person)."
    )
    cht_place_levels: dict[str, str] = Field(
        default_factory=dict,
        description="contact_type → household | chw_area | unit, added to the standard and Kenya eCHIS types.",
    )
    cht_sync_interval_s: float = Field(default=60.0, description="Seconds between `_changes` syncs in the worker.")
    cht_sync_enabled: bool = Field(default=True, description="Keep the person index in sync from CHT `_changes`.")

    # Matching (docs/matching.md)
    match_identifiers: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_MATCH_IDENTIFIERS),
        description="FHIR identifier system → CHT person field (or identification_type) compared on match.",
    )
    match_weights: dict[str, float] = Field(
        default_factory=dict, description="Overrides of MatchConfig weights and thresholds (domain/matching/config.py)."
    )
    match_default_region: str = Field(default="KE", description="Country of phone numbers written without one.")
    match_review_days: int = Field(default=3, ge=1, description="Days a review item waits before unassignable.")
    match_count_default: int = Field(default=5, ge=1, le=100)
    match_count_max: int = Field(default=20, ge=1, le=100)

    # Delivery (outbox)
    workers: bool = Field(default=True, description="Run delivery workers inside `ltfu serve`.")
    retry_initial_s: float = 10.0
    retry_max_s: float = 6 * 3600.0
    retry_budget_s: float = 72 * 3600.0
    retry_permanent_4xx: int = Field(default=3, description="Attempts before a non-retryable 4xx is dead.")
    poll_interval_s: float = 0.5
    delivery_timeout_s: float = 30.0
    delivery_concurrency: int = Field(
        default=16, ge=1, description="Deliveries one worker process has in flight at once (an ordered lane, "
        "e.g. one facility's notifications, counts once). CHT calls are bounded again by LTFU_CHT_MAX_CONCURRENCY.")
    notify_max_events: int = Field(
        default=20, ge=1, description="Due events of one subscription sent together in one notification Bundle "
        "(backport mode; 1: one event per Bundle). A Subscription's backport-max-count lowers it.")
    notify_verify_tls: bool = True
    notify_mode: str = Field(default="backport", pattern="^(backport|hapi)$")
    callback_allowed_networks: str | None = Field(
        default=None,
        description="Comma-separated CIDRs that callbacks may reach although private/loopback/link-local "
        "(e.g. a county network 10.20.0.0/16); plain http callbacks go only to these.",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated, newest first: callback header secrets and signing keys "
        "are stored encrypted with it. Make one with `ltfu secrets-key`.",
    )
    follow_up_window_days: int = 14
    max_attempts: int = Field(default=2, ge=1, description="CHW attempts before not-located is final.")
    sweep_interval_s: float = 60.0
    tally_fold_interval_s: float = Field(
        default=5.0, gt=0, description="How often the changes to the kept counts (dashboard, /admin/stats, /metrics) "
        "are folded into their totals; the counts are exact either way, a fold keeps their reading short.")

    # OpenHIM (off unless openhim_url is set)
    openhim_url: str | None = Field(default=None, description="OpenHIM core API, e.g. https://openhim:8080")
    openhim_username: str = "root@openhim.org"
    openhim_password: SecretStr | None = None
    openhim_verify_tls: bool = True
    openhim_heartbeat_s: float = 10.0
    openhim_mediator_url: str | None = Field(
        default=None, description="Where OpenHIM reaches this mediator (route host/port)."
    )
    openhim_envelope: str = Field(
        default="auto",
        pattern="^(auto|always|never)$",
        description="Answer in application/json+openhim: when X-OpenHIM-TransactionID is present (auto).",
    )

    @field_validator("admin_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("admin_password")
    @classmethod
    def _long_admin_password(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < ADMIN_PASSWORD_MIN:
            raise ValueError(f"LTFU_ADMIN_PASSWORD must have at least {ADMIN_PASSWORD_MIN} characters")
        return v

    @field_validator("cht_url", "public_url", "openhim_url", "openhim_mediator_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @field_validator("callback_allowed_networks")
    @classmethod
    def _cidrs(cls, v: str | None) -> str | None:
        parse_networks(v)  # a bad CIDR is a configuration error at start-up
        return v

    @cached_property
    def allowed_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.callback_allowed_networks)

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL for ``database_url`` (driver chosen for the user)."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'ltfu.db').as_posix()}"
        if url.startswith(("postgres://", "postgresql://")):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = os.environ.get("LTFU_CONFIG")
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)
