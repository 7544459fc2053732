"""``make bench``: every benchmark in one run on MariaDB, each printing ``name: value`` lines, then a summary.

The figures are measured side by side in this one run on this machine: each ratio divides two rates
(or latencies) taken minutes apart at most, against the same MariaDB, so they say more than either
number alone. Databases: ``heartbeat_bench``, ``heartbeat_bench_<images>``, ``heartbeat_bench_drain``,
``heartbeat_bench_events*``, ``heartbeat_bench_flow``, ``heartbeat_bench_privacy`` and, on the Galera test cluster,
``heartbeat_bench_galera`` (dropped and made anew);
the drain's Celery side uses Redis databases 14 and 15 at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_claims
import bench_counts
import bench_drain
import bench_events
import bench_fleet
import bench_floor
import bench_flow
import bench_galera
import bench_imports
import bench_latency
import bench_memory
import bench_privacy
import bench_results
import bench_uploads
import profiling
from bulk import insert_images, store_images
from harness import (
    MARIADB,
    Figure,
    Server,
    describe_load,
    drop_database,
    fresh_database,
    jpegs,
    mariadb_version,
    mysql,
    say,
)
from harness import register as register_software

CLIENTS = 16  # concurrent workers of the claim benchmarks
UPLOAD_CLIENTS = 8
UPLOAD_TURNS = 5  # HTTP and in-process uploads alternate in this many turns
PROFILE_INGEST_SECONDS = 5  # the in-process ingest on one thread under py-spy
CPU_TURNS, CPU_TURN_IMAGES = 15, 40  # the ingest's CPU beside a decode's: turns, pictures a turn
CLAIM_IMAGES = 100_000  # pending for each claim benchmark's software (each has its own job table)
CLAIM_SOFTWARE = ("naive", "by_sql", "by_http", "by_batch", "mixed", "profiled")
BENCHMARKS = [
    "uploads",
    "claims",
    "memory",
    "latency",
    "counts",
    "results",
    "fleet",
    "drain",
    "imports",
    "events",
    "flow",
    "privacy",
    "galera",
]
FLEET_DATABASE = dataclasses.replace(MARIADB, database="heartbeat_bench_fleet")
PROCESSES_IMAGES = 100_000
DRAIN_AUTH = dataclasses.replace(MARIADB, database="heartbeat_bench_drain")


# The floor of the stack's claim+submit cycles per second, once the claims benchmark measured it:
# the drain compares its batch-1 goal with it.
FLOOR_CYCLES: dict[str, float] = {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine() -> None:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    say("machine", f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, MariaDB {mariadb_version()}")


def uploads(server: Server, workdir: Path, count: int) -> list[Figure]:
    pictures = iter(jpegs(2 * count))
    per_turn = count // UPLOAD_TURNS
    ratios = []
    for turn in range(UPLOAD_TURNS):  # side by side: whatever else the machine does weighs on both alike
        batch = list(itertools.islice(pictures, per_turn))
        over_http = bench_uploads.http_uploads(server, batch, threads=UPLOAD_CLIENTS)
        say(f"upload_http turn {turn + 1}", describe_load(over_http, "images"))
        inprocess = bench_uploads.inprocess_uploads(
            server, workdir, list(itertools.islice(pictures, per_turn)), threads=UPLOAD_CLIENTS
        )
        say(f"upload_inprocess turn {turn + 1}", describe_load(inprocess, "images"))
        ratios.append(over_http.per_second / inprocess.per_second)
    cpu = bench_uploads.ingest_and_decode_cpu(server, workdir / "cpu", turns=CPU_TURNS, per_turn=CPU_TURN_IMAGES)
    say(
        "ingest_cpu",
        f"{cpu.ingest_seconds * 1e3:.2f} ms per image in process, a full Pillow decode of the file it stored "
        f"{cpu.decode_seconds * 1e3:.2f} ms (one thread; medians of {CPU_TURNS} turns of {CPU_TURN_IMAGES} each)",
    )
    profiled = bench_uploads.profile_ingest(server, workdir / "profiled", PROFILE_INGEST_SECONDS)
    for line in profiled:
        print(f"profile_ingest: {line}", flush=True)
    return [
        Figure("upload_http_vs_inprocess", statistics.median(ratios), ">= 0.6"),  # median of the turns' ratios
        Figure("ingest_cpu_vs_decode", cpu.ratio, "<= 2.5"),
    ]


def claims(server: Server, seconds: float, profile_seconds: float, workdir: Path, measure: bool) -> list[Figure]:
    started = time.monotonic()
    with mysql(MARIADB) as connection:
        insert_images(connection, "c", 1, CLAIM_IMAGES)
    for name in CLAIM_SOFTWARE:
        register_software(server, name)  # the API's own backfill: a pending job per image
    say("claim_setup", f"{CLAIM_IMAGES} images, {len(CLAIM_SOFTWARE)} software in {time.monotonic() - started:.1f} s")
    if not measure:
        return []

    naive = bench_claims.naive_2019(MARIADB, "naive", threads=CLIENTS, seconds=min(seconds, 5))
    say(
        "naive_2019_claim",
        f"{naive.result.per_second:.0f} cycles/s; {naive.handed_out_twice} of {naive.images} images handed out "
        f"twice or more ({naive.handed_out - naive.images} extra hand-outs)",
    )
    by_sql = bench_claims.sql_cycles(MARIADB, "by_sql", threads=CLIENTS, seconds=seconds)
    say("claim_sql", describe_load(by_sql, "cycles"))
    by_http = bench_claims.http_cycles(server, "by_http", threads=CLIENTS, seconds=seconds)
    say("claim_http", describe_load(by_http, "cycles"))
    batch = bench_claims.http_cycles(server, "by_batch", threads=CLIENTS, seconds=seconds, max_jobs=50)
    say("claim_http_batch50", describe_load(batch, "images"))
    pipeline_seconds = bench_claims.pipeline_check_cpu_seconds(server, "by_http", workdir)
    api_seconds_per_cycle = by_http.server_cpu_seconds / max(by_http.items, 1)
    say(
        "pipeline_check_no_deps",
        f"{pipeline_seconds * 1e6:.0f} us of CPU per submit, of {api_seconds_per_cycle * 1e6:.0f} us API CPU per cycle",
    )
    floor, FLOOR_CYCLES["per_second"] = bench_floor.claim_http_vs_floor(
        server, "by_http", workdir, free_port(), threads=CLIENTS, seconds=max(3.0, seconds / 2)
    )
    if profile_seconds:
        profile(server, profile_seconds, workdir)
    return [
        Figure("claim_http_vs_sql", by_http.per_second / by_sql.per_second, ">= 0.8"),
        floor,
        Figure("batch_speedup", batch.per_second / by_http.per_second, ">= 10"),
        # Issue 8's bound: pipelines may slow a software without dependencies by at most 20%.
        Figure("pipeline_share_no_deps", pipeline_seconds / api_seconds_per_cycle, "<= 0.2"),
    ]


def profile(server: Server, seconds: float, workdir: Path) -> None:
    """The claim_http load again (not measured) with py-spy on the API: once on the GIL (CPU), once on
    every busy thread (wall)."""
    for mode, gil in (("cpu", True), ("wall", False)):
        raw = workdir / f"profile-{mode}.txt"
        recorder = profiling.start(server.pid, seconds, raw, gil=gil)
        load = bench_claims.http_cycles(server, "profiled", threads=CLIENTS, seconds=seconds, warmup_seconds=0)
        _, errors = recorder.communicate(timeout=seconds + 60)
        say(f"profile_{mode}_load", describe_load(load, "cycles") + " (under py-spy)")
        if recorder.returncode != 0:
            say(f"profile_{mode}", f"py-spy failed: {errors.decode(errors='replace').strip()}")
            continue
        for line in profiling.summarize(raw):
            print(f"profile_{mode}: {line}", flush=True)
        if gil:  # where each 100 us of a cycle's API CPU goes (docs/performance.md)
            per_cycle = load.server_cpu_seconds / max(load.items, 1) * 1e6
            for line in profiling.cycle_parts(raw, per_cycle):
                print(f"profile_cycle: {line}", flush=True)


def memory(workdir: Path, requests: int) -> Figure:
    with Server(MARIADB, workdir, free_port()) as server:
        warmup = requests // 10
        outcome = bench_memory.mixed_load(server, "mixed", requests=requests, warmup_requests=warmup)
    say(
        "api_rss_mb",
        f"first fifth {outcome.first_fifth_mib:.1f}, last fifth {outcome.last_fifth_mib:.1f}, "
        f"peak {outcome.peak_mib:.1f} (VmHWM) over {outcome.requests} requests in {outcome.load.seconds:.0f} s",
    )
    return Figure("api_rss_last_over_first_fifth", outcome.growth, "<= 1.1")


def latency(workdir: Path, large: int, claims: int) -> Figure:
    small_latencies, large_latencies = bench_latency.claim_latencies(
        workdir, free_port(), small=10_000, large=large, claims=claims
    )
    say("claim_latency_10k", small_latencies.describe())
    say(f"claim_latency_{large // 1000}k", large_latencies.describe())
    name = "claim_p99_1m_vs_10k" if large == 1_000_000 else f"claim_p99_{large}_vs_10k"
    return Figure(name, large_latencies.p(0.99) / small_latencies.p(0.99), "<= 1.5")


def counts(workdir: Path, large: int, reads: int, seconds: float) -> list[Figure]:
    """Reads of every software's counts at 10,000 and at ``large`` images; what keeping them costs a claim."""
    ports = (free_port(), free_port())
    figures = bench_counts.reads_side_by_side(workdir / "reads", ports, small=10_000, large=large, reads=reads)
    figures.append(
        bench_counts.counters_cost(workdir / "cost", ports, images=CLAIM_IMAGES, clients=CLIENTS, seconds=seconds)
    )
    return figures


def fleet(workdir: Path, uploads: int, seconds: float) -> list[Figure]:
    fresh_database(FLEET_DATABASE)
    try:
        figures = bench_fleet.waiting_fleet(FLEET_DATABASE, workdir / "waiting", free_port(), jpegs(uploads), 10)
        figures.append(
            bench_fleet.processes_claim_rate(
                FLEET_DATABASE, workdir / "processes", (free_port(), free_port()), PROCESSES_IMAGES, seconds
            )
        )
    finally:
        drop_database(FLEET_DATABASE)
    return figures


def drain(workdir: Path, jobs: int, workers: int, rounds: int) -> list[Figure]:
    """The same no-op jobs drained by Heartbeat's worker (batch 1, batch 50) and by Celery on Redis."""
    per_round = jobs // rounds
    fresh_database(DRAIN_AUTH)
    with Server(DRAIN_AUTH, workdir / "api", free_port()) as server:
        with mysql(DRAIN_AUTH) as connection:
            seconds = store_images(connection, workdir / "api" / "images", "d", per_round)
        say(
            "drain_setup",
            f"{per_round} images of about 100 KB stored in {seconds:.1f} s; {rounds} rounds of {per_round} jobs "
            f"a side, {workers} handlers at once a side",
        )
        problem = bench_drain.redis_problem()
        if problem:
            say("drain_celery", f"skipped: {problem}")
        sides: list[bench_drain.Side] = []
        try:
            for name, batch in (("drain_batch1", 1), ("drain_batch50", 50)):
                options = {"jobs": per_round, "workers": workers, "batch": batch}
                sides.append(bench_drain.HeartbeatSide(server, workdir / name, name, **options))
            sides.append(bench_drain.FetchSide(server, jobs=per_round, workers=workers))
            if not problem:
                sides.append(bench_drain.CelerySide(workdir / "celery", jobs=per_round, workers=workers))
            drains = bench_drain.drain_side_by_side(sides, jobs=per_round, rounds=rounds)
        finally:
            for side in sides:
                side.close()
    drop_database(DRAIN_AUTH)
    say("drain_sdk_batch1", drains["drain_batch1"].describe("images"))
    say("drain_sdk_batch50", drains["drain_batch50"].describe("images"))
    fetch_only = drains["drain_fetch_only"]
    say("drain_fetch_only", fetch_only.describe("images") + " (the bytes alone: no claim, no submit)")
    # The part of a job that is required work and that a no-op Celery task does not do (issue 32).
    fetch_share = Figure("sdk_drain_vs_fetch_only", drains["drain_batch50"].per_second / fetch_only.per_second, "")
    if problem:
        return [fetch_share]
    celery = drains["celery"]
    say("drain_celery", celery.describe("tasks"))
    batch1_goal = 0.5 * celery.per_second
    beyond_floor = []
    if "per_second" in FLOOR_CYCLES:  # measured by the claims benchmark of this run
        # A batch-1 job is a claim+submit cycle and a fetch: the goal's rate by what the floor of the
        # stack serves of the cycle alone, with no bytes (16 clients). Above 1: out of this stack's reach.
        floor = FLOOR_CYCLES["per_second"]
        say(
            "drain_batch1_goal",
            f"{batch1_goal:.0f} jobs/s (half of Celery's); the floor of the stack serves {floor:.0f} claim+submit "
            "cycles/s with no bytes (claim_http_floor)",
        )
        beyond_floor.append(Figure("batch1_goal_vs_floor_cycles", batch1_goal / floor, ""))
    return [
        Figure("sdk_drain_vs_celery", drains["drain_batch50"].per_second / celery.per_second, ">= 1"),
        Figure("sdk_drain_batch1_vs_celery", drains["drain_batch1"].per_second / celery.per_second, ">= 0.5"),
        fetch_share,
        Figure("fetch_only_vs_celery", fetch_only.per_second / celery.per_second, ""),
        *beyond_floor,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=12, help="measured time of each claim load (default 12)")
    parser.add_argument(
        "--uploads", type=int, default=1000, help="images uploaded by each upload side, over 5 turns (default 1000)"
    )
    parser.add_argument("--mixed-requests", type=int, default=12_000, help="requests of the memory run (12,000)")
    parser.add_argument("--large", type=int, default=1_000_000, help="images of the big latency table (1,000,000)")
    parser.add_argument("--counts-reads", type=int, default=30, help="timed reads of each counts route (default 30)")
    parser.add_argument("--latency-claims", type=int, default=1000, help="timed claims on each table (default 1000)")
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS", help="py-spy the API under load")
    parser.add_argument("--drain-jobs", type=int, default=3000, help="jobs drained by each side (default 3000)")
    parser.add_argument("--drain-workers", type=int, default=4, help="handlers at once on each side (default 4)")
    parser.add_argument("--drain-rounds", type=int, default=3, help="turns each drain side takes (default 3)")
    parser.add_argument(
        "--erasure-images",
        type=int,
        default=bench_privacy.ERASE_IMAGES,
        help=f"images the privacy benchmark erases (default {bench_privacy.ERASE_IMAGES:,})",
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS, help="run only these")
    args = parser.parse_args(argv)

    started = time.monotonic()
    machine()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="heartbeat-bench-") as tmp:
        workdir = Path(tmp)
        fresh_database(MARIADB)
        with Server(MARIADB, workdir / "api", free_port()) as server:
            register_software(server, "uploads")  # before the others: each upload makes one job
            if "uploads" in args.only:
                figures.extend(uploads(server, workdir / "inprocess", args.uploads))
            if {"claims", "memory"} & set(args.only):  # the memory run claims from these tables
                figures.extend(claims(server, args.seconds, args.profile, workdir, "claims" in args.only))
        if "memory" in args.only:
            figures.append(memory(workdir / "memory", args.mixed_requests))
        drop_database(MARIADB)  # the shared server keeps none of it
        if "latency" in args.only:
            figures.append(latency(workdir / "latency", args.large, args.latency_claims))
        if "counts" in args.only:
            figures.extend(counts(workdir / "counts", args.large, args.counts_reads, args.seconds))
        if "results" in args.only:
            figures.extend(bench_results.query_vs_sql(workdir / "query", (free_port(), free_port()), args.large))
            figures.extend(
                bench_results.export_memory(
                    workdir / "export", (free_port(), free_port()), small=10_000, large=args.large
                )
            )
        if "fleet" in args.only:
            figures.extend(fleet(workdir / "fleet", args.uploads, args.seconds))
        if "drain" in args.only:
            figures.extend(drain(workdir / "drain", args.drain_jobs, args.drain_workers, args.drain_rounds))
        if "imports" in args.only:
            figures.extend(bench_imports.import_figures(workdir / "imports", free_port()))
        if "events" in args.only:
            figures.extend(bench_events.event_figures(workdir / "events", free_port))
        if "flow" in args.only:
            figures.extend(bench_flow.flow_figures(workdir / "flow", free_port))
        if "galera" in args.only:  # the three-node cluster of .ci/galera-up (root: it may start it)
            figures.extend(bench_galera.galera_figures(workdir / "galera", free_port))
        if "privacy" in args.only:
            figures.extend(
                bench_privacy.privacy_figures(workdir / "privacy", free_port, erase_images=args.erasure_images)
            )

    print("\nsummary:", flush=True)
    for figure in figures:
        verdict = "" if not figure.goal else "met" if figure.met else "NOT MET"
        print(f"  {figure.line():<50} {verdict}", flush=True)
    say("bench_wall_time", f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
