"""Structured logs: which request or socket a line belongs to, and its format.

Each HTTP request gets a request id (chatsite.requestlog) and each socket a
connection id (chat.observe), kept in context variables. Both follow the work
wherever it goes: asyncio tasks copy the context when they are created, and
asgiref's sync_to_async runs the thread's code in the caller's context, so a
service called by a consumer logs with its socket's id. ContextFilter copies
them onto every record; JsonFormatter (production) and PlainFormatter
(development) write them out. LOGGING in chatsite/settings.py wires them up.

A formatter writes the record's message, its context ids and only the extra
fields named in FIELDS: never whatever objects a library attached to a record
(Django attaches the request, whose repr holds the query string).
"""

import json
import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
connection_id: ContextVar[str | None] = ContextVar("connection_id", default=None)

CONTEXT = ("request_id", "connection_id")
# The extra fields our log lines carry (`logger.info(..., extra={...})`).
FIELDS = ("method", "path", "status", "duration_ms", "user_id", "close_code", "code")
# What a request id taken from a client or proxy may look like: enough for
# UUIDs and nginx's $request_id, nothing that could forge a log line.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_id() -> str:
    return secrets.token_hex(8)


def valid_request_id(value: str | None) -> bool:
    return value is not None and REQUEST_ID_PATTERN.fullmatch(value) is not None


class ContextFilter(logging.Filter):
    """Puts the current request and connection ids on every record (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.connection_id = connection_id.get()
        return True


def _fields(record: logging.LogRecord) -> dict:
    values = vars(record)
    return {name: values[name] for name in (*CONTEXT, *FIELDS) if values.get(name) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ids, FIELDS, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...`, for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - Formatter's name
        text = super().formatMessage(record)
        pairs = " ".join(f"{name}={value}" for name, value in _fields(record).items())
        return f"{text} {pairs}" if pairs else text
