"""Counts that do not grow with the tables: ``GET /v1/software`` and ``GET /metrics`` (both read every
software's job counts) with 1,000,000 images and 5 software over the same with 10,000, and what the
maintained counters cost a claim+submit cycle (a server with them over one without, on one table)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import bench_claims
import bulk
import requests
from harness import MARIADB, Figure, Server, drop_database, fresh_database, mysql, percentile, register, say

SOFTWARE = [f"counted_{number}" for number in range(5)]
BLOCK_READS = 10
WITHOUT_COUNTERS = {"PYTHONPATH": str(Path(__file__).parent / "without_counters")}


def build(auth_name: str, workdir: Path, port: int, images: int) -> Server:
    """A fresh database with ``images`` images, a server on it, and 5 software registered through the
    API (each backfills a job per image, its counts kept as it goes)."""
    auth = dataclasses.replace(MARIADB, database=auth_name)
    fresh_database(auth)
    started = time.monotonic()
    server = Server(auth, workdir, port)  # it makes the tables
    with mysql(auth) as connection:
        bulk.insert_images(connection, "c", 1, images)
    for name in SOFTWARE:
        register(server, name)
    with mysql(auth) as connection, connection.cursor() as cursor:
        cursor.execute(f"ANALYZE TABLE images, {', '.join(f'job_{name}' for name in SOFTWARE)}")
    say(
        f"counts_setup_{images}",
        f"{images} images, {len(SOFTWARE)} software registered in {time.monotonic() - started:.0f} s",
    )
    return server


def read_seconds(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    answer = session.get(url, timeout=600)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    return elapsed


def reads_side_by_side(workdir: Path, ports: tuple[int, int], *, small: int, large: int, reads: int) -> list[Figure]:
    """p50 of each read on the small and the large database, in alternating blocks."""
    names = (f"heartbeat_bench_counts_{small}", f"heartbeat_bench_counts_{large}")
    servers = [build(names[0], workdir / "small", ports[0], small), build(names[1], workdir / "large", ports[1], large)]
    figures = []
    try:
        sessions = [requests.Session() for _ in servers]
        for path, figure in (("/v1/software", "software_list"), ("/metrics", "metrics_scrape")):
            timings: tuple[list[float], list[float]] = ([], [])
            for session, server in zip(sessions, servers, strict=True):
                read_seconds(session, server.url + path)  # warm
            for _ in range(max(1, reads // BLOCK_READS)):
                for session, server, seconds in zip(sessions, servers, timings, strict=True):
                    seconds.extend(read_seconds(session, server.url + path) for _ in range(BLOCK_READS))
            p50s = [percentile(seconds, 0.5) for seconds in timings]
            say(f"{figure}_p50", f"{p50s[0] * 1000:.1f} ms at {small} images, {p50s[1] * 1000:.1f} ms at {large}")
            name = f"{figure}_1m_vs_10k" if (small, large) == (10_000, 1_000_000) else f"{figure}_{large}_vs_{small}"
            figures.append(Figure(name, p50s[1] / p50s[0], "<= 2"))
    finally:
        for server, name in zip(servers, names, strict=True):
            server.stop()
            drop_database(dataclasses.replace(MARIADB, database=name))
    return figures


def counters_cost(workdir: Path, ports: tuple[int, int], *, images: int, clients: int, seconds: float) -> Figure:
    """Claim+submit cycles per second through a server that keeps the counts and through one that
    does not (the same code, its counter updates made no-ops), on one table, in alternating rounds."""
    auth = dataclasses.replace(MARIADB, database="heartbeat_bench_counters")
    fresh_database(auth)
    servers = [
        Server(auth, workdir / "with", ports[0]),
        Server(auth, workdir / "without", ports[1], env=WITHOUT_COUNTERS),
    ]
    with mysql(auth) as connection:
        bulk.insert_images(connection, "k", 1, images)
    rates: tuple[list[float], list[float]] = ([], [])
    try:
        register(servers[0], "cycled")
        for _round in range(3):
            for server, rate in zip(servers, rates, strict=True):
                load = bench_claims.http_cycles(server, "cycled", threads=clients, seconds=seconds / 3)
                rate.append(load.per_second)
    finally:
        for server in servers:
            server.stop()
        drop_database(auth)
    with_counters, without = (sum(rate) / len(rate) for rate in rates)
    say("claim_http_counters", f"{with_counters:.0f} cycles/s with the counters, {without:.0f} without")
    return Figure("claim_rate_with_vs_without_counters", with_counters / without, ">= 0.9")
