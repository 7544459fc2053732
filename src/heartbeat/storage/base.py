"""The storage protocol every backend implements."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclasses.dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: float


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """One entry of a listing: enough to tell an orphan from an upload in flight."""

    key: str
    size: int
    modified_at: float
    etag: str = ""  # the store's ETag without quotes, where it gives one ("" for local files)


class Storage(Protocol):
    """Object storage for image bytes, handed to workers (and direct uploaders) by presigned URL.

    Every method raises :class:`heartbeat.errors.BackendUnavailable` when the store does not answer.
    """

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at ``path`` under ``key``, all or nothing. The file may be moved."""

    def presigned_get(self, key: str, *, expires_seconds: int, base_url: str) -> SignedUrl:
        """A URL that lets anyone holding it GET the bytes until it expires.

        ``base_url``: where the API serves this store's own signed URLs, as the caller reached it
        (``https://host/v1/blobs``: the key is appended); backends that sign their own URLs ignore it.
        """

    def presigned_put(self, key: str, *, expires_seconds: int, base_url: str) -> SignedUrl:
        """A URL that lets anyone holding it PUT the bytes of ``key`` until it expires."""

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and type of the object, or None when it does not exist."""

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """The object's bytes as a stream; :class:`heartbeat.errors.NotFound` when it does not exist."""

    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix``, in no promised order."""

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove these objects (missing ones are no error); raises
        :class:`heartbeat.errors.BackendUnavailable` when the store fails, after which any of them may
        remain."""

    def check(self) -> None:
        """Raise :class:`heartbeat.errors.BackendUnavailable` when the store does not answer."""

    def open_signed(self, key: str, expires: str, signature: str) -> tuple[BinaryIO, ObjectInfo]:
        """Open the bytes behind one of our own signed GET URLs (a backend that signs its own URLs
        raises :class:`heartbeat.errors.NotFound`)."""

    def authorize_put(self, key: str, expires: str, signature: str) -> None:
        """Allow a PUT to one of our own signed PUT URLs, or raise :class:`heartbeat.errors.Forbidden`
        (a backend that signs its own URLs raises :class:`heartbeat.errors.NotFound`)."""
