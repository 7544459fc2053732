"""The one place that builds the app from the environment for another WSGI server:
``waitress-serve heartbeat.wsgi:app`` (``heartbeat serve`` is the usual way, see ``server/``)."""

from __future__ import annotations

import functools

import falcon

from heartbeat.app import build_app
from heartbeat.config import Settings
from heartbeat.db.connect import connect
from heartbeat.private_files import use_private_umask
from heartbeat.server import REAP_LEASES_EVERY_SECONDS
from heartbeat.service import Service
from heartbeat.storage import open_storage


@functools.cache
def app_from_settings(settings: Settings) -> falcon.App[falcon.Request, falcon.Response]:
    """The served app (made once): the configured database and storage, and the lease reaper running."""
    use_private_umask()  # what it writes in the data dir is its user's alone
    database = connect(
        data_dir=settings.data_dir,
        db_auth=settings.db_auth,
        threads=settings.threads,
        query_seconds=settings.query_seconds,
    )
    service = Service(settings, database, storage=open_storage(settings))
    with database.connection():
        service.upgrade()
    served = build_app(service)
    served.lease_reaper(REAP_LEASES_EVERY_SECONDS).start()
    return served.app


def __getattr__(name: str) -> falcon.App[falcon.Request, falcon.Response]:
    # Built on first use, so that importing this module reads nothing.
    if name == "app":
        return app_from_settings(Settings.from_env())
    raise AttributeError(name)
