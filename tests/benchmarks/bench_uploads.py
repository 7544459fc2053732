"""Uploads: 100 KB JPEGs over HTTP (multipart) against the same ingest done in this process, and that
ingest's CPU against one full Pillow decode of the same pictures.

Both upload sides use 8 threads in this process, distinct pictures (no upload is a duplicate), the same
database with the same registered software, and local storage. In-process is what the server does
for an upload minus HTTP: spool the bytes to a file, then ``Ingest.store`` (check with Pillow, hash,
thumbnail, move into storage, insert the row and its jobs), one pooled connection per upload as the
API's middleware takes one per request.

:func:`ingest_and_decode_cpu` sets the in-process ingest's CPU per picture beside the CPU of
decoding the file it stored whole at full size (``PIL.Image.open(path).load()``): what one look at
every pixel costs, the least an ingest that checks every pixel could spend. Both on one thread (CPU time of
this process, so neither counts MariaDB's side), in alternating turns. :func:`profile_ingest` runs
the in-process ingest once more, on one thread under py-spy, and names where its time goes.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import statistics
import string
import threading
import time
from pathlib import Path

import PIL.Image
import profiling
import urllib3
from harness import Api, LoadResult, Server, jpeg_variants, run_load

from heartbeat.config import Settings
from heartbeat.db.connect import connect
from heartbeat.db.database import Database
from heartbeat.ingest.registration import Ingest
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


def _ingest(server: Server, workdir: Path) -> tuple[Ingest, Database]:
    """An :class:`Ingest` in this process on the server's database, storing under ``workdir``."""
    settings = Settings(data_dir=workdir, db_auth=server.auth, storage=f"local:{workdir / 'images'}")
    database = connect(data_dir=workdir, db_auth=server.auth)
    return Ingest(settings, open_storage(settings), database, JobQueue(database, time.time), clock=time.time), database


def inprocess_uploads(server: Server, workdir: Path, images: list[bytes], *, threads: int) -> LoadResult:
    """Images per second through ``Ingest`` in this process, on the server's database and software."""
    ingest, database = _ingest(server, workdir)
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


@dataclasses.dataclass(frozen=True)
class IngestCpu:
    """Turns of the in-process ingest and of a full decode of what it stored: CPU seconds per picture."""

    turns: list[tuple[float, float]]  # (ingest, decode) of each turn

    @property
    def ingest_seconds(self) -> float:
        return statistics.median(ingest for ingest, _ in self.turns)

    @property
    def decode_seconds(self) -> float:
        return statistics.median(decode for _, decode in self.turns)

    @property
    def ratio(self) -> float:
        """The median of the turns' ratios: a turn that other work on the machine slowed down (which
        weighs more on the ingest's file and socket work than on a decode) counts for no more than one."""
        return statistics.median(ingest / decode for ingest, decode in self.turns)


def ingest_and_decode_cpu(server: Server, workdir: Path, *, turns: int, per_turn: int) -> IngestCpu:
    """CPU seconds per picture of the in-process ingest (spool, then ``Ingest.store``) and of one full
    Pillow decode of the files it stored (open, then load at full size), each on one thread, in
    ``turns`` alternating turns of ``per_turn`` fresh pictures, so that whatever else the machine does
    meanwhile weighs on both alike."""
    ingest, database = _ingest(server, workdir)
    make_prefix_folders(workdir / "images")
    pictures = jpeg_variants(turns * per_turn)
    measured = []
    try:
        with database.connection():
            for turn in range(turns):
                batch = [next(pictures) for _ in range(per_turn)]
                stored = []
                started = time.process_time()
                for index, data in enumerate(batch):
                    with ingest.receive(io.BytesIO(data)) as path:
                        image = ingest.store(path, filename=f"cpu-{turn}-{index}.jpg", origin="bench", other_data=None)
                    stored.append(workdir / "images" / image.image.storage_key)
                ingest_seconds = time.process_time() - started
                started = time.process_time()
                for path in stored:
                    with PIL.Image.open(path) as picture:
                        picture.load()
                measured.append((ingest_seconds / per_turn, (time.process_time() - started) / per_turn))
    finally:
        database.close_all()
    return IngestCpu(measured)


def make_prefix_folders(root: Path) -> None:
    """The folders a local store keeps its images and thumbnails in (``images/<2 characters>/``,
    ``thumbnails/<2 characters>/``), all of them, as a store has them once it has held some thousands
    of images. A fresh store makes two folders for almost every image it takes, each mkdir costing the
    file system more than the image's other file work: a cost of a store's first images, not of an upload."""
    alphabet = string.ascii_letters + string.digits + "-_"  # the characters of an image ID
    for kind in ("images", "thumbnails"):
        for first, second in itertools.product(alphabet, repeat=2):
            (root / kind / f"{first}{second}").mkdir(parents=True, exist_ok=True)


def profile_ingest(server: Server, workdir: Path, seconds: float) -> list[str]:
    """py-spy on this process while one thread ingests fresh pictures for ``seconds`` (into a store with
    its folders, as :func:`ingest_and_decode_cpu`), summarized as :func:`profiling.summarize`
    does (every busy thread sampled: Pillow decodes without the GIL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ingest, database = _ingest(server, workdir)
    make_prefix_folders(workdir / "images")
    raw = workdir / "profile-ingest.txt"
    recorder = profiling.start(os.getpid(), seconds, raw, gil=False)
    pictures = jpeg_variants(1_000_000)
    try:
        with database.connection():
            index = 0
            while recorder.poll() is None:
                with ingest.receive(io.BytesIO(next(pictures))) as path:
                    ingest.store(path, filename=f"profiled-{index}.jpg", origin="bench", other_data=None)
                index += 1
    finally:
        database.close_all()
    _, errors = recorder.communicate()
    if recorder.returncode != 0:
        return [f"py-spy failed: {errors.decode(errors='replace').strip()}"]
    return [f"{index} images in {seconds:.0f} s on one thread", *profiling.summarize(raw, top=8)]
