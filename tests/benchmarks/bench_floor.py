"""Heartbeat's claim+submit cycle by the floor of its stack (issue 32).

``claim_http_vs_floor`` divides the cycles per second of ``heartbeat serve`` by those of
``floor_app.py``: a bare Falcon app on waitress with the same 16 threads, the same routes and the same
statements (see its docstring), on the same MariaDB, each claiming from a software of its own made
the same way (registered through Heartbeat: a job per image of the same images). The client is
``bench_claims.http_cycles`` for both (16 threads, one keep-alive connection each, ``max=1``, one
submit a job), the two sides taking turns (:data:`TURNS` each); the ratio is of the medians. Printed
beside it: the API CPU per cycle of each (the whole server process's), and so what Heartbeat spends
above the floor.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench_claims import http_cycles
from harness import Figure, LoadResult, Server, await_health, register, say

TURNS = 3
FLOOR_APP = Path(__file__).with_name("floor_app.py")


class FloorServer:
    """``floor_app.py`` as its own process, as :class:`harness.Server` runs ``heartbeat serve``."""

    def __init__(self, server: Server, workdir: Path, port: int, *, query: Path | None = None):
        """``query``: a JSON file ``{"sql", "params"}``, the listing's statement (``GET /v1/images``)."""
        workdir.mkdir(parents=True, exist_ok=True)
        auth_file = workdir / "floor_db_auth.json"
        auth_file.write_text(json.dumps(dataclasses.asdict(server.auth)))
        self.host, self.port = "127.0.0.1", port
        self.url = f"http://{self.host}:{self.port}"
        self.log_path = workdir / "floor.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, str(FLOOR_APP), "--port", str(self.port), "--db-auth", str(auth_file)),
                    *(("--query", str(query)) if query else ()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await_health(self.process, self.url, self.log_path, "the floor app")

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> FloorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def _cpu_ms(loads: list[LoadResult]) -> float:
    return sum(load.server_cpu_seconds for load in loads) * 1e3 / max(1, sum(load.items for load in loads))


def claim_http_vs_floor(
    server: Server, heartbeat_software: str, workdir: Path, port: int, *, threads: int, seconds: float
) -> tuple[Figure, float]:
    """Both sides in turns (see the module's docstring), the floor on ``port``; ``heartbeat_software``
    has its jobs already. The figure, and the floor's cycles per second (the median of its turns)."""
    register(server, "by_floor")
    heartbeat: list[LoadResult] = []
    floor: list[LoadResult] = []
    with FloorServer(server, workdir / "floor", port) as bare:
        for _turn in range(TURNS):
            heartbeat.append(http_cycles(server, heartbeat_software, threads=threads, seconds=seconds))
            floor.append(http_cycles(bare, "by_floor", threads=threads, seconds=seconds))  # type: ignore[arg-type]
    if any(load.drained for load in heartbeat + floor):
        raise RuntimeError("a side ran out of jobs: raise CLAIM_IMAGES")
    ours, bare_rate = (statistics.median(load.per_second for load in side) for side in (heartbeat, floor))
    say(
        "claim_http_floor",
        f"Heartbeat {ours:.0f} cycles/s (turns: {', '.join(f'{load.per_second:.0f}' for load in heartbeat)}), "
        f"floor {bare_rate:.0f} (turns: {', '.join(f'{load.per_second:.0f}' for load in floor)}); API CPU per cycle: "
        f"Heartbeat {_cpu_ms(heartbeat):.2f} ms, floor {_cpu_ms(floor):.2f} ms",
    )
    return Figure("claim_http_vs_floor", ours / bare_rate, ">= 0.7"), bare_rate
