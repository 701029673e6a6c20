"""Logs: one line per record, as text or as a JSON object, carrying the request or the job it
belongs to, with every configured secret left out (docs/operations.md)."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import IO, Any

import msgspec

# What a log line belongs to: set by the HTTP middleware for a request, by the worker for a job.
_request_id: ContextVar[str | None] = ContextVar("parcours_request_id", default=None)
_job: ContextVar[tuple[int, str] | None] = ContextVar("parcours_job", default=None)

REDACTED = "[redacted]"
# A value in a URL's query string under a name that says it is secret (`?writeKey=`,
# `&token=`, `&userHash=`): the server logs a WebSocket's path with its query, and a key
# made with `parcours keys create` is not among the configured secrets.
_SECRET_IN_QUERY = re.compile(
    r"([?&][\w.-]*(?:key|token|hash|secret|password|signature|auth)[\w.-]*=)[^&\s\"'#]+",
    re.IGNORECASE,
)
# Ours, and the server's own lines (start, stop, errors); the libraries' only from warnings on.
_OURS = ("parcours", "uvicorn")
_encode = msgspec.json.Encoder().encode


def bind_request(request_id: str) -> Token[str | None]:
    return _request_id.set(request_id)


def unbind_request(token: Token[str | None]) -> None:
    _request_id.reset(token)


def current_request_id() -> str | None:
    """The id of the request being answered, if any (named in an error's answer)."""
    return _request_id.get()


def bind_job(job_id: int, kind: str) -> Token[tuple[int, str] | None]:
    return _job.set((job_id, kind))


def unbind_job(token: Token[tuple[int, str] | None]) -> None:
    _job.reset(token)


# Secrets learnt after the start (providers set up in the console: channels/stored.py),
# left out of every record as the configured ones are.
_LEARNT: set[str] = set()
_SHORTEST_LEARNT = 6


def redact_also(secrets: Iterable[str]) -> None:
    """Leave these secrets out of every log record from now on."""
    _LEARNT.update(s for s in secrets if len(s) >= _SHORTEST_LEARNT)


class _Redacting(logging.Formatter):
    """Base of both formats: the message and its traceback with every secret replaced."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        learnt = sorted(_LEARNT, key=len, reverse=True) if _LEARNT else []
        for secret in [*self._secrets, *learnt]:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "=" in text:
            text = _SECRET_IN_QUERY.sub(lambda found: found.group(1) + REDACTED, text)
        return text

    def parts(self, record: logging.LogRecord) -> dict[str, Any]:
        moment = time.gmtime(record.created)
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        request_id = _request_id.get()
        if request_id is not None:
            document["request_id"] = request_id
        job = _job.get()
        if job is not None:
            document["job_id"], document["job_kind"] = job
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.redact(self.formatException(record.exc_info))
        return document


class JsonFormatter(_Redacting):
    """`{"time", "level", "logger", "message", "request_id" | "job_id", "job_kind", ...}`."""

    def format(self, record: logging.LogRecord) -> str:
        return _encode(self.parts(record)).decode()


class TextFormatter(_Redacting):
    """`time level logger [request or job] message`, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = self.parts(record)
        where = ""
        if "request_id" in parts:
            where = f" [request {parts['request_id']}]"
        elif "job_id" in parts:
            where = f" [job {parts['job_id']} {parts['job_kind']}]"
        line = f"{parts['time']} {record.levelname:<7} {record.name}{where}: {parts['message']}"
        if "exception" in parts:
            line += "\n" + parts["exception"]
        return line


_installed: logging.Handler | None = None


def configure_logging(
    level: str, log_format: str, secrets: Iterable[str], stream: IO[str] | None = None
) -> logging.Handler:
    """Send every record to `stream` (standard error) in the chosen format: Parcours' and
    the server's at `level`, other libraries' from warnings on. Called again, it replaces
    its own handler and leaves any other alone."""
    global _installed
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    formatter = JsonFormatter(secrets) if log_format == "json" else TextFormatter(secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in _OURS:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        for own in list(logger.handlers):  # uvicorn's, if its own configuration ran first
            logger.removeHandler(own)
        logger.propagate = True
    _installed = handler
    return handler


def remove_logging(handler: logging.Handler) -> None:
    """Take the handler `configure_logging` installed off again (tests)."""
    global _installed
    logging.getLogger().removeHandler(handler)
    if _installed is handler:
        _installed = None


__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "bind_job",
    "bind_request",
    "configure_logging",
    "current_request_id",
    "remove_logging",
    "unbind_job",
    "unbind_request",
]
