"""``/v1/blobs/{key}``: the URLs the API signs itself (local storage): GET the bytes, or PUT a direct upload's."""

from __future__ import annotations

import re
from typing import BinaryIO, cast

import falcon

from heartbeat.api.components import query as parameter
from heartbeat.api.routing import Body, Operation, Parts, Reply, Route
from heartbeat.auth.roles import Access
from heartbeat.db.database import Database
from heartbeat.ingest.registration import Ingest
from heartbeat.privacy import actions
from heartbeat.privacy.audit import Audit
from heartbeat.storage import Storage

SIGNED_ROUTE = "/v1/blobs/"  # then the object's key, and the signature's query
PICTURE_KEY = re.compile(r"(?:images|thumbnails)/[^/]{1,2}/([A-Za-z0-9_~-][A-Za-z0-9._~-]{0,31}?)\.[A-Za-z0-9]{1,8}")
UPLOADED_TYPE = "application/octet-stream"  # what the client claims is not trusted; completing the upload decides


SIGNED = (
    parameter("expires", {"type": "string"}, "from the signed URL"),
    parameter("signature", {"type": "string"}, "from the signed URL"),
)


class SignedBlob:
    """Serves or stores an object only for a request carrying a valid, unexpired signature."""

    uses_database = False  # the middleware takes no connection: a PUT needs none, a GET one for its audit entry

    def __init__(self, storage: Storage, ingest: Ingest, database: Database, audit: Audit):
        self._storage = storage
        self._ingest = ingest
        self._database = database
        self._audit = audit

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        stream, info = self._storage.open_signed(
            key, req.get_param("expires", default=""), req.get_param("signature", default="")
        )
        if req.method != "HEAD":  # bytes of a picture served: recorded (a signed URL has no token) first
            try:
                with self._database.connection():
                    self._audit.record(actions.BLOB_READ, None, image_ids_in(key))
            except BaseException:
                stream.close()
                raise
        resp.content_type = info.content_type
        resp.set_stream(stream, info.size)
        resp.cache_control = ["private", "max-age=60"]

    def on_put(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        # The signature is checked before a byte of the body is read.
        self._storage.authorize_put(key, req.get_param("expires", default=""), req.get_param("signature", default=""))
        with self._ingest.receive(cast(BinaryIO, req.bounded_stream)) as path:
            self._storage.put_file(key, path, UPLOADED_TYPE)
        resp.status = falcon.HTTP_204


# --- its routes ----------------------------------------------------------------------------------


def image_ids_in(key: str) -> list[str]:
    """The image whose bytes or thumbnail a key of ours holds (``images/ab/<id>.jpg``,
    ``thumbnails/ab/<id>.jpg``), else none."""
    match = PICTURE_KEY.fullmatch(key)
    return [match.group(1)] if match else []


def signed_blob(parts: Parts) -> SignedBlob:
    return SignedBlob(parts.storage, parts.ingest, parts.database, parts.audit)


ROUTES: list[Route] = [
    Route(
        SIGNED_ROUTE + "{key:path}",
        signed_blob,
        {
            "GET": Operation(
                Access.PUBLIC,
                "the bytes behind a URL this server signed (local storage)",
                Reply(200),
                errors=(403, 404),
                parameters=SIGNED,
            ),
            "PUT": Operation(
                Access.PUBLIC,
                "the bytes of a direct upload, to a PUT URL this server signed (local storage)",
                Reply(204),
                errors=(403, 404, 413),
                body=Body({"application/octet-stream": {}}),
                parameters=SIGNED,
            ),
        },
    ),
]
