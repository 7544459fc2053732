"""The one place where errors become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import peewee

from heartbeat import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.HeartbeatError], int] = {
    errors.InvalidInput: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.UnsupportedImage: 415,
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
    raise falcon.HTTPError(falcon.code_to_http_status(status), description=error.description)


def _database_down(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
    log.warning("database unavailable: %s: %s", type(error).__name__, error)
    raise falcon.HTTPServiceUnavailable(description="the database is unreachable", retry_after=5)


def add_error_handlers(app: falcon.App) -> None:
    app.add_error_handler(errors.HeartbeatError, _domain_error)
    app.add_error_handler(peewee.OperationalError, _database_down)
    app.add_error_handler(peewee.InterfaceError, _database_down)
