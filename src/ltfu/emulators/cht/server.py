"""Running the CHT emulator: ``run(host, port, config)`` and a typer-free command line ``main``.

``python -m ltfu.emulators.cht --port 5988 --app-settings cht-config --db cht-emulator.db``
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import uvicorn

from .app import create_app
from .config import ChtEmulatorConfig, default_cht_config_dir


def run(host: str, port: int, config: ChtEmulatorConfig, *, log_level: str = "warning") -> None:
    """Serve the emulator with uvicorn until interrupted."""
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, lifespan="on")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltfu-cht-emulator", description="CHT emulator for ltfu")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5988)
    default_settings = default_cht_config_dir()
    p.add_argument(
        "--app-settings",
        type=Path,
        default=default_settings,
        help=f"app_settings.json or a cht-conf project folder (default: {default_settings or 'none'})",
    )
    p.add_argument("--mediator-url", help="write this mediator base URL into every outbound destination")
    p.add_argument("--credential-key", default="ltfu-mediator", help="outbound password_key (with --mediator-url)")
    p.add_argument("--mediator-username", default="cht", help="outbound Basic-auth user (with --mediator-url)")
    p.add_argument("--mediator-password", help="secret stored under --credential-key at start")
    p.add_argument("--forms", type=Path, help="extra forms.json merged over the app_settings forms")
    p.add_argument("--db", type=Path, help="SQLite file (default: in memory)")
    p.add_argument("--admin-password", default="password", help="password of the admin user 'medic'")
    p.add_argument(
        "--credential",
        action="append",
        default=[],
        metavar="KEY=SECRET",
        help="outbound credential (repeatable)",
    )
    p.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="JSON",
        help='user to create at start, e.g. \'{"username":"ltfu","password":"...","roles":["x"]}\'',
    )
    p.add_argument("--version", dest="cht_version", default="4.11.0", help="emulated cht-core version")
    p.add_argument("--retry-interval", type=float, default=300.0, help="outbound retry interval, seconds")
    p.add_argument("--no-chw", action="store_true", help="do not simulate CHWs")
    p.add_argument("--chw-delay", type=float, default=1.0, help="seconds before a CHW's first report")
    p.add_argument("--chw-retry-delay", type=float, default=1.0, help="seconds between attempts")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--outcome-mix", type=json.loads, help="JSON weights, e.g. '{\"returning_to_care\": 1}'")
    p.add_argument("--unsuccessful-rate", type=float, default=0.3)
    p.add_argument("--log-level", default="warning")
    return p


def config_from_args(args: argparse.Namespace) -> ChtEmulatorConfig:
    config = ChtEmulatorConfig(
        app_settings_path=args.app_settings,
        forms_path=args.forms,
        mediator_url=args.mediator_url,
        mediator_credential_key=args.credential_key,
        mediator_username=args.mediator_username,
        mediator_password=args.mediator_password,
        db_path=args.db,
        admin_password=args.admin_password,
        credentials=dict(c.split("=", 1) for c in args.credential),
        users=[json.loads(u) for u in args.user],
        cht_version=args.cht_version,
        outbound_retry_interval_s=args.retry_interval,
    )
    config.chw.enabled = not args.no_chw
    config.chw.first_delay_s = args.chw_delay
    config.chw.retry_delay_s = args.chw_retry_delay
    config.chw.seed = args.seed
    config.chw.unsuccessful_rate = args.unsuccessful_rate
    if args.outcome_mix:
        config.chw.outcome_mix = {str(k): float(v) for k, v in args.outcome_mix.items()}
    return config


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    run(args.host, args.port, config_from_args(args), log_level=args.log_level)


if __name__ == "__main__":
    main()
