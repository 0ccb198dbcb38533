"""securex's own log lines (the `securex` logger and its children): where they go, their
format, and the context they carry.

Each line is one JSON object (`logging.format = "json"`, the default) or a line of text
(`"text"`, for people reading a terminal), written to `<instance>/logs/securex.log` and
to stderr. A line carries the request id when it is logged while a request is served,
and the job's id and kind while a job runs (`context`, `bind`). What a line holds is
ids, route templates, counts and error types: never personal data, a document's text, a
secret, a client's address or a URL's path (paths carry link and deposit tokens).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from logging.handlers import WatchedFileHandler
from types import MappingProxyType
from typing import Any

from securex.errors import ConfigError

FORMATS = ("json", "text")
LOGGER = "securex"

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("securex_log_context", default=_EMPTY)

# What every LogRecord has; anything else on a record was given with `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add `fields` to every line logged in this thread until `unbind(token)`."""
    return _CONTEXT.set({**_CONTEXT.get(), **fields})


def unbind(token: Token[Mapping[str, Any]]) -> None:
    _CONTEXT.reset(token)


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """`fields` on every line logged in this thread while the block runs."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context, then the record's own `extra=` fields (which win)."""
    fields = dict(_CONTEXT.get())
    fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, pid, the
    context's and the record's fields, and `exc_type` and `traceback` for an exception."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        line.update(_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time pid LEVEL logger: message key=value …`, then the traceback if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = super().formatMessage(record)
        return f"{text} {extra}" if extra else text


def formatter(name: str) -> logging.Formatter:
    if name not in FORMATS:
        raise ConfigError(
            f"logging.format doit valoir {' ou '.join(FORMATS)}, pas {name!r} "
            "(SECUREX_LOGGING_FORMAT)."
        )
    return JsonFormatter() if name == "json" else TextFormatter()


def _installed(logger: logging.Logger) -> bool:
    return any(getattr(h, "securex_instance", False) for h in logger.handlers)


def install(settings: Any) -> list[logging.Handler]:
    """Send securex's lines, at level INFO and above, to `<instance>/logs/securex.log`
    (a `WatchedFileHandler`: logrotate may move the file) and to stderr (gunicorn and
    systemd collect it), in the configured format. Once per process; returns the
    handlers added (none when they already are)."""
    chosen = formatter(str(settings["logging.format"]))
    logger = logging.getLogger(LOGGER)
    if _installed(logger):
        return []
    folder = settings.instance / "logs"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    to_file = WatchedFileHandler(folder / "securex.log", encoding="utf-8")
    to_stderr = logging.StreamHandler()
    handlers: list[logging.Handler] = [to_file, to_stderr]
    for handler in handlers:
        handler.securex_instance = True  # type: ignore[attr-defined]
        handler.setFormatter(chosen)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handlers


@contextmanager
def installed(settings: Any) -> Iterator[None]:
    """`install` for the length of a command (`securex worker`), then removed, so that
    a command invoked inside another process (the tests) leaves its logging as it was."""
    logger = logging.getLogger(LOGGER)
    level = logger.level
    handlers = install(settings)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)
