"""``heartbeat import`` from an S3 server (``rclone serve s3`` over a temporary folder, started here).

- ``import_rate_vs_plain_read``: objects per second that an import registers (each object read once,
  hashed, decoded whole, its thumbnail stored, its row and jobs committed in MariaDB) over the rate of
  a plain list + GET + sha256 of the same objects with the ``minio`` client, with the same number of
  threads (``WORKERS``). ~100 KB 640x480 JPEGs (harness.jpeg_variants). The plain side runs before
  and after the import; its rate is the mean of the two.
- ``import_second_run_vs_first``: the time of a second run over 10,000 small pictures of which 1 %
  are new, over the time of the first run that imported the other 99 %.

On this machine (2 cores, everything local) both sides are bound by CPU, not by the network: per
object the plain side costs about 1 ms of CPU (client and rclone together), the import about 6.5 ms:
the decode of a 640x480 JPEG (1.5 ms at half scale) and its thumbnail (0.5 ms) are the check itself,
and rclone spends about 1.7 ms on each thumbnail PUT, four times what a GET costs it. Against a store
across a network, where a read waits tens of milliseconds, the two rates come closer.

The objects of the first set are written as files into the served folder before rclone starts
(rclone serves a folder's files as a bucket's objects); the new 1 % go in through S3 PUTs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import PIL.Image
from harness import Figure, drop_database, fresh_database, jpeg_variants, say
from minio import Minio

from heartbeat.config import DbAuth, Settings
from heartbeat.db.database import connect
from heartbeat.imports import open_importer, open_source
from heartbeat.storage import open_storage

IMPORT_AUTH = DbAuth(host="127.0.0.1", port=3306, user="root", password="", database="heartbeat_bench_import")
ACCESS_KEY, SECRET_KEY = "heartbeat-bench", "heartbeat-bench-secret"
WORKERS = 4


@contextlib.contextmanager
def rclone_s3(folder: Path, port: int) -> Iterator[Minio]:
    """``rclone serve s3`` over ``folder`` on ``port``; a minio client of it."""
    rclone = Path(sys.executable).with_name("rclone")
    process = subprocess.Popen(
        [
            str(rclone),
            "serve",
            "s3",
            "--auth-key",
            f"{ACCESS_KEY},{SECRET_KEY}",
            "--addr",
            f"127.0.0.1:{port}",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RCLONE_CONFIG": os.devnull},
    )
    client = Minio(f"127.0.0.1:{port}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region="us-east-1")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def plain_read(client: Minio, bucket: str, prefix: str) -> tuple[int, float]:
    """List, GET and sha256 every object of the prefix with ``WORKERS`` threads: (objects, seconds)."""

    def read(name: str) -> str:
        response = client.get_object(bucket, name)
        try:
            return hashlib.sha256(response.read()).hexdigest()
        finally:
            response.close()
            response.release_conn()

    started = time.perf_counter()
    names = [found.object_name for found in client.list_objects(bucket, prefix=prefix, recursive=True)]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        digests = list(pool.map(read, names))
    return len(digests), time.perf_counter() - started


def timed_import(settings: Settings, source: str) -> tuple[int, int, float]:
    """One run of ``heartbeat import SOURCE`` in this process: (objects listed, new images, seconds)."""
    database = connect(data_dir=settings.data_dir, db_auth=settings.db_auth, threads=WORKERS)
    try:
        storage = open_storage(settings)
        started = time.perf_counter()
        importer = open_importer(
            settings, database, storage, open_source(source, storage), origin=None, workers=WORKERS
        )
        report = importer.run()
        return report.listed, report.new, time.perf_counter() - started
    finally:
        database.close_all()


def small_pngs(count: int, start: int = 0) -> Iterator[bytes]:
    for index in range(start, start + count):
        out = io.BytesIO()
        PIL.Image.new("RGB", (32, 32), (index % 256, index // 256 % 256, index // 65536 % 256)).save(out, "PNG")
        yield out.getvalue()


def import_figures(
    workdir: Path, port: int, *, rate_objects: int = 2000, incremental_objects: int = 10_000
) -> list[Figure]:
    served = workdir / "served"
    rate_folder = served / "photos" / "rate"
    rate_folder.mkdir(parents=True)
    for index, data in enumerate(jpeg_variants(rate_objects)):
        (rate_folder / f"{index:05d}.jpg").write_bytes(data)
    first = incremental_objects - incremental_objects // 100
    many_folder = served / "photos" / "many"
    many_folder.mkdir(parents=True)
    for index, data in enumerate(small_pngs(first)):
        (many_folder / f"{index:06d}.png").write_bytes(data)
    (served / "heartbeat").mkdir()
    settings = Settings(
        data_dir=workdir / "data",
        db_auth=IMPORT_AUTH,
        storage="s3://heartbeat",
        s3_endpoint=f"http://127.0.0.1:{port}",
        s3_access_key=ACCESS_KEY,
        s3_secret_key=SECRET_KEY,
    )
    fresh_database(IMPORT_AUTH)
    try:
        with rclone_s3(served, port) as client:
            plain_read(client, "photos", "rate/")  # warm: the files in the page cache for both sides
            count, before = plain_read(client, "photos", "rate/")
            listed, new, imported = timed_import(settings, "s3://photos/rate/")
            _, after = plain_read(client, "photos", "rate/")
            assert listed == new == count == rate_objects, (listed, new, count)
            plain_rate = count / ((before + after) / 2)
            import_rate = new / imported
            say(
                "import_rate",
                f"{import_rate:.0f} objects/s imported, {plain_rate:.0f} objects/s listed + read + hashed "
                f"({rate_objects} JPEGs of ~100 KB, {WORKERS} threads a side; plain {before:.2f} s and {after:.2f} s)",
            )
            listed, new, first_seconds = timed_import(settings, "s3://photos/many/")
            assert listed == new == first, (listed, new)
            for index, data in enumerate(small_pngs(incremental_objects - first, start=first)):
                client.put_object("photos", f"many/new-{index:06d}.png", io.BytesIO(data), len(data))
            listed, new, second_seconds = timed_import(settings, "s3://photos/many/")
            assert (listed, new) == (incremental_objects, incremental_objects - first), (listed, new)
            say(
                "import_incremental",
                f"first run {first_seconds:.1f} s ({first} objects), second run {second_seconds:.2f} s "
                f"({incremental_objects} listed, {new} new)",
            )
    finally:
        drop_database(IMPORT_AUTH)
    return [
        Figure("import_rate_vs_plain_read", import_rate / plain_rate, ">= 0.5"),
        Figure("import_second_run_vs_first", second_seconds / first_seconds, "<= 0.1"),
    ]
