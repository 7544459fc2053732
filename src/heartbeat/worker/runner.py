"""``Worker``: claim -> download and verify -> handle (lease kept alive) -> submit, in a loop.

Threads: the caller's runs the claim loop; ``concurrency`` daemon threads download, run the handler
and submit; one more keeps the leases alive. On SIGTERM/SIGINT (or :meth:`Worker.stop`) claiming
stops, jobs not started are released, jobs running are finished and submitted, and ``run`` returns.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from heartbeat.worker.client import Client
from heartbeat.worker.download import check_content
from heartbeat.worker.exceptions import HeartbeatError, InvalidRequest, ServerError, ServerUnavailable
from heartbeat.worker.leases import Lease, LeaseKeeper
from heartbeat.worker.models import ClaimedJob, Image, Result
from heartbeat.worker.signals import stop_on_signals

log = logging.getLogger("heartbeat.worker")

Handler = Callable[[bytes, Image], Any]
Rows = dict[str, list[dict[str, Any]]]
Ready = tuple[Lease, Any, Rows | None]
MAX_BATCH = 100  # the batch submit's limit, and the claim's
MAX_UNAVAILABLE_PAUSE_SECONDS = 30.0
RETRY_AFTER_SPREAD = 1.5  # a turned-away claim comes back after its Retry-After times 1 to this


def split_result(result: Any) -> tuple[Any, Rows | None]:
    """A handler returns ``info`` or a tuple ``(info, rows)``; a JSON array is returned as a list."""
    if isinstance(result, tuple) and len(result) == 2:
        return result[0], result[1]
    return result, None


class Worker:
    """Runs ``handler(image_bytes, image) -> info | (info, rows)`` on the jobs of ``software``.

    ``concurrency`` handlers run at once; each claim asks for at least ``batch`` jobs, and up to
    ``batch`` finished results are sent together with the batch submit. ``lease_seconds`` defaults
    to the software's own; ``wait_seconds`` is how long a claim waits for work (long poll).
    ``retry_after_seconds`` is passed with ``fail`` (default: the server's backoff).
    On shutdown, handlers still running after ``shutdown_grace_seconds`` are abandoned and their
    jobs released. A Worker runs once: make a new one to run again.
    """

    def __init__(
        self,
        client: Client,
        software: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        batch: int = 1,
        lease_seconds: int | None = None,
        wait_seconds: float = 5.0,
        retry_after_seconds: float | None = None,
        shutdown_grace_seconds: float = 30.0,
        give_up_seconds: float = 30.0,
    ):
        if concurrency < 1 or not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"concurrency must be at least 1 and batch between 1 and {MAX_BATCH}")
        self.client = client
        self.software = software
        self.handler = handler
        self.concurrency = concurrency
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.retry_after_seconds = retry_after_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        # With exit_when_idle, how long the API may not answer before run() gives up (ServerUnavailable).
        self.give_up_seconds = give_up_seconds
        # One lock guards everything below (reentrant: a signal handler may stop() while it is held).
        # Work threads wait on ``_work_to_do`` (one job, one wake-up); the thread in ``run`` waits on
        # ``_changed``, woken only when what it waits for may have come.
        self._lock = threading.RLock()
        self._work_to_do = threading.Condition(self._lock)
        self._changed = threading.Condition(self._lock)
        self._in_hand: set[Lease] = set()
        self._todo: collections.deque[Lease] = collections.deque()
        self._ready: list[Ready] = []
        self._running = 0
        self._stopping = threading.Event()
        self._hurry = threading.Event()
        self._closing = False
        self._lease_seconds_in_use = 0

    # --- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once the jobs in hand are finished or released."""
        with self._changed:
            self._stopping.set()
            self._changed.notify_all()

    def _hurry_up(self) -> None:
        with self._changed:
            self._hurry.set()
            self._changed.notify_all()

    def _wants_jobs(self) -> bool:
        """Whether to claim now (call locked). With ``batch`` 1, when a handler is free and nothing waits;
        with larger batches, once fewer jobs wait than there are handlers, so that the next batch's
        claim overlaps the last jobs of this one instead of leaving the handlers idle meanwhile."""
        if self.batch == 1:
            return not self._todo and self._running < self.concurrency
        return len(self._todo) < self.concurrency

    def _notify_claimer(self) -> None:
        """Wake the claim loop if it has something to do now (call locked)."""
        if self._wants_jobs() or not self._in_hand:
            self._changed.notify_all()

    def run(self, *, exit_when_idle: bool = False) -> None:
        """Work until :meth:`stop`, SIGTERM or SIGINT (or, with ``exit_when_idle``, until a claim
        finds no work while nothing is in hand); jobs in hand are finished or released first.

        With ``exit_when_idle`` claims do not wait for work (the run ends when there is none), and an
        API that does not answer for ``give_up_seconds`` ends the run with
        :class:`~heartbeat.worker.exceptions.ServerUnavailable`; without it, the worker waits for the
        API as long as it takes."""
        self._give_up = self.give_up_seconds if exit_when_idle else None
        with stop_on_signals(self.stop, self._hurry_up, lambda: len(self._in_hand)):
            lease_seconds = self.lease_seconds or self._software_lease_seconds()
            if lease_seconds is None:
                return  # stopped before the server answered
            keeper = LeaseKeeper(self.client, self.software, lease_seconds, self._open_leases)
            self._lease_seconds_in_use = lease_seconds
            keeper.start()
            threads = [
                threading.Thread(target=self._work_loop, name=f"heartbeat-worker-{i}", daemon=True)
                for i in range(self.concurrency)
            ]
            for thread in threads:
                thread.start()
            try:
                self._claim_loop(exit_when_idle)
            finally:
                self._shut_down()
                keeper.stop()

    # --- claiming ---------------------------------------------------------------------------

    def _software_lease_seconds(self) -> int | None:
        pause, since = 0.5, time.monotonic()
        while not self._stopping.is_set():
            try:
                return self.client.software(self.software).lease_seconds
            except (ServerUnavailable, ServerError) as error:
                self._unless_given_up(error, since)
                log.warning("the API is unavailable (%s); trying again in %.0f s", error, pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, MAX_UNAVAILABLE_PAUSE_SECONDS)
        return None

    def _unless_given_up(self, error: HeartbeatError, since: float) -> None:
        """Raise ``error`` when the API has not answered since ``since`` for longer than the run allows."""
        if self._give_up is not None and time.monotonic() - since >= self._give_up:
            raise ServerUnavailable(f"the API did not answer for {self._give_up:g} s: {error}") from error

    def _claim_loop(self, exit_when_idle: bool) -> None:
        pause, since = 0.5, time.monotonic()
        wait_seconds = 0 if exit_when_idle else self.wait_seconds  # to exit when idle, ask without waiting
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopping.is_set() or self._wants_jobs())
                if self._stopping.is_set():
                    return
                wanted = min(MAX_BATCH, max(self.batch, self.concurrency - self._running - len(self._todo)))
                idle = not self._in_hand
                in_hand = len(self._in_hand)
            try:
                claim = self.client.claim_jobs(
                    self.software, wanted, lease_seconds=self._lease_seconds_in_use, wait_seconds=wait_seconds
                )
            except (ServerUnavailable, ServerError) as error:
                self._unless_given_up(error, since)
                log.warning("could not claim (%s); trying again in %.0f s", error, pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, MAX_UNAVAILABLE_PAUSE_SECONDS)
                continue
            pause, since = 0.5, time.monotonic()
            jobs = claim.jobs
            self._take_in_hand(jobs)
            if jobs:
                continue
            if exit_when_idle and idle and claim.retry_after_seconds is None:
                # No work, unless the software is held back by its limit (flow control): a claim that
                # does not wait says so with a Retry-After, and may find jobs that freed meanwhile.
                return
            if claim.retry_after_seconds is not None:
                # The server had no room to let this claim wait, or the software is at its limit (flow
                # control): come back when it says, spread out a little so that a fleet turned away
                # together does not come back together. Sooner when a lease of ours ends: that frees
                # room at once (the claim may have gone out while our last result was on its way).
                delay = claim.retry_after_seconds * random.uniform(1.0, RETRY_AFTER_SPREAD)
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._stopping.is_set() or len(self._in_hand) < in_hand,  # noqa: B023
                        delay,
                    )
                continue
            with self._changed:  # before claiming again, let the work in hand settle (or wait for the long poll)
                if exit_when_idle:
                    self._changed.wait_for(lambda: self._stopping.is_set() or not self._in_hand)
                elif wait_seconds == 0:
                    self._changed.wait(1.0)

    def _take_in_hand(self, jobs: list[ClaimedJob]) -> None:
        due = time.monotonic() + self._lease_seconds_in_use / 3
        leases = [Lease(job, extend_at=due) for job in jobs]
        with self._changed:
            self._in_hand.update(leases)
            if not self._stopping.is_set():
                self._todo.extend(leases)
                self._work_to_do.notify(len(leases))
                return
        for lease in leases:  # stopped while the claim was waiting: give them back at once
            self._release(lease)

    def _open_leases(self) -> list[Lease]:
        with self._changed:
            return [lease for lease in self._in_hand if lease.open]

    # --- working ----------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            with self._lock:
                self._work_to_do.wait_for(lambda: bool(self._todo) or self._closing)
                if not self._todo:
                    return
                lease = self._todo.popleft()
                self._running += 1
                self._notify_claimer()
            ready: Ready | None = None
            try:
                ready = self._process(lease)
            finally:
                with self._lock:
                    self._running -= 1
                    if ready is not None:
                        self._ready.append(ready)
                    to_submit = self._take_ready(force=False)
                    self._notify_claimer()
            self._submit(to_submit)

    def _take_ready(self, *, force: bool) -> list[Ready]:
        """The results to send now: a full batch, or all when nothing else is coming (call locked)."""
        nothing_else = not self._todo and not self._running
        if force or nothing_else or self._stopping.is_set() or len(self._ready) >= self.batch:
            taken, self._ready = self._ready, []
            return taken
        return []

    def _process(self, lease: Lease) -> Ready | None:
        job = lease.job
        try:
            data = check_content(self.client.fetch(job.url), job.image)
        except HeartbeatError as error:
            self._fail(lease, f"could not fetch the image: {error}")
            return None
        started = time.monotonic()
        try:
            info, rows = split_result(self.handler(data, job.image))
            json.dumps([info, rows])  # fail the job here rather than the whole batch's submit
        except Exception as error:
            log.exception("the handler failed on image %s", job.image_id)
            self._fail(lease, traceback.format_exception_only(error)[-1].strip())
            return None
        log.info("handled image %s in %.2f s", job.image_id, time.monotonic() - started)
        return lease, info, rows

    # --- talking to the server about a lease ------------------------------------------------

    def _settle(self, lease: Lease, action: Callable[[], Any], what: str) -> None:
        """Run ``action`` for the lease unless it was lost; either way it leaves our hands."""
        with lease.lock:
            try:
                if lease.open:
                    action()
            except HeartbeatError as error:
                log.warning("could not %s image %s: %s", what, lease.job.image_id, error)
            finally:
                lease.settled = True
                self._drop(lease)

    def _drop(self, lease: Lease) -> None:
        with self._lock:
            self._in_hand.discard(lease)
            self._notify_claimer()

    def _fail(self, lease: Lease, error: str, *, retry: bool = True) -> None:
        job = lease.job
        log.warning("image %s failed: %s", job.image_id, error)
        self._settle(
            lease,
            lambda: self.client.fail(
                self.software, job.image_id, job.token, error[:65536], retry=retry, retry_after=self.retry_after_seconds
            ),
            "report the failure of",
        )

    def _release(self, lease: Lease) -> None:
        job = lease.job
        self._settle(lease, lambda: self.client.release(self.software, job.image_id, job.token), "release")

    def _submit(self, ready: list[Ready]) -> None:
        if len(ready) == 1:
            self._submit_one(*ready[0])
            return
        for start in range(0, len(ready), MAX_BATCH):
            self._submit_batch(ready[start : start + MAX_BATCH])

    def _submit_one(self, lease: Lease, info: Any, rows: Rows | None) -> None:
        job = lease.job

        def send() -> None:
            try:
                self.client.submit(self.software, job.image_id, job.token, info, rows)
            except InvalidRequest as error:
                self._fail(lease, f"the result was refused: {error.description}", retry=False)

        self._settle(lease, send, "submit")

    def _submit_batch(self, ready: list[Ready]) -> None:
        with contextlib.ExitStack() as locks:
            for lease, _info, _rows in ready:
                locks.enter_context(lease.lock)
            try:
                sendable = [(lease, info, rows) for lease, info, rows in ready if lease.open]
                results = [Result(lease.job.image_id, lease.job.token, info, rows) for lease, info, rows in sendable]
                try:
                    outcomes = self.client.submit_many(self.software, results) if results else []
                except HeartbeatError as error:
                    log.warning("could not submit %d results: %s", len(results), error)
                    outcomes = []
                by_image = {lease.job.image_id: lease for lease, _info, _rows in sendable}
                for outcome in outcomes:
                    if outcome.status == "invalid":
                        self._fail(
                            by_image[outcome.image_id], f"the result was refused: {outcome.description}", retry=False
                        )
                    elif outcome.status == "stale":
                        log.warning("lost the lease on image %s before its result was stored", outcome.image_id)
            finally:
                for lease, _info, _rows in ready:
                    lease.settled = True
                    self._drop(lease)

    # --- shutting down ----------------------------------------------------------------------

    def _shut_down(self) -> None:
        with self._changed:
            self._stopping.set()
            self._closing = True
            not_started, self._todo = list(self._todo), collections.deque()
            self._work_to_do.notify_all()
        for lease in not_started:
            self._release(lease)
        with self._changed:
            leftover = self._take_ready(force=True)
        self._submit(leftover)
        with self._changed:
            self._changed.wait_for(lambda: not self._in_hand or self._hurry.is_set(), self.shutdown_grace_seconds)
            abandoned = list(self._in_hand)
        for lease in abandoned:
            log.warning("abandoning image %s: its handler is still running", lease.job.image_id)
            self._release(lease)
