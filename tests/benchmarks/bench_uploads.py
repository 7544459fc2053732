"""Uploads: 100 KB JPEGs over HTTP (multipart) against the same ingest done in this process.

Both sides use 8 threads in this process, distinct pictures (no upload is a duplicate), the same
database with the same registered software, and local storage. In-process is what the server does
for an upload minus HTTP: spool the bytes to a file, then ``Ingest.store`` (check with Pillow, hash,
thumbnail, move into storage, insert the row and its jobs), one pooled connection per upload as the
API's middleware takes one per request.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from pathlib import Path

import urllib3
from harness import Api, LoadResult, Server, run_load

from heartbeat.config import Settings
from heartbeat.db.database import connect
from heartbeat.ingest import Ingest
from heartbeat.queue import JobQueue
from heartbeat.storage import open_storage


def http_uploads(server: Server, images: list[bytes], *, threads: int) -> LoadResult:
    """Images per second through ``POST /v1/images``; every picture is uploaded once."""
    taken = itertools.count()
    lock = threading.Lock()

    def upload(api: Api) -> int | None:
        with lock:
            index = next(taken)
        if index >= len(images):
            return None
        body, content_type = urllib3.encode_multipart_formdata(
            {"file": (f"bench-{index}.jpg", images[index], "image/jpeg"), "origin": "bench"}
        )
        status, answer = api.request("POST", "/v1/images", body, content_type)
        if status != 201:
            raise RuntimeError(f"upload answered {status}: {answer}")
        return 1

    return run_load(threads, lambda: Api(server), upload, seconds=None, warmup_seconds=0, server=server)


def inprocess_uploads(server: Server, workdir: Path, images: list[bytes], *, threads: int) -> LoadResult:
    """Images per second through ``Ingest`` in this process, on the server's database and software."""
    settings = Settings(data_dir=workdir, db_auth=server.auth, storage=f"local:{workdir / 'images'}")
    database = connect(data_dir=workdir, db_auth=server.auth)
    ingest = Ingest(settings, open_storage(settings), database, JobQueue(database, time.time), clock=time.time)
    taken = itertools.count()
    lock = threading.Lock()

    def store(_state: None) -> int | None:
        with lock:
            index = next(taken)
        if index >= len(images):
            return None
        with database.connection(), ingest.receive(io.BytesIO(images[index])) as path:
            if not ingest.store(path, filename=f"bench-{index}.jpg", origin="bench", other_data=None).created:
                raise RuntimeError("an in-process upload was taken for a duplicate")
        return 1

    try:
        return run_load(threads, lambda: None, store, seconds=None, warmup_seconds=0)
    finally:
        database.close_all()
