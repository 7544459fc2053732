"""A claim's latency with 10,000 and with 1,000,000 images in the tables, most of their jobs done.

Two databases, each with its own ``heartbeat serve``: one with 10,000 images, one with 1,000,000,
built with bulk inserts (``bulk.py``). Both have the same number of pending jobs, the latest uploads.
One client claims (``max=1``; the claim is timed) and submits (not timed), alternating between the two
servers block by block, so that whatever else the machine does at that moment falls on both alike.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import bulk
from harness import MARIADB, Api, Server, drop_database, fresh_database, mysql, percentile, register, say

from heartbeat.config import DbAuth

SOFTWARE = "latency"
PENDING_JOBS = 3_000
BLOCK_CLAIMS = 50


@dataclasses.dataclass
class Latencies:
    seconds: list[float] = dataclasses.field(default_factory=list)

    def p(self, fraction: float) -> float:
        return percentile(self.seconds, fraction)

    def describe(self) -> str:
        return f"p50 {self.p(0.5) * 1000:.2f} ms, p99 {self.p(0.99) * 1000:.2f} ms over {len(self.seconds)} claims"


def build(auth: DbAuth, workdir: Path, port: int, images: int) -> Server:
    """A fresh database with ``images`` images, all done but the last ``PENDING_JOBS``, and its server."""
    fresh_database(auth)
    server = Server(auth, workdir, port)
    register(server, SOFTWARE)  # no images yet: nothing to backfill
    started = time.monotonic()
    with mysql(auth) as connection:
        bulk.insert_images(connection, "i", 1, images)
        bulk.insert_jobs(connection, SOFTWARE, "i", 1, images, done_through=images - PENDING_JOBS)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE TABLE images, job_{SOFTWARE}")
    say(f"bulk_load_{images}_images", f"{time.monotonic() - started:.1f} s (images and their jobs, INSERT ... SELECT)")
    return server


def claim_block(api: Api, latencies: Latencies, claims: int) -> None:
    for _ in range(claims):
        started = time.perf_counter()
        jobs = api.call("POST", f"/v1/software/{SOFTWARE}/claim", {"max": 1})["jobs"]
        latencies.seconds.append(time.perf_counter() - started)
        if not jobs:
            raise RuntimeError("the latency benchmark ran out of pending jobs")
        job = jobs[0]
        api.call("PUT", f"/v1/software/{SOFTWARE}/jobs/{job['image_id']}/result", {"token": job["token"], "info": {}})


def claim_latencies(workdir: Path, port: int, *, small: int, large: int, claims: int) -> tuple[Latencies, Latencies]:
    """Claim latencies on the small and on the large database, measured in alternating blocks."""
    small_auth = dataclasses.replace(MARIADB, database=f"{MARIADB.database}_{small}")
    large_auth = dataclasses.replace(MARIADB, database=f"{MARIADB.database}_{large}")
    servers = [build(small_auth, workdir / "small", port, small), build(large_auth, workdir / "large", port + 1, large)]
    try:
        apis = [Api(server) for server in servers]
        for api in apis:  # warm-up: connections, caches, the pool
            claim_block(api, Latencies(), BLOCK_CLAIMS)
        measured = (Latencies(), Latencies())
        for _ in range(max(1, claims // BLOCK_CLAIMS)):
            for api, latencies in zip(apis, measured, strict=True):
                claim_block(api, latencies, BLOCK_CLAIMS)
        for api in apis:
            api.close()
    finally:
        for server, auth in zip(servers, (small_auth, large_auth), strict=True):
            server.stop()
            drop_database(auth)  # a million rows need not stay on a shared server
    return measured
