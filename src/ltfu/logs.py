"""Structured JSON logs on stderr. Never log bodies, names, phone numbers or birth dates."""

from __future__ import annotations

import contextvars
import logging
import sys
import time

import orjson

request_ids: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("ltfu_request", default=None)


class RequestContextFilter(logging.Filter):
    """Adds the ``request_id``/``transaction_id`` of the request being handled to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (request_ids.get() or {}).items():
            setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime a second, not one a line (an access line per request)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        out = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for key in ("request_id", "transaction_id", "case_id", "outbox_id"):
            if key in fields:
                out[key] = fields[key]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure_logging(level: str = "INFO") -> None:
    # Our lines carry none of the caller's file and line, thread or process: don't collect them on every record
    # (the logging HOWTO's "Optimization"; findCaller walks the stack, once per access line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "aiosqlite", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
