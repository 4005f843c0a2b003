"""Running the facility emulator: ``run(host, port, config)`` and a typer-free command line ``main``.

``python -m ltfu.emulators.facility --port 5990 --mediator-url http://127.0.0.1:8000 --password ...
--register --send 20``
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from .app import Facility, create_app
from .config import FacilityEmulatorConfig
from .upstream import UpstreamError

log = logging.getLogger("ltfu.emulators.facility")


def startup_actions(register: bool, send: int, cht: bool) -> Any:
    """The coroutine run once the server listens: register, then send a first list of ``send``."""

    async def act(facility: Facility) -> None:
        try:
            if register or send:
                reg = await facility.register()
                log.warning("registered: Organization/%s, Endpoint/%s", reg.organization_id, reg.endpoint_id)
            if send:
                result = await facility.send_list(facility.today(), send, cht={} if cht else None)
                log.warning("sent %s requests (%s new)", result["count"], result["requests_created"])
        except (UpstreamError, OSError, TimeoutError) as exc:
            facility.ledger.note_error(str(exc))
            log.error("start-up action failed: %s", exc)

    return act


def run(
    host: str, port: int, config: FacilityEmulatorConfig, *, log_level: str = "warning", on_startup: Any = None
) -> None:
    """Serve the emulator with uvicorn until interrupted (``public_url`` defaults to ``http://host:port``)."""
    if config.public_url is None:
        config.public_url = f"http://{host}:{port}"
    uvicorn.run(create_app(config, on_startup=on_startup), host=host, port=port, log_level=log_level,
                lifespan="on")


def build_parser() -> argparse.ArgumentParser:
    d = FacilityEmulatorConfig()
    p = argparse.ArgumentParser(prog="ltfu-facility-emulator", description="Facility (EMR) emulator for ltfu")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5990)
    p.add_argument("--public-url", help="where the mediator reaches this emulator (default http://HOST:PORT)")
    p.add_argument("--mediator-url", help="the mediator, e.g. http://127.0.0.1:8000 (FHIR API at /fhir)")
    p.add_argument("--username", default=d.mediator_username, help="ltfu client (facility or admin)")
    p.add_argument("--password", default="", help="its password")
    p.add_argument("--token", default=d.callback_token, help="Bearer token the mediator must send")
    p.add_argument("--signing-secret", action="append", default=[],
                   help="verify Standard Webhooks signatures with this whsec_ secret (repeatable: rotation)")
    p.add_argument("--require-signature", action="store_true",
                   help="refuse notifications while no signing secret is known (set one at /_facility/signing-secret)")
    p.add_argument("--facility-code", default=d.facility_code)
    p.add_argument("--facility-name", default=d.facility_name)
    p.add_argument("--facility-system", default=d.facility_identifier_system, help="Organization identifier system")
    p.add_argument("--facility-base", default=d.facility_base, help="the facility's URI (identifier systems)")
    p.add_argument("--ltfu-base-url", default=d.ltfu_base_url, help="the mediator's LTFU_BASE_URL")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--patients", type=int, default=d.patients, help="default size of a list")
    p.add_argument("--window-days", type=int, default=d.window_days)
    p.add_argument("--cht-url", help="CHT to create the patients in (POST /api/v1/people)")
    p.add_argument("--cht-username", default=d.cht_username)
    p.add_argument("--cht-password", default=d.cht_password)
    p.add_argument("--cht-place", action="append", default=[], help="CHT household id (repeatable)")
    p.add_argument("--register", action="store_true", help="register Endpoint + Organization at start")
    p.add_argument("--send", type=int, default=0, metavar="N", help="send a list of N patients at start")
    p.add_argument("--log-level", default="warning")
    return p


def config_from_args(args: argparse.Namespace) -> FacilityEmulatorConfig:
    return FacilityEmulatorConfig(
        mediator_url=args.mediator_url,
        mediator_username=args.username,
        mediator_password=args.password,
        public_url=args.public_url,
        callback_token=args.token,
        signing_secrets=list(args.signing_secret),
        require_signature=args.require_signature,
        facility_code=args.facility_code,
        facility_name=args.facility_name,
        facility_identifier_system=args.facility_system,
        facility_base=args.facility_base,
        ltfu_base_url=args.ltfu_base_url,
        seed=args.seed,
        patients=args.patients,
        window_days=args.window_days,
        cht_url=args.cht_url,
        cht_username=args.cht_username,
        cht_password=args.cht_password,
        cht_places=list(args.cht_place),
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    config = config_from_args(args)
    if (args.register or args.send) and not config.mediator_url:
        raise SystemExit("--register/--send need --mediator-url")
    on_startup = startup_actions(args.register, args.send, bool(args.cht_url and args.cht_place))
    run(args.host, args.port, config, log_level=args.log_level,
        on_startup=on_startup if (args.register or args.send) else None)


if __name__ == "__main__":
    main()
