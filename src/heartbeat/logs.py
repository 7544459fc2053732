"""Log output: readable lines by default, one JSON object a line (``--log-format json``) for log shippers."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log record to standard error in ``log_format``.

    In JSON, the fields a record carries in ``extra`` (the access log's request_id, route, status,
    duration_ms) become keys of the object.

    No format here names a record's source line, thread or process, so a record is made without
    them: the logging HOWTO's "Optimization" section. The caller's frame was looked up for every
    access-log line (a walk up the stack), on the request's thread.
    """
    logging._srcfile = None  # the HOWTO's own switch: no caller lookup
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level"})
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
