"""Operations routes: liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.http import JSONResponse


async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """200 when the database answers and the workers (if enabled) are alive; details per check."""
    state = request.app.state
    checks: dict[str, object] = {"database": "ok" if await state.db.ping() else "unreachable"}
    runtime = getattr(state, "runtime", None)
    if runtime is not None:
        checks.update(runtime.readiness())
    checks["cht"] = "configured" if state.settings.cht_url else "not configured (requests are queued)"
    ok = checks["database"] == "ok" and all(v != "down" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)


routes = [Route("/health", health, methods=["GET"]), Route("/ready", ready, methods=["GET"])]
