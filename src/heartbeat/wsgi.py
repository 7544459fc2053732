"""The one place that builds the app from the environment: ``waitress-serve heartbeat.wsgi:app``."""

from __future__ import annotations

from heartbeat.app import create_app
from heartbeat.config import Settings
from heartbeat.db.database import connect
from heartbeat.storage import open_storage


def app_from_settings(settings: Settings):  # type: ignore[no-untyped-def]
    database = connect(data_dir=settings.data_dir, db_auth=settings.db_auth)
    return create_app(settings, database=database, storage=open_storage(settings))


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # Built on first use, so that importing this module reads nothing.
    if name == "app":
        return app_from_settings(Settings.from_env())
    raise AttributeError(name)
