"""Results as data: a ``where`` query through HTTP over the same SQL run directly, on 1,000,000
images with 3,000,000 extra-table rows; and exports, their rate and the API's peak memory, at
10,000 and at 1,000,000 images."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import bulk
import requests
from bench_floor import FloorServer
from harness import MARIADB, Api, Figure, Server, drop_database, fresh_database, memory_kib, mysql, percentile, say

SOFTWARE = "faces"
QUERY = f"{SOFTWARE}.status = 'done' and {SOFTWARE}.info.faces = 0 and {SOFTWARE}.boxes.count(w >= 100) >= 2"
QUERIES = 60
# Requests sent before the timed ones: every server thread opens its MariaDB connection on its first
# request and keeps it (waitress hands requests to its 16 threads in turn), a cost of a thread's first
# request, not of a query.
WARMUP_QUERIES = 48


def build(name: str, workdir: Path, port: int, images: int, rows_per_image: int) -> Server:
    """A database with ``images`` images, all done by ``faces`` but the last 1,000, with
    ``rows_per_image`` rows each in its ``boxes`` table; and its server."""
    auth = dataclasses.replace(MARIADB, database=name)
    fresh_database(auth)
    server = Server(auth, workdir, port)
    api = Api(server)
    body = {"name": SOFTWARE, "tables": {"boxes": {"w": "int", "h": "int"}}}
    api.call("POST", "/v1/software", body, expect=201)
    api.close()
    started = time.monotonic()
    with mysql(auth) as connection:
        bulk.insert_images(connection, "q", 1, images)
        bulk.insert_jobs(connection, SOFTWARE, "q", 1, images, done_through=images - 1000)
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM software WHERE name = %s", (SOFTWARE,))
            (software_id,) = cursor.fetchone()
        if rows_per_image:
            bulk.insert_rows(connection, f"ext_{software_id}_boxes", "q", images * rows_per_image, rows_per_image)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE TABLE images, job_{SOFTWARE}, ext_{software_id}_boxes")
    say(
        f"results_setup_{images}",
        f"{images} images, {images * rows_per_image} rows in {time.monotonic() - started:.0f} s",
    )
    return server


def query_vs_sql(workdir: Path, ports: tuple[int, int], images: int) -> list[Figure]:
    """p95 of ``GET /v1/images?where=QUERY`` over p95 of the statement it runs, run straight on MariaDB;
    and the same listing from the floor of the stack (``floor_app.py`` on ``ports[1]``: the same three
    statements, the rows as JSON, no more), the required work of a listing over HTTP. The three in
    turns, once every server thread has its database connection."""
    name = "heartbeat_bench_query"
    server = build(name, workdir, ports[0], images, 3)
    auth = dataclasses.replace(MARIADB, database=name)
    timings: dict[str, list[float]] = {"http": [], "floor": [], "sql": []}
    try:
        session = requests.Session()
        statement = sql_of(server)
        statement_file = workdir / "query.json"
        statement_file.write_text(json.dumps({"sql": statement[0], "params": statement[1]}))
        with FloorServer(server, workdir / "floor", ports[1], query=statement_file) as floor:
            urls = {"http": f"{server.url}/v1/images", "floor": f"{floor.url}/v1/images"}
            for _ in range(WARMUP_QUERIES):
                for url in urls.values():
                    session.get(url, params={"where": QUERY}, timeout=120).raise_for_status()
            found = {}
            with mysql(auth) as connection, connection.cursor() as cursor:
                for _ in range(QUERIES):  # in turns: the same load on the machine for all three
                    for side, url in urls.items():
                        started = time.perf_counter()
                        answer = session.get(url, params={"where": QUERY}, timeout=120)
                        timings[side].append(time.perf_counter() - started)
                        answer.raise_for_status()
                        found[side] = len(answer.json()["images"])
                    started = time.perf_counter()
                    cursor.execute(*statement)
                    cursor.fetchall()
                    timings["sql"].append(time.perf_counter() - started)
    finally:
        server.stop()
        drop_database(auth)
    if found["http"] != found["floor"]:
        raise RuntimeError(f"the floor's page has {found['floor']} images, Heartbeat's {found['http']}")
    p95 = {side: percentile(values, 0.95) for side, values in timings.items()}
    say(
        "query_p95",
        f"{p95['http'] * 1000:.1f} ms through HTTP, {p95['floor'] * 1000:.1f} ms from the floor of the stack, "
        f"{p95['sql'] * 1000:.1f} ms as SQL ({found['http']} images a page)",
    )
    return [
        Figure("query_p95_vs_sql", p95["http"] / p95["sql"], "<= 1.5"),
        # The required work: the same statements and the rows as JSON over HTTP, nothing else.
        Figure("query_floor_p95_vs_sql", p95["floor"] / p95["sql"], ""),
        Figure("query_p95_vs_floor", p95["http"] / p95["floor"], ""),
    ]


def sql_of(server: Server) -> tuple[str, tuple[object, ...]]:
    """The statement the API runs for the first page of QUERY, made by the API's own code."""
    from heartbeat.catalog.registry import Registry
    from heartbeat.db.connect import connect
    from heartbeat.db.models import Image
    from heartbeat.queue import JobQueue

    database = connect(data_dir=server.log_path.parent / "sql", db_auth=server.auth)
    with database.connection():
        queue = JobQueue(database, time.time)
        registry = Registry(database, queue, time.time, default_lease_seconds=60, default_max_attempts=3)
        resolved = registry.where(QUERY)
        assert resolved is not None
        where = queue.reads.where(resolved)
        query = Image.select().where(where).order_by(Image.uploaded_date, Image.id).limit(101)
        sql, params = query.sql()
    database.close_all()
    return sql, tuple(params)


def export_memory(workdir: Path, ports: tuple[int, int], *, small: int, large: int) -> list[Figure]:
    """The API's peak RSS while exporting ``large`` images as jsonl over the same for ``small``, each
    on a fresh server; and the large export's rate."""
    peaks = []
    rate = 0.0
    for images, port in ((small, ports[0]), (large, ports[1])):
        name = f"heartbeat_bench_export_{images}"
        server = build(name, workdir / str(images), port, images, 1)
        try:
            started = time.monotonic()
            lines = 0
            with requests.get(
                f"{server.url}/v1/export", params={"format": "jsonl"}, stream=True, timeout=600
            ) as answer:
                answer.raise_for_status()
                for chunk in answer.iter_content(1 << 20):
                    lines += chunk.count(b"\n")
            seconds = time.monotonic() - started
            peaks.append(memory_kib(server.pid)["VmHWM"] / 1024)
            if lines != images:
                raise RuntimeError(f"the export gave {lines} lines for {images} images")
            rate = images / seconds
            say(
                f"export_{images}",
                f"{images} images as jsonl in {seconds:.1f} s ({rate:.0f} images/s), API peak RSS {peaks[-1]:.0f} MiB",
            )
        finally:
            server.stop()
            drop_database(dataclasses.replace(MARIADB, database=name))
    name = "export_rss_1m_vs_10k" if (small, large) == (10_000, 1_000_000) else f"export_rss_{large}_vs_{small}"
    return [Figure(name, peaks[1] / peaks[0], "<= 1.2"), Figure("export_images_per_second", rate, "")]
