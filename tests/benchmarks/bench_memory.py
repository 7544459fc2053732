"""The API process's memory over a long mixed load: it must not grow with the requests served.

A fresh ``heartbeat serve`` is warmed up, then serves a fixed number of requests as fast as 8 client
threads send them: a 10-minute load at 20 requests/s (12,000 requests), compressed. Each round of a
client is an upload, three claim+submit cycles, a page of images, one image, a page of jobs, and every
tenth round the software list. A sampler reads ``VmRSS`` from ``/proc/<pid>/status`` every 100 ms; the
largest sample of the first fifth of the run is compared with the largest of the last fifth.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time

import urllib3
from harness import Api, LoadResult, Server, jpegs, memory_kib, run_load

REQUESTS_PER_ROUND = 10  # upload, 3 x (claim, submit), images page, image, jobs page (+ software list)
SAMPLE_SECONDS = 0.1


@dataclasses.dataclass
class MemoryOutcome:
    load: LoadResult
    requests: int
    first_fifth_mib: float
    last_fifth_mib: float
    peak_mib: float  # VmHWM: the process's peak over its life (warm-up included)

    @property
    def growth(self) -> float:
        return self.last_fifth_mib / self.first_fifth_mib


def _client_round(api: Api, software: str, picture: bytes, index: int) -> None:
    body, content_type = urllib3.encode_multipart_formdata({"file": (f"mixed-{index}.jpg", picture, "image/jpeg")})
    status, image = api.request("POST", "/v1/images", body, content_type)
    if status != 201:
        raise RuntimeError(f"upload answered {status}: {image}")
    for _ in range(3):
        jobs = api.call("POST", f"/v1/software/{software}/claim", {"max": 1})["jobs"]
        for job in jobs:
            path = f"/v1/software/{software}/jobs/{job['image_id']}/result"
            api.call("PUT", path, {"token": job["token"], "info": {"round": index}})
    api.call("GET", "/v1/images?limit=50")
    api.call("GET", f"/v1/images/{image['id']}")
    api.call("GET", f"/v1/software/{software}/jobs?limit=50")
    if index % 10 == 0:
        api.call("GET", "/v1/software")


def _rounds(server: Server, software: str, pictures: list[bytes], rounds: int, threads: int) -> LoadResult:
    taken = itertools.count()
    lock = threading.Lock()

    def step(api: Api) -> int | None:
        with lock:
            index = next(taken)
        if index >= rounds:
            return None
        _client_round(api, software, pictures[index], index)
        return REQUESTS_PER_ROUND

    return run_load(threads, lambda: Api(server), step, seconds=None, warmup_seconds=0, server=server)


def mixed_load(
    server: Server, software: str, *, requests: int, warmup_requests: int, threads: int = 8
) -> MemoryOutcome:
    """RSS of ``server`` over ``requests`` mixed requests, after ``warmup_requests`` not measured."""
    warmup_rounds = warmup_requests // REQUESTS_PER_ROUND
    rounds = requests // REQUESTS_PER_ROUND
    pictures = jpegs(warmup_rounds + rounds)
    _rounds(server, software, pictures[:warmup_rounds], warmup_rounds, threads)

    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            samples.append((time.monotonic(), memory_kib(server.pid)["VmRSS"]))

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.monotonic()
    sampler.start()
    load = _rounds(server, software, pictures[warmup_rounds:], rounds, threads)
    ended = time.monotonic()
    stop.set()
    sampler.join()
    fifth = (ended - started) / 5
    first = [rss for at, rss in samples if at <= started + fifth]
    last = [rss for at, rss in samples if at >= ended - fifth]
    return MemoryOutcome(
        load,
        rounds * REQUESTS_PER_ROUND,
        max(first) / 1024,
        max(last) / 1024,
        memory_kib(server.pid)["VmHWM"] / 1024,
    )
