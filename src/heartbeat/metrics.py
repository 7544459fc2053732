"""Prometheus metrics: counters this process counts, and job gauges read from the database at scrape time.

Counters are per server (``heartbeat serve --processes N`` keeps them in prometheus-client's
multiprocess files, summed at each scrape); the job gauges come from the shared database, so every
server reports the same, correct numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from heartbeat.catalog.registry import Registry
from heartbeat.queue import JobQueue


class JobGauges(Collector):
    """``heartbeat_jobs{software, status}``: one GROUP BY per software, when Prometheus asks."""

    def __init__(self, registry: Registry, queue: JobQueue):
        self._registry = registry
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("heartbeat_jobs", "Jobs per software and status", labels=["software", "status"])
        outdated = GaugeMetricFamily(
            "heartbeat_jobs_outdated",
            "Done jobs whose result came from an older version of the software (counted in status done too)",
            labels=["software"],
        )
        paused = GaugeMetricFamily("heartbeat_software_paused", "1 while a software is paused", labels=["software"])
        in_flight = GaugeMetricFamily(
            "heartbeat_jobs_in_flight", "Jobs claimed under a lease that has not run out", labels=["software"]
        )
        max_in_flight = GaugeMetricFamily(
            "heartbeat_max_in_flight",
            "A software's limit of jobs claimed at once (limited ones only)",
            labels=["software"],
        )
        rate = GaugeMetricFamily(
            "heartbeat_rate_limit_per_second",
            "A software's limit of jobs handed out, per second of its window (if it has one)",
            labels=["software"],
        )
        now = time.time()
        for software in self._registry.all():  # on the scrape request's own connection
            for status, count in self._queue.counters.counts(software).items():
                if status == "outdated":  # a part of `done`, not a status: a sum over statuses counts each job once
                    outdated.add_metric([software.name], count)
                else:
                    gauge.add_metric([software.name, status], count)
            paused.add_metric([software.name], 1 if software.paused else 0)
            in_flight.add_metric([software.name], self._queue.flow.in_flight(software, now))
            if software.max_in_flight is not None:
                max_in_flight.add_metric([software.name], software.max_in_flight)
            if software.rate_limit is not None and software.rate_window:
                rate.add_metric([software.name], software.rate_limit / software.rate_window)
        yield gauge
        yield outdated
        yield paused
        yield in_flight
        yield max_in_flight
        yield rate


class Metrics:
    """Every metric of one app, in its own registry (so that several apps in one process stay apart).

    ``multiprocess_dir``: the folder of prometheus-client's multiprocess mode, when the server runs in
    several processes; a scrape then sums every process's files.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self._gauges: list[Collector] = []
        self.registry = registry = CollectorRegistry()
        if multiprocess_dir is None:  # process_* (CPU, RSS, open files): one process's, so with one process only
            ProcessCollector(registry=registry)
        self.uploads = Counter("heartbeat_uploads", "Images stored", registry=registry)
        self.duplicates = Counter("heartbeat_duplicates", "Uploads of bytes already stored", registry=registry)
        self.claims = Counter("heartbeat_claims", "Jobs handed out", ["software"], registry=registry)
        self.submits = Counter("heartbeat_submits", "Results stored", ["software"], registry=registry)
        self.failures = Counter("heartbeat_failures", "Failures reported by workers", ["software"], registry=registry)
        self.claims_turned_away = Counter(
            "heartbeat_claims_turned_away",
            "Claims answered at once with Retry-After: no job, and no room to wait",
            ["software"],
            registry=registry,
        )
        self.claims_waiting = Gauge(
            "heartbeat_claims_waiting",
            "Long-polling claims waiting now",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.lease_expiries = Counter(
            "heartbeat_lease_expiries", "Jobs claimed again after their lease ran out", ["software"], registry=registry
        )
        self.request_seconds = Histogram(
            "heartbeat_request_duration_seconds",
            "Time to answer a request",
            ["method", "route", "status"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25),
        )

    def watch_jobs(self, registry: Registry, queue: JobQueue) -> None:
        self._gauges.append(JobGauges(registry, queue))
        self.registry.register(self._gauges[-1])

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        if self._multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        scraped = CollectorRegistry()
        multiprocess.MultiProcessCollector(scraped, path=self._multiprocess_dir)
        for gauges in self._gauges:
            scraped.register(gauges)
        return bytes(generate_latest(scraped))
