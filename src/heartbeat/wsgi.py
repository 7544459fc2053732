"""The one place that builds the app from the environment: ``waitress-serve heartbeat.wsgi:app``."""

from __future__ import annotations

import falcon

from heartbeat.app import create_app
from heartbeat.config import Settings
from heartbeat.db.database import connect
from heartbeat.storage import open_storage

# How often each API process fails the jobs whose last lease ran out (a cheap read of claimed jobs).
REAP_LEASES_EVERY_SECONDS = 2.0


def app_from_settings(settings: Settings) -> falcon.App:
    """The served app: the configured database and storage, and the lease reaper running."""
    database = connect(data_dir=settings.data_dir, db_auth=settings.db_auth)
    return create_app(
        settings,
        database=database,
        storage=open_storage(settings),
        reap_leases_every_seconds=REAP_LEASES_EVERY_SECONDS,
    )


def __getattr__(name: str) -> falcon.App:
    # Built on first use, so that importing this module reads nothing.
    if name == "app":
        return app_from_settings(Settings.from_env())
    raise AttributeError(name)
