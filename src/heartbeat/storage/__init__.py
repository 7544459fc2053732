"""Where image bytes live. Nothing outside this package knows which backend runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from heartbeat.config import SettingError, Settings
from heartbeat.storage.base import ObjectInfo, SignedUrl, Storage, StoredObject


def open_storage(settings: Settings, clock: Callable[[], float] = time.time) -> Storage:
    """The backend ``settings.storage`` names: ``local:DIR`` (the default, under the data dir) or ``s3://BUCKET``.

    Raises SettingError for a storage setting it cannot use, and BackendUnavailable when an S3 store
    does not answer (its bucket is made here when missing).
    """
    if settings.storage.startswith("s3://"):
        from heartbeat.storage.s3 import open_s3_storage

        bucket = settings.storage.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise SettingError(f"storage {settings.storage!r}: expected s3://BUCKET")
        return open_s3_storage(settings, bucket)

    from heartbeat.storage.local import LocalStorage, load_or_create_secret

    if settings.storage and not settings.storage.startswith("local:"):
        raise SettingError(f"unknown storage {settings.storage!r}; expected local:DIR or s3://BUCKET")
    if settings.storage == "local:":
        raise SettingError("storage 'local:' names no folder; expected local:DIR")
    secret = settings.secret_key.encode() if settings.secret_key else None
    secret = secret or load_or_create_secret(settings.data_dir / "secret.key")
    return LocalStorage(settings.local_storage_dir, secret=secret, clock=clock)


__all__ = ["ObjectInfo", "SignedUrl", "Storage", "StoredObject", "open_storage"]
