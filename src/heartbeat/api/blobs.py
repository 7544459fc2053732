"""``/v1/blobs/{key}``: the bytes behind the URLs the API signs itself (local storage)."""

from __future__ import annotations

import falcon

from heartbeat.storage import Storage


class SignedBlob:
    """Serves an object only to a request carrying a valid, unexpired signature."""

    def __init__(self, storage: Storage):
        self._storage = storage

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        stream, info = self._storage.open_signed(
            key, req.get_param("expires", default=""), req.get_param("signature", default="")
        )
        resp.content_type = info.content_type
        resp.set_stream(stream, info.size)
        resp.cache_control = ["private", "max-age=60"]
