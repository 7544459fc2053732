"""``/v1/uploads``: direct uploads, for bytes that should not pass through the API on the way in."""

from __future__ import annotations

import falcon

from heartbeat.api import schemas
from heartbeat.api.components import UPLOADED, ref
from heartbeat.api.images import answer_ingested
from heartbeat.api.params import read_body, signed_url_base
from heartbeat.api.routing import Operation, Parts, Reply, Route, json_body
from heartbeat.auth.roles import Access
from heartbeat.config import Settings
from heartbeat.ingest.direct_uploads import DirectUploads
from heartbeat.metrics import Metrics


class UploadCollection:
    def __init__(self, uploads: DirectUploads, settings: Settings):
        self._uploads = uploads
        self._settings = settings

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media = read_body(req, schemas.UPLOAD, optional=True)
        upload, signed = self._uploads.start(
            filename=media.get("filename"), base_url=signed_url_base(req, self._settings.public_url)
        )
        resp.status = falcon.HTTP_201
        resp.media = {
            "upload_id": upload.id,
            "url": signed.url,
            "method": "PUT",
            "expires_at": signed.expires_at,
            "max_bytes": self._settings.max_upload_bytes,
        }


class UploadItem:
    def __init__(self, uploads: DirectUploads, metrics: Metrics):
        self._uploads = uploads
        self._metrics = metrics

    def on_post_complete(self, req: falcon.Request, resp: falcon.Response, upload_id: str) -> None:
        media = read_body(req, schemas.UPLOAD_COMPLETE, optional=True)
        result = self._uploads.complete(
            upload_id, origin=media.get("origin"), other_data=media.get("other_data"), priority=media.get("priority", 0)
        )
        answer_ingested(req, resp, result, self._metrics)


# --- its routes ----------------------------------------------------------------------------------


def upload_collection(parts: Parts) -> UploadCollection:
    return UploadCollection(parts.uploads, parts.settings)


def upload_item(parts: Parts) -> UploadItem:
    return UploadItem(parts.uploads, parts.metrics)


ROUTES: list[Route] = [
    Route(
        "/v1/uploads",
        upload_collection,
        {
            "POST": Operation(
                Access.UPLOAD,
                "start a direct upload: a presigned URL to PUT the bytes to, straight into the store",
                Reply(201, ref("Upload")),
                errors=(400, 503),
                body=json_body(schemas.UPLOAD, required=False),
            )
        },
    ),
    Route(
        "/v1/uploads/{upload_id}/complete",
        upload_item,
        {
            "POST": Operation(
                Access.UPLOAD,
                "check the uploaded bytes as an upload and register the image (refused bytes are deleted)",
                (Reply(201, UPLOADED), Reply(200, UPLOADED)),
                errors=(400, 404, 409, 413, 415, 503),
                body=json_body(schemas.UPLOAD_COMPLETE, required=False),
            )
        },
        suffix="complete",
    ),
]
