"""The HTTP side of an accepted request alone: the ASGI app driven in-process as ``bench/profile_request.py``
does, with the unit of work and the services behind the two accept routes replaced by canned answers, so
what is measured is the pipeline (request id, access line, metrics, authentication, the policy's area check,
body deadline), routing, body reading, JSON parsing, validation and rendering — not the store.

    .venv/bin/python bench/http_side.py [--route mediator|fhir|health] [-n 5000] [--envelope] [--profile --top 40]

``--envelope``: the requests carry ``X-OpenHIM-TransactionID`` (as through OpenHIM core): the response is
enveloped and the store write reported as an orchestration. The event loop is uvloop, as under ``ltfu
serve`` (``--asyncio`` for the standard one). Compare figures of one minute: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import profile_request as pr  # noqa: E402 - the in-process harness this bench shares

SUBSCRIPTION = {"resourceType": "Subscription", "id": "s1", "status": "active", "reason": "follow-up",
                "criteria": "Encounter?identifier=x", "channel": {"type": "rest-hook", "endpoint": "http://x/cb"}}


def _stored(resource: dict[str, Any]) -> Any:
    meta = {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000Z"}
    return SimpleNamespace(resource={**resource, "id": "a1", "meta": meta}, etag='W/"1"',
                           last_updated=meta["lastUpdated"], version_id=1)


def stub_store() -> None:
    """The accept routes' unit of work and services answer at once (validation stays where it is)."""
    from ltfu.api import fhir_routes, mediator_routes
    from ltfu.fhir.validation import validate
    from ltfu.services import poc
    from ltfu.services import resources as ops

    @contextlib.asynccontextmanager
    async def no_uow(_request: Any) -> Any:
        yield SimpleNamespace(actor=None)

    async def request_follow_up(_uow: Any, resource: dict[str, Any]) -> Any:
        request = SimpleNamespace(created=True, stored=_stored(resource))
        return SimpleNamespace(request=request, subscription=SimpleNamespace(resource=SUBSCRIPTION))

    async def create(_uow: Any, body: Any, *, res_type: str | None = None, **_: Any) -> Any:
        return SimpleNamespace(stored=_stored(validate(body, res_type)), created=True)  # the service validates

    mediator_routes._uow = no_uow  # type: ignore[assignment]
    fhir_routes._uow = no_uow  # type: ignore[assignment]
    poc.request_follow_up = request_follow_up  # type: ignore[assignment]
    ops.create = create  # type: ignore[assignment]


async def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="ltfu-http-side-")
    os.environ.update({"LTFU_ADMIN_PASSWORD": pr.PASSWORD, "LTFU_DATA_DIR": tmp, "LTFU_WORKERS": "false",
                       "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"})
    from ltfu.api.app import create_app
    from ltfu.gc_tuning import tune_gc
    from ltfu.logs import configure_logging
    from ltfu.settings import Settings

    configure_logging("INFO")  # as `ltfu serve`: the access line is formatted and written, here to /dev/null
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run
    asgi = create_app(Settings())
    app = pr.App(asgi)
    async with asgi.router.lifespan_context(asgi):
        org_id = await pr.facility(app)
        stub_store()
        extra = [(b"x-openhim-transactionid", b"tx-bench"), (b"x-openhim-clientid", b"emr")] if args.envelope else []
        inner = asgi

        async def with_headers(scope: Any, receive: Any, send: Any) -> None:
            scope["headers"] = [*scope["headers"], *extra]
            await inner(scope, receive, send)

        app.app = with_headers
        counter = iter(range(10**9))

        async def batch(n: int) -> None:
            sem = asyncio.Semaphore(args.conc)

            async def one() -> None:
                async with sem:
                    if args.route == "health":
                        status, out = await app.call("GET", "/health", auth=False)
                        assert status == 200, (status, out)
                        return
                    path, body = pr.body(args.route, next(counter), org_id)
                    status, out = await app.call("POST", path, body)
                    if args.envelope:
                        status = out["response"]["status"]
                    assert status == 201, (status, out)

            await asyncio.gather(*(one() for _ in range(n)))

        await batch(200)  # warm-up
        tune_gc(Settings())  # as `ltfu serve` does before it serves
        prof = cProfile.Profile(time.process_time) if args.profile else None
        cpu0 = time.process_time()
        if prof:
            prof.enable()
        await batch(args.n)
        if prof:
            prof.disable()
        cpu = time.process_time() - cpu0
    print(f"route={args.route} envelope={args.envelope} loop={'asyncio' if args.asyncio else 'uvloop'} n={args.n} "
          f"conc={args.conc} profiled={bool(prof)} http_side_cpu_us_req={cpu * 1e6 / args.n:.1f}")
    if prof:
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", choices=["mediator", "fhir", "health"], default="mediator")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--conc", type=int, default=16)
    parser.add_argument("--envelope", action="store_true", help="as through OpenHIM core (enveloped response)")
    parser.add_argument("--asyncio", action="store_true", help="the standard event loop instead of uvloop")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured requests")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="tottime")
    args = parser.parse_args()
    if not args.asyncio:
        import uvloop

        uvloop.install()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
