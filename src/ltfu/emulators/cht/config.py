"""Configuration of the CHT emulator (plain dataclass: the CLI, the demo and tests build it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: the repository's cht-conf project, when the package runs from a source checkout
REPO_CHT_CONFIG = Path(__file__).resolve().parents[4] / "cht-config"
#: the copy of its ``app_settings`` that an installed wheel carries (pyproject.toml, force-include)
PACKAGED_CHT_CONFIG = Path(__file__).resolve().parents[2] / "cht_config"


def default_cht_config_dir() -> Path | None:
    """The source checkout's ``cht-config/`` (the real app settings), else the installed copy, else ``None``."""
    for candidate in (REPO_CHT_CONFIG, PACKAGED_CHT_CONFIG):
        if (candidate / "app_settings" / "base_settings.json").is_file():
            return candidate
    return None

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
    #: tasks.js WINDOW_DAYS: a request without ``due_date`` is followed up this many days (task input ``due_date``)
    window_days: int = 14


@dataclass
class ChtEmulatorConfig:
    """Everything the CHT emulator needs. Paths may be relative to the working directory."""

    #: app_settings: a compiled ``app_settings.json``, a cht-conf project folder (reads
    #: ``app_settings/base_settings.json`` + ``app_settings/forms.json``) or an ``app_settings`` folder
    app_settings_path: Path | None = None
    #: an extra ``forms.json`` merged over the forms of ``app_settings_path``
    forms_path: Path | None = None
    #: the mediator's base URL; when set it is written into every outbound destination with the
    #: credential key and user below (``ltfu.cht.config_build.apply_outbound_destination``, what
    #: ``ltfu cht-config build --mediator-url URL --credential-key KEY`` does to the files)
    mediator_url: str | None = None
    mediator_credential_key: str = "ltfu-mediator"
    mediator_username: str = "cht"
    #: the password CHT sends to the mediator, put in the vault under ``mediator_credential_key`` at
    #: start (``PUT /api/v1/credentials/<key>``); ``None`` leaves the vault to ``credentials``
    mediator_password: str | None = None
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
