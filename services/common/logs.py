"""One log format for every service: JSON lines on stderr, with the trace and span ids.

Nothing here may log a secret: upstream keys and client tokens never reach
a log call in the first place (only key ids, masks and token ids do). As a
second line of defence every line is redacted before it is written
(``masking.redact``): a string shaped like a key of either kind (auth ``AQ.``
or standard ``AIza``) or like a client token leaves as its mask, wherever it
came from (a message, a structured field, a traceback quoting a library's
error).
"""

from __future__ import annotations

import logging
import os
import sys

import orjson

from .masking import redact_log_line
from .telemetry import ids_of_current_span


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):  # structured extras (``extra={"fields": {...}}``); never the base keys
            entry.update({name: value for name, value in fields.items() if name not in entry})
        trace_id, span_id = ids_of_current_span()
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return redact_log_line(orjson.dumps(entry).decode())


def configure_logging(service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
