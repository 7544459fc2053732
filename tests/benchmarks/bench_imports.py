"""``heartbeat import`` from an S3 server (``rclone serve s3`` over a temporary folder, started here).

- ``import_rate_vs_plain_read``: objects per second that an import registers (each object read once,
  hashed, decoded whole, its thumbnail stored, its row and jobs committed in MariaDB) over the rate of
  a plain list + GET + sha256 of the same objects with the ``minio`` client, with the same number of
  threads (``WORKERS``). ~100 KB 640x480 JPEGs (harness.jpeg_variants). The plain side runs before
  and after the import; its rate is the mean of the two.
- ``import_second_run_vs_first``: the time of a second run over 10,000 small pictures of which 1 %
  are new, over the time of the first run that imported the other 99 %.

On this machine (2 cores, everything local) both sides are bound by CPU, not by the network, so the
rate lines give each side's CPU per object, split between this process, rclone and MariaDB: the ratio
of the rates is about the inverse ratio of those sums. The import's extra is what it must do: the
decode of a 640x480 JPEG (about 1 ms at half scale), the thumbnail (0.5 ms) and its PUT (about
0.7 ms here and 0.8 ms in rclone), where the plain read costs about 1.1 ms all told. Against a store
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
from harness import Figure, cpu_seconds, drop_database, fresh_database, jpeg_variants, mariadb_pid, say
from minio import Minio

from heartbeat.config import DbAuth, Settings
from heartbeat.db.connect import connect
from heartbeat.ingest.decode import read_picture
from heartbeat.ingest.thumbnails import THUMBNAIL_TYPE, write_thumbnail
from heartbeat.service import open_importer
from heartbeat.storage import open_storage
from heartbeat.storage.sources import open_source

IMPORT_AUTH = DbAuth(host="127.0.0.1", port=3306, user="root", password="", database="heartbeat_bench_import")
ACCESS_KEY, SECRET_KEY = "heartbeat-bench", "heartbeat-bench-secret"
WORKERS = 4
REQUIRED_SAMPLE = 300  # pictures whose decode, thumbnail and PUT are measured alone


@contextlib.contextmanager
def rclone_s3(folder: Path, port: int) -> Iterator[tuple[Minio, int]]:
    """``rclone serve s3`` over ``folder`` on ``port``: a minio client of it, and its process id."""
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
        yield client, process.pid
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


class CpuMeter:
    """CPU seconds spent, from its start, by this process, the S3 server and MariaDB (when local)."""

    def __init__(self, s3_server: int):
        self._pids = {"S3 server": s3_server, "MariaDB": mariadb_pid()}
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        now = {"client": time.process_time()}
        now.update({name: cpu_seconds(pid) for name, pid in self._pids.items() if pid is not None})
        return now

    def per_object(self, objects: int) -> dict[str, float]:
        """Milliseconds of CPU an object, from the start until now, by process."""
        return {name: (seconds - self._start[name]) * 1000 / objects for name, seconds in self._now().items()}


def describe_cpu(spent: dict[str, float]) -> str:
    parts = ", ".join(f"{ms:.2f} {name}" for name, ms in spent.items())
    return f"CPU {sum(spent.values()):.2f} ms an object ({parts})"


def required_work(client: Minio, rclone_pid: int, pictures: list[Path], scratch: Path) -> dict[str, float]:
    """CPU an object (ms, by process) of what an import does beyond a plain read, on one thread: the
    decode (:func:`heartbeat.ingest.decode.read_picture`), the thumbnail and its PUT, as the import does them."""
    meter = CpuMeter(rclone_pid)
    for index, path in enumerate(pictures):
        with path.open("rb") as file:
            picture = read_picture(file, max_pixels=10**9)
        write_thumbnail(picture.decoded, picture.orientation, scratch)
        client.fput_object("heartbeat", f"required/{index}.jpg", str(scratch), content_type=THUMBNAIL_TYPE)
    return meter.per_object(len(pictures))


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
        with rclone_s3(served, port) as (client, rclone_pid):
            plain_read(client, "photos", "rate/")  # warm: the files in the page cache for both sides
            plain_cpu = CpuMeter(rclone_pid)
            count, before = plain_read(client, "photos", "rate/")
            plain_cost = plain_cpu.per_object(count)
            import_cpu = CpuMeter(rclone_pid)
            listed, new, imported = timed_import(settings, "s3://photos/rate/")
            import_cost = import_cpu.per_object(new)
            _, after = plain_read(client, "photos", "rate/")
            assert listed == new == count == rate_objects, (listed, new, count)
            plain_rate = count / ((before + after) / 2)
            import_rate = new / imported
            say(
                "import_plain_read",
                f"{plain_rate:.0f} objects/s ({before:.2f} s, {after:.2f} s), {describe_cpu(plain_cost)}",
            )
            say(
                "import_rate",
                f"{import_rate:.0f} objects/s ({rate_objects} JPEGs of ~100 KB, {WORKERS} threads a side), "
                f"{describe_cpu(import_cost)}",
            )
            sample = sorted(rate_folder.iterdir())[:REQUIRED_SAMPLE]
            required = required_work(client, rclone_pid, sample, workdir / "thumbnail.jpg")
            plain_total, required_total = sum(plain_cost.values()), sum(required.values())
            say(
                "import_required_work",
                f"decode, thumbnail and its PUT alone: {describe_cpu(required)}; where both sides are bound by "
                f"CPU, as here, that holds the ratio near {plain_total:.2f} / ({plain_total:.2f} + "
                f"{required_total:.2f}) = {plain_total / (plain_total + required_total):.2f} at best",
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
