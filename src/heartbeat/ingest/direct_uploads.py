"""Direct uploads: the client PUTs the bytes straight to the store, then asks for them to be registered.

``start`` records the upload and presigns a PUT URL for ``uploads/<id>``; ``complete`` reads the object
back through :class:`heartbeat.ingest.registration.Ingest`, so it is judged exactly as a normal upload (size, type,
pixels, sha256 dedupe). Whatever the verdict, the object under ``uploads/`` is removed: either its
bytes now live under ``images/``, or they were refused. Only an unreachable store keeps it, so that
the client can try again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from heartbeat.config import Settings
from heartbeat.db.models import Upload
from heartbeat.errors import BackendUnavailable, Conflict, HeartbeatError, NotFound, TooLarge
from heartbeat.ingest.registration import Ingest, Ingested, check_metadata
from heartbeat.storage import SignedUrl, Storage

# How long after its URL expired an upload that was never completed is left alone by `heartbeat check`.
STALE_UPLOAD_GRACE_SECONDS = 3600


def new_upload_id() -> str:
    """22 URL-safe random characters: the upload's only secret besides the signed URL."""
    return secrets.token_urlsafe(16)


class DirectUploads:
    def __init__(self, settings: Settings, storage: Storage, ingest: Ingest, *, clock: Callable[[], float]):
        self._settings = settings
        self._storage = storage
        self._ingest = ingest
        self._clock = clock

    def start(self, *, filename: str | None, base_url: str) -> tuple[Upload, SignedUrl]:
        """A new upload and the presigned URL to PUT its bytes to."""
        lifetime = self._settings.signed_url_seconds
        now = self._clock()
        upload = Upload.create(id=new_upload_id(), filename=filename, created_at=now, expires_at=now + lifetime)
        return upload, self._storage.presigned_put(upload.storage_key, expires_seconds=lifetime, base_url=base_url)

    def complete(
        self, upload_id: str, *, origin: str | None, other_data: dict[str, Any] | None, priority: int = 0
    ) -> Ingested:
        """Check the uploaded object as an upload and register it (or find its duplicate)."""
        check_metadata(origin, other_data, priority)
        upload = Upload.get_or_none(Upload.id == upload_id)
        if upload is None:
            raise NotFound(f"no upload {upload_id!r} (unknown, or completed already)")
        info = self._storage.stat(upload.storage_key)
        if info is None:
            raise Conflict("nothing has been uploaded yet: PUT the bytes to the upload's URL first")
        try:
            limit = self._settings.max_upload_bytes
            if info.size > limit:
                raise TooLarge(f"the upload is larger than {limit} bytes")
            with self._storage.open(upload.storage_key) as stream, self._ingest.receive(stream) as path:
                result = self._ingest.store(
                    path, filename=upload.filename, origin=origin, other_data=other_data, priority=priority
                )
        except HeartbeatError as error:
            if not isinstance(error, BackendUnavailable):  # refused: the same 4xx, and nothing left behind
                discard_upload(self._storage, upload)
            raise
        discard_upload(self._storage, upload)
        return result


def discard_upload(storage: Storage, upload: Upload) -> None:
    """An upload's object and its row, gone."""
    storage.delete(upload.storage_key)
    Upload.delete().where(Upload.id == upload.id).execute()
