"""Image bytes in an S3/MinIO bucket, handed out by URLs the store itself checks (AWS Signature V4).

Two clients when ``HEARTBEAT_S3_PUBLIC_ENDPOINT`` is set: one talks to the store by the name the
API reaches it by (``minio:9000`` inside docker-compose), the other only signs URLs for the name
workers reach it by (``localhost:9000``). A V4 signature covers the host, so a URL must be signed
for the host it will be fetched from. Both clients are told the region, so that presigning is pure
computation and never asks the store where the bucket lives.

A key is an object of the server's bucket, or ``s3://BUCKET/KEY``: an object of another bucket on the
same store, as ``heartbeat import`` registers them where they lie (see :func:`object_locator`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error

from heartbeat.config import SettingError, Settings
from heartbeat.errors import BackendUnavailable, NotFound
from heartbeat.storage.base import ObjectInfo, SignedUrl, StoredObject

MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
LOCATOR_SCHEME = "s3://"
DELETE_OBJECTS_LIMIT = 1000  # keys one DeleteObjects request may name


def object_locator(bucket: str, key: str) -> str:
    """The storage key of object ``key`` of ``bucket``: ``s3://BUCKET/KEY``, valid for any bucket."""
    return f"{LOCATOR_SCHEME}{bucket}/{key}"


def parse_endpoint(text: str, secure: bool | None) -> tuple[str, bool]:
    """``host:port`` (HTTPS unless ``secure`` is False) or ``http(s)://host:port`` -> (host:port, HTTPS?)."""
    if "://" not in text:
        if not text or "/" in text:
            raise SettingError(f"S3 endpoint {text!r}: expected host:port or http(s)://host:port")
        return text, True if secure is None else secure
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise SettingError(f"S3 endpoint {text!r}: expected host:port or http(s)://host:port")
    return parts.netloc, parts.scheme == "https"


def _http_client(max_connections: int) -> urllib3.PoolManager:
    """minio's own defaults, with timeouts short enough that a dead store turns into a 503 quickly."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=60),
        maxsize=max_connections,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def open_s3_storage(settings: Settings, bucket: str) -> S3Storage:
    """Clients for the configured endpoint (and public endpoint), and the bucket, made if missing."""
    missing = [
        option
        for option, value in (
            ("HEARTBEAT_S3_ENDPOINT (--s3-endpoint)", settings.s3_endpoint),
            ("HEARTBEAT_S3_ACCESS_KEY (--s3-access-key)", settings.s3_access_key),
            ("HEARTBEAT_S3_SECRET_KEY (--s3-secret-key)", settings.s3_secret_key),
        )
        if not value
    ]
    if missing:
        raise SettingError(f"storage s3://{bucket} needs {', '.join(missing)}")
    endpoint, secure = parse_endpoint(cast(str, settings.s3_endpoint), settings.s3_secure)
    credentials: dict[str, Any] = {
        "access_key": settings.s3_access_key,
        "secret_key": settings.s3_secret_key,
        "region": settings.s3_region,
    }
    client = Minio(endpoint, secure=secure, http_client=_http_client(settings.threads + 4), **credentials)
    signer = client
    if settings.s3_public_endpoint:
        public, public_secure = parse_endpoint(settings.s3_public_endpoint, secure)
        # Never used to connect: it only signs URLs for the public host.
        signer = Minio(public, secure=public_secure, **credentials)
    storage = S3Storage(client, bucket, signer=signer)
    storage.create_bucket()
    return storage


@contextlib.contextmanager
def _store_errors(doing: str) -> Iterator[None]:
    """Whatever goes wrong talking to the store becomes a 503 naming what was being done."""
    try:
        yield
    except S3Error as error:
        raise BackendUnavailable(f"object storage refused to {doing}: {error.code}") from error
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
        raise BackendUnavailable(f"object storage did not answer: {type(error).__name__}") from error


class _GuardedStream:
    """A response body whose read errors are the store's (503), not the reader's."""

    def __init__(self, response: Any):
        self._response = response

    def read(self, size: int = -1) -> bytes:
        with _store_errors("read an object"):
            return bytes(self._response.read(size))


def _is_missing(error: S3Error | InvalidResponseError) -> bool:
    """A missing object: its S3 error code, or a 404 whose error body the client could not read as
    S3's (rclone serve s3 sends it as text/xml, which the minio client does not parse)."""
    if isinstance(error, InvalidResponseError):
        return bool(error._code == 404)
    return error.code in MISSING_OBJECT_CODES


class S3Storage:
    """One bucket. Keys are the object names; the store checks its own presigned URLs."""

    def __init__(self, client: Minio, bucket: str, *, signer: Minio | None = None):
        self._client = client
        self._signer = signer or client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        """The server's own bucket."""
        return self._bucket

    def _locate(self, key: str) -> tuple[str, str]:
        """(bucket, object name) of a key: the server's bucket, or the one an ``s3://`` locator names."""
        if key.startswith(LOCATOR_SCHEME):
            bucket, _, name = key.removeprefix(LOCATOR_SCHEME).partition("/")
            return bucket, name
        return self._bucket, key

    def bucket_exists(self, bucket: str) -> bool:
        """Whether the store has ``bucket`` (and lets these credentials see it)."""
        with _store_errors(f"find bucket {bucket}"):
            return bool(self._client.bucket_exists(bucket))

    def create_bucket(self) -> None:
        """Make the bucket unless it exists; another API process starting at once may win the race."""
        with _store_errors(f"create bucket {self._bucket}"):
            if self._client.bucket_exists(self._bucket):
                return
            try:
                self._client.make_bucket(self._bucket)
            except S3Error as error:
                if error.code != "BucketAlreadyOwnedByYou":
                    raise

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        bucket, name = self._locate(key)
        with _store_errors("store an object"):
            self._client.fput_object(bucket, name, str(path), content_type=content_type)

    def _sign(self, method: str, key: str, expires_seconds: int) -> SignedUrl:
        # The store checks the URL against its own clock, so it is signed with the real time
        # (never an injected test clock), and its expiry is counted from that same time.
        signed_at = time.time()
        bucket, name = self._locate(key)
        url = self._signer.get_presigned_url(
            method,
            bucket,
            name,
            expires=datetime.timedelta(seconds=expires_seconds),
            request_date=datetime.datetime.fromtimestamp(int(signed_at), datetime.UTC),
        )
        return SignedUrl(url, int(signed_at) + expires_seconds)

    def presigned_get(self, key: str, *, expires_seconds: int, base_url: str) -> SignedUrl:
        return self._sign("GET", key, expires_seconds)

    def presigned_put(self, key: str, *, expires_seconds: int, base_url: str) -> SignedUrl:
        return self._sign("PUT", key, expires_seconds)

    def stat(self, key: str) -> ObjectInfo | None:
        with _store_errors("read an object's size"):
            try:
                found = self._client.stat_object(*self._locate(key))
            except S3Error as error:
                if _is_missing(error):
                    return None
                raise
        return ObjectInfo(found.size or 0, found.content_type or "application/octet-stream")

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        with _store_errors("read an object"):
            try:
                response = self._client.get_object(*self._locate(key))
            except (S3Error, InvalidResponseError) as error:
                if _is_missing(error):
                    raise NotFound(f"object {key} is missing from storage") from None
                raise
        try:
            yield cast(BinaryIO, _GuardedStream(response))
        finally:
            response.close()
            response.release_conn()

    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Keys as the prefix was given: bare in the server's bucket, ``s3://BUCKET/KEY`` for a locator prefix."""
        bucket, name_prefix = self._locate(prefix)
        named = object_locator(bucket, "") if prefix.startswith(LOCATOR_SCHEME) else ""
        with _store_errors("list objects"):
            for found in self._client.list_objects(bucket, prefix=name_prefix, recursive=True):
                modified = found.last_modified.timestamp() if found.last_modified else 0.0
                etag = (found.etag or "").strip('"')
                yield StoredObject(f"{named}{found.object_name}", found.size or 0, modified, etag)

    def delete(self, key: str) -> None:
        with _store_errors("delete an object"):
            self._client.remove_object(*self._locate(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        """One DeleteObjects request per 1000 keys of a bucket (the S3 API's limit)."""
        by_bucket: dict[str, list[str]] = {}
        for key in keys:
            bucket, name = self._locate(key)
            by_bucket.setdefault(bucket, []).append(name)
        for bucket, names in by_bucket.items():
            for start in range(0, len(names), DELETE_OBJECTS_LIMIT):
                chunk = [DeleteObject(name) for name in names[start : start + DELETE_OBJECTS_LIMIT]]
                with _store_errors("delete objects"):
                    failed = [
                        error
                        for error in self._client.remove_objects(bucket, chunk)
                        if error.code not in MISSING_OBJECT_CODES
                    ]
                if failed:
                    raise BackendUnavailable(f"object storage refused to delete an object: {failed[0].code}")

    def check(self) -> None:
        with _store_errors("find the bucket"):
            exists = self._client.bucket_exists(self._bucket)
        if not exists:
            raise BackendUnavailable(f"bucket {self._bucket} does not exist")

    def open_signed(self, key: str, expires: str, signature: str) -> tuple[BinaryIO, ObjectInfo]:
        raise NotFound("this server's images are fetched from the object store, not from it")

    def authorize_put(self, key: str, expires: str, signature: str) -> None:
        raise NotFound("this server's uploads go to the object store, not to it")
