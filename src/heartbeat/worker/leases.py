"""Leases in hand, and the background thread that keeps them alive."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection

from heartbeat.worker.client import Client
from heartbeat.worker.exceptions import HeartbeatError, LeaseLost, NotFound
from heartbeat.worker.models import ClaimedJob

log = logging.getLogger("heartbeat.worker")

RETRY_EXTEND_SECONDS = 1.0  # after an extend that got no answer: the lease may still be alive


@dataclasses.dataclass(eq=False)
class Lease:
    """A claimed job until it is settled (submitted, failed or released) or lost.

    ``lock`` is held by whoever talks to the server about this job, so that an extend and a
    submit never cross: a submit waits for an extend in flight, then sees whether it was lost.
    """

    job: ClaimedJob
    extend_at: float  # time.monotonic() of the next extend
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    lost: bool = False
    settled: bool = False

    @property
    def open(self) -> bool:
        return not (self.lost or self.settled)


class LeaseKeeper(threading.Thread):
    """Extends each lease in hand about every third of ``lease_seconds``, until :meth:`stop`."""

    def __init__(
        self, client: Client, software: str, lease_seconds: int, leases: Callable[[], Collection[Lease]]
    ) -> None:
        super().__init__(name=f"heartbeat-lease-keeper-{software}", daemon=True)
        self._client = client
        self._software = software
        self._lease_seconds = lease_seconds
        self.interval_seconds = lease_seconds / 3
        self._leases = leases
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.is_set():
            now = time.monotonic()
            leases = self._leases()
            for lease in leases:
                if lease.extend_at <= now:
                    self._extend(lease)  # moves its extend_at on
            # New leases are due a third of a lease from their claim, so a nap of at most that misses none.
            nap = min((lease.extend_at for lease in leases), default=now + self.interval_seconds) - time.monotonic()
            self._stopped.wait(max(0.0, min(nap, self.interval_seconds)))

    def _extend(self, lease: Lease) -> None:
        if not lease.lock.acquire(blocking=False):
            return  # being submitted, failed or released right now
        try:
            if not lease.open:
                return
            job = lease.job
            try:
                self._client.extend(self._software, job.image_id, job.token, lease_seconds=self._lease_seconds)
            except (LeaseLost, NotFound) as error:
                lease.lost = True
                log.warning("lost the lease on image %s: %s; its result will not be sent", job.image_id, error)
            except HeartbeatError as error:
                lease.extend_at = time.monotonic() + min(RETRY_EXTEND_SECONDS, self.interval_seconds)
                log.warning("could not extend the lease on image %s: %s", job.image_id, error)
            else:
                lease.extend_at = time.monotonic() + self.interval_seconds
        finally:
            lease.lock.release()
