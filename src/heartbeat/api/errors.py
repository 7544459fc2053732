"""The one place where errors become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import peewee

from heartbeat import errors, jsontext
from heartbeat.db.database import Database

log = logging.getLogger(__name__)

CONTENTION = "the database is busy with conflicting writes (nothing was changed): try again"

STATUS_BY_ERROR: dict[type[errors.HeartbeatError], int] = {
    errors.InvalidInput: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.TooLarge: 413,
    errors.UnsupportedImage: 415,
    errors.NotJson: 415,
    errors.Refused: 422,
    errors.BackendUnavailable: 503,
}


def status_of(error: errors.HeartbeatError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[kind]
    return 500


def _domain_error(req: falcon.Request, resp: falcon.Response, error: errors.HeartbeatError, params: Any) -> None:
    status = status_of(error)
    if status == 401:
        raise falcon.HTTPUnauthorized(description=error.description, challenges=["Bearer"])
    if isinstance(error, errors.BackendUnavailable):
        raise falcon.HTTPServiceUnavailable(description=error.description, retry_after=error.retry_after_seconds)
    raise falcon.HTTPError(falcon.code_to_http_status(status), description=error.description)


def _database_down(database: Database) -> Any:
    """503 for a database that cannot serve now (or a statement past its time limit); any other
    database error (a syntax error, an expression too complex) is a bug: 500, as ``_unexpected``."""

    def handle(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
        fault = database.fault(error)
        if fault == "timeout":  # a statement stopped at HEARTBEAT_QUERY_SECONDS: 503, Retry-After
            _domain_error(req, resp, errors.StatementTimeout(), params)  # (raises)
        if fault == "contention":  # other transactions kept winning, every run of it: nothing changed
            log.info("contention in %s %s: %s", req.method, req.uri_template, error)
            _domain_error(req, resp, errors.Busy(CONTENTION), params)  # (raises)
        if fault is None:  # the database answered, refusing the statement: a bug, not an outage
            _unexpected(req, resp, error, params)  # (raises)
        log.warning("database unavailable: %s: %s", type(error).__name__, error)
        database.close_for_good()  # the next request of this thread starts on a new connection
        raise falcon.HTTPServiceUnavailable(description="the database is unreachable", retry_after=5)

    return handle


def _unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
    log.exception("unexpected error in %s %s", req.method, req.uri_template or req.path)
    raise falcon.HTTPInternalServerError(description="an unexpected error; it was logged, and it is a bug")


def _serialize(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every error as ``{"title", "description"}``, Falcon's own (unknown route, wrong method) too."""
    body = error.to_dict()
    if "description" not in body:
        body["description"] = _default_description(req, error.status_code)
    resp.content_type = falcon.MEDIA_JSON
    resp.data = jsontext.dumps(body)  # a description may quote what the client sent


def _default_description(req: falcon.Request, status: int) -> str:
    if status == 404:
        return f"no such route: {req.path}"
    if status == 405:
        return f"{req.path} does not take {req.method}"
    return str(falcon.code_to_http_status(status)).partition(" ")[2]


def add_error_handlers(app: falcon.App[falcon.Request, falcon.Response], database: Database) -> None:
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(errors.HeartbeatError, _domain_error)
    app.add_error_handler(peewee.OperationalError, _database_down(database))
    app.add_error_handler(peewee.InterfaceError, _database_down(database))
    app.set_error_serializer(_serialize)
