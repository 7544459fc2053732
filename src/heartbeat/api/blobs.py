"""``/v1/blobs/{key}``: the URLs the API signs itself (local storage): GET the bytes, or PUT a direct upload's."""

from __future__ import annotations

from typing import BinaryIO, cast

import falcon

from heartbeat.api.components import query as parameter
from heartbeat.api.routing import Body, Operation, Parts, Reply, Route
from heartbeat.auth.roles import Access
from heartbeat.ingest.registration import Ingest
from heartbeat.storage import Storage

SIGNED_ROUTE = "/v1/blobs/"  # then the object's key, and the signature's query
UPLOADED_TYPE = "application/octet-stream"  # what the client claims is not trusted; completing the upload decides


SIGNED = (
    parameter("expires", {"type": "string"}, "from the signed URL"),
    parameter("signature", {"type": "string"}, "from the signed URL"),
)


class SignedBlob:
    """Serves or stores an object only for a request carrying a valid, unexpired signature."""

    uses_database = False  # storage alone: no connection is taken for a download (one per job a worker does)

    def __init__(self, storage: Storage, ingest: Ingest):
        self._storage = storage
        self._ingest = ingest

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        stream, info = self._storage.open_signed(
            key, req.get_param("expires", default=""), req.get_param("signature", default="")
        )
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


def signed_blob(parts: Parts) -> SignedBlob:
    return SignedBlob(parts.storage, parts.ingest)


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
