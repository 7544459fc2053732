"""Where image bytes live. Nothing outside this package knows which backend runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from heartbeat.config import Settings
from heartbeat.storage.base import ObjectInfo, SignedUrl, Storage


def open_storage(settings: Settings, clock: Callable[[], float] = time.time) -> Storage:
    """The backend ``settings.storage`` names: ``local:DIR`` (the default, under the data dir)."""
    from heartbeat.storage.local import LocalStorage, load_or_create_secret

    if settings.storage and not settings.storage.startswith("local:"):
        raise ValueError(f"unknown storage {settings.storage!r}; expected local:DIR")
    secret = settings.secret_key.encode() if settings.secret_key else None
    secret = secret or load_or_create_secret(settings.data_dir / "secret.key")
    return LocalStorage(settings.local_storage_dir, secret=secret, clock=clock)


__all__ = ["ObjectInfo", "SignedUrl", "Storage", "open_storage"]
