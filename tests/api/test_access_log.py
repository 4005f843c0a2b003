"""One structured access line per request, with the request id and no query string or body."""

from __future__ import annotations

import logging

import orjson
import pytest

from ltfu.logs import JsonFormatter, RequestContextFilter
from tests.conftest import Api


@pytest.fixture
def captured() -> list[str]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger("ltfu.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_access_line(server: Api, captured: list[str]) -> None:
    r = server.get("/fhir/Patient", params={"name": "Wanjiru"}, headers={"X-Request-ID": "abc-123",
                                                                         "X-OpenHIM-TransactionID": "tx9"})
    assert r.headers["x-request-id"] == "abc-123"
    fresh = server.get("/fhir/Patient/unknown")
    assert len(fresh.headers["x-request-id"]) == 32
    records = [orjson.loads(line) for line in captured]
    first = next(r for r in records if r.get("request_id") == "abc-123")
    assert first["msg"].startswith("GET /fhir/{type} 200 ")
    assert first["transaction_id"] == "tx9"
    assert not any("Wanjiru" in line for line in captured)
    assert any(r["msg"].startswith("GET /fhir/{type}/{id} 404") for r in records)
