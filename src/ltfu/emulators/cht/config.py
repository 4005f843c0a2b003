"""Configuration of the CHT emulator (plain dataclass: the CLI, the demo and tests build it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_OUTCOME_MIX: dict[str, float] = {
    "returning_to_care": 0.45,
    "already_returned": 0.10,
    "refused": 0.08,
    "self_transferred": 0.10,
    "hospitalized": 0.04,
    "moved": 0.10,
    "deceased": 0.08,
    "not_located": 0.05,
}


@dataclass
class ChwSimConfig:
    """The simulated community health workers."""

    enabled: bool = True
    seed: int = 42
    #: seconds from the follow-up record reaching a CHW to the first report
    first_delay_s: float = 1.0
    #: seconds between an unsuccessful attempt and the next one
    retry_delay_s: float = 1.0
    #: uniform jitter added to each delay, 0..jitter_s seconds
    jitter_s: float = 0.5
    #: probability that an attempt before the last one is unsuccessful (not_located)
    unsuccessful_rate: float = 0.3
    #: attempts before the CHW stops (the task's events)
    max_attempts: int = 2
    #: weights of the outcome of a successful (or the last) attempt
    outcome_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_OUTCOME_MIX))
    #: JSON-form keys (upper case, as stored) of the records the CHW acts on
    request_forms: tuple[str, ...] = ("INTEROP_FOLLOW_UP",)
    cancel_forms: tuple[str, ...] = ("INTEROP_FOLLOW_UP_CANCEL",)
    #: the XForm id of the CHW's follow-up app form (report.form)
    report_form: str = "ltfu_follow_up"


@dataclass
class ChtEmulatorConfig:
    """Everything the CHT emulator needs. Paths may be relative to the working directory."""

    #: app_settings: a compiled ``app_settings.json``, a cht-conf project folder (reads
    #: ``app_settings/base_settings.json`` + ``app_settings/forms.json``) or an ``app_settings`` folder
    app_settings_path: Path | None = None
    #: an extra ``forms.json`` merged over the forms of ``app_settings_path``
    forms_path: Path | None = None
    #: SQLite file for the store; ``None`` keeps everything in memory
    db_path: Path | None = None
    #: CouchDB server admin, as in CHT development setups
    admin_username: str = "medic"
    admin_password: str = "password"
    #: extra users created at start if absent: ``{"username", "password", "roles", "place"?, "contact"?}``
    users: list[dict] = field(default_factory=list)
    #: outbound credentials (``password_key`` -> secret) stored in the vault at start
    credentials: dict[str, str] = field(default_factory=dict)
    #: emulated cht-core version (``GET /api/info``; gates 4.9+ endpoints and the 4.17 outbound rules)
    cht_version: str = "4.11.0"
    #: redirect "human" clients (a User-Agent not starting ``Dalvik/``) to the login page when
    #: unauthenticated, as CHT does; off -> 401 + ``WWW-Authenticate`` for everyone without JSON Accept
    redirect_humans: bool = True
    #: seconds between outbound retry runs (300 in CHT)
    outbound_retry_interval_s: float = 300.0
    #: timeout of one outbound request (10 s in CHT)
    outbound_timeout_s: float = 10.0
    #: delay of the sentinel (async transitions: shortcodes, outbound of non-API docs) after a change
    sentinel_delay_s: float = 0.05
    #: IANA zone used for "server local time" (JSON-form dates); ``None`` = the process's local zone
    timezone: str | None = None
    chw: ChwSimConfig = field(default_factory=ChwSimConfig)
    #: answer the ``/_emulator`` control API (admin only)
    control_api: bool = True
