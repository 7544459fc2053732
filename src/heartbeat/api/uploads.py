"""``/v1/uploads``: direct uploads, for bytes that should not pass through the API on the way in."""

from __future__ import annotations

import falcon

from heartbeat.api import schemas
from heartbeat.api.images import answer_ingested
from heartbeat.api.params import read_body, signed_url_base
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
