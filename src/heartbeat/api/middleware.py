"""Request middleware: security headers; a database connection per server thread; the access log and latency."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from typing import Any

import falcon

from heartbeat.db.database import Database
from heartbeat.metrics import Metrics

access_log = logging.getLogger("heartbeat.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The methods the latency histogram names; any other (waitress passes on whatever token a client
# sends as its method) counts as "other", so that made-up methods add no label set each. Its route is
# Falcon's template, or "unmatched": the paths of the route table, never the path a client sent.
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# A page of this server runs only its own scripts and styles, talks only to its own origin, and may
# not be framed (a pause or requeue button cannot be clicked through another site's frame).
# Pictures come from wherever the store's presigned URLs point: S3 may live on any host.
PAGE_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' https: http:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


# On every answer: no content sniffing, and no Referer (signed URLs must not leak to whatever a page
# links to). waitress's own answers carry them too (``server/answers.py``).
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))


class SecurityHeaders:
    """``nosniff`` and ``no-referrer`` on every answer, errors and files included; on an HTML page,
    :data:`PAGE_POLICY` as its Content-Security-Policy unless the page set its own."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        for name, value in SECURITY_HEADERS:
            resp.set_header(name, value)
        if (resp.content_type or "").startswith("text/html") and not resp.get_header("Content-Security-Policy"):
            resp.set_header("Content-Security-Policy", PAGE_POLICY)


class DatabaseConnection:
    """One database connection per server thread, kept from request to request.

    Taking a connection from the pool and handing it back on every request cost more than most
    requests' own statements. A connection that sat idle for ``IDLE_SECONDS`` (the server may have
    dropped it) is replaced before use; one whose statement failed is dropped by the error handler.
    """

    IDLE_SECONDS = 30.0

    def __init__(self, database: Database):
        self._database = database
        self._last_used = threading.local()

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: Any) -> None:
        # The health check reports an unreachable database itself (with the storage's state beside it).
        if resource is None or not getattr(resource, "uses_database", True):
            return
        idle_seconds = time.monotonic() - getattr(self._last_used, "at", 0.0)
        if idle_seconds > self.IDLE_SECONDS and not self._database.is_closed():
            self._database.close_for_good()
        self._database.connect()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        self._last_used.at = time.monotonic()


class RequestLog:
    """An access-log line and a latency observation per request, under a request ID.

    The ID is the client's ``X-Request-ID`` when it sends a sane one, else a new one; it is sent
    back in the answer. The line holds the route template, never the query string (signed URLs carry
    their signature there) nor any header (tokens).
    """

    def __init__(self, metrics: Metrics):
        self._metrics = metrics
        # The histogram's child per (method, route, status): prometheus-client looks one up under a
        # lock on every ``labels`` call. Bounded: METRIC_METHODS, the route table, HTTP's statuses.
        self._latencies: dict[tuple[str, str, int], Any] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        given = req.get_header("X-Request-ID") or ""
        req.context.request_id = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        resp.set_header("X-Request-ID", req.context.request_id)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        seconds = time.perf_counter() - req.context.started
        route = req.uri_template or "unmatched"
        status = resp.status_code
        method = req.method if req.method in METRIC_METHODS else "other"
        latency = self._latencies.get((method, route, status))
        if latency is None:
            latency = self._latencies[method, route, status] = self._metrics.request_seconds.labels(
                method, route, str(status)
            )
        latency.observe(seconds)
        access_log.info(
            "%s %s %s %.1fms request_id=%s",
            req.method,
            route,
            status,
            seconds * 1000,
            req.context.get("request_id"),
            extra={
                "request_id": req.context.get("request_id"),
                "method": req.method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
