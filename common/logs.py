"""Logging set up from LOG_LEVEL and LOG_FORMAT.

Messages are the runbook's own sentences ("Starting SUBSCRIBE for view: …",
"Synced N documents, M errors") in both formats, so the runbook's greps work:
``text`` prints ``[LEVEL] message``; ``json`` prints one object per line with
``time``, ``level``, ``logger``, ``message`` and any ``extra`` fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "LogGate", "TextFormatter", "configure_logging"]


class LogGate:
    """Lets a message through at most once per ``interval`` seconds per cause.

    A condition that lasts (rotated credentials, a missing alias) would otherwise
    log one line per retry per partition; operators get one line a minute that
    names the cause, and a line when it clears. Pure: the caller passes the clock.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def due(self, cause: str, now: float) -> bool:
        """True if ``cause`` was not let through within the last ``interval`` seconds."""
        last = self._last.get(cause)
        if last is not None and now - last < self.interval:
            return False
        self._last[cause] = now
        return True

    def clear(self, cause: str) -> bool:
        """Forget ``cause`` (it went away); True if it had been let through before."""
        return self._last.pop(cause, None) is not None


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"[{record.levelname}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Send all logs to stderr at ``level`` in ``fmt`` (``json`` or ``text``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries log every request at INFO; the service's own lines are what operators read.
    for noisy in ("opensearch", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
