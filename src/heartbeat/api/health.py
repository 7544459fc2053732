"""``/v1/health``: 200 when the database and the object storage answer, else 503 with what failed."""

from __future__ import annotations

import falcon
import peewee

from heartbeat.db.database import Database
from heartbeat.errors import HeartbeatError
from heartbeat.storage import Storage


class Health:
    uses_database = False  # the middleware does not connect first: an outage is reported here

    def __init__(self, database: Database, storage: Storage):
        self._database = database
        self._storage = storage

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = {"database": "ok", "storage": "ok"}
        try:
            self._database.execute("SELECT 1").fetchone()
        except peewee.PeeweeException as error:
            checks["database"] = f"unreachable: {type(error).__name__}"
        try:
            self._storage.check()
        except HeartbeatError as error:
            checks["storage"] = f"unreachable: {error.description}"
        healthy = all(value == "ok" for value in checks.values())
        resp.media = {"status": "ok" if healthy else "unavailable", "checks": checks}
        resp.status = falcon.HTTP_200 if healthy else falcon.HTTP_503
