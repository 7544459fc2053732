"""Request middleware: one database connection per request, back to the pool afterwards."""

from __future__ import annotations

from typing import Any

import falcon
import peewee


class DatabaseConnection:
    """Peewee's recipe: connect when a request starts, close (or return to the pool) when it ends."""

    def __init__(self, database: peewee.Database):
        self._database = database

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._database.connect(reuse_if_open=True)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        if not self._database.is_closed():
            self._database.close()
