"""Sending webhook deliveries: a few threads per server process, each holding one webhook at a time.

A thread leases a webhook that has a due delivery with one conditional ``UPDATE`` of its
``lease_expires_at`` (it succeeds for one sender only, across processes and machines), then sends
its due deliveries in position order, up to ``CONCURRENT_SENDS`` at once (each of another key), and
gives the lease back. Every socket of the
lease is shut down ``LEASE_MARGIN_SECONDS`` before the lease ends (a :class:`Deadline`), so no send
outlives it. A delivery waiting for a retry holds back the later ones of its ``order_key`` (one
image's events arrive in order), not those of other keys.

Each request is a Standard Webhooks message (https://www.standardwebhooks.com/, "Signature scheme"):
the body is the event as ``GET /v1/events`` shows it, ``webhook-id`` the event's ID (the same on
every retry, so a receiver drops what it has seen; a replay's is new: :func:`message_id`),
``webhook-timestamp`` the send time in seconds since the epoch (wall time: receivers compare it with
theirs), ``webhook-signature`` made by the ``standardwebhooks`` library. A 2xx delivers; a timeout,
a connection error, 408, 429 or a 5xx is tried again after an exponential backoff with full jitter
(or ``Retry-After``, if later) until ``retry_seconds`` after the delivery was made; anything else
fails it at once. A timeout or a connection error also backs off the whole webhook, so a dead
receiver holds one thread for one timeout per backoff period, and no other webhook waits for it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import email.utils
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import peewee
import requests
import standardwebhooks

from heartbeat.config import UrlAllowList
from heartbeat.db.database import Database
from heartbeat.db.models import Delivery, Event, Webhook
from heartbeat.errors import UrlRefused
from heartbeat.events.feed import describe_event
from heartbeat.events.sequencer import Sequencer
from heartbeat.events.webhooks import DELIVERED, FAILED, GONE, PENDING, Webhooks
from heartbeat.ingest.urlfetch import AddressForbidden, Deadline, GuardedAdapter, _cause

log = logging.getLogger(__name__)

THREADS = 4
TIMEOUT_SECONDS = 5.0  # each wait for a receiver: to connect, and for each read of its answer
LEASE_SECONDS = 60.0
LEASE_MARGIN_SECONDS = 10.0  # the lease's sockets are shut this long before it ends
POLL_SECONDS = 1.0  # due retries, and deliveries made by other processes, are looked for this often
PAGE = 100  # pending deliveries read at once
CONCURRENT_SENDS = 8  # deliveries of one webhook in flight at once, each of another key
CANDIDATES = 8  # due webhooks a sender tries to lease, least recently served first
BACKOFF_BASE_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 3600.0
RETENTION_EVERY_SECONDS = 60.0
MAX_ERROR_CHARS = 255
MAX_ANSWER_BYTES = 65536  # of a receiver's answer body read (and dropped); a longer one closes the connection
RETRIED_STATUSES = frozenset({408, 429})
USER_AGENT = "Heartbeat-Webhooks"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt gave: its status code (None: no answer), an error, whether to try again
    (``retry``) and after how long at least (``retry_after_seconds``, from ``Retry-After``), and
    whether the receiver did not answer at all (``unreachable``: the whole webhook backs off)."""

    status_code: int | None = None
    error: str | None = None
    retry: bool = False
    retry_after_seconds: float = 0.0
    unreachable: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Sends the deliveries (see the module's docstring). :meth:`run_once` is one lease, for tests to
    drive by hand; :meth:`start` runs ``threads`` threads that do it, woken when deliveries are made
    and every ``poll_seconds``. ``clock`` gives seconds since the epoch (due times, leases, backoff);
    ``jitter`` a number in [0, 1) (the backoff's full jitter)."""

    def __init__(
        self,
        database: Database,
        sequencer: Sequencer,
        webhooks: Webhooks,
        clock: Callable[[], float],
        *,
        allow: UrlAllowList,
        retry_seconds: float,
        threads: int = THREADS,
        timeout_seconds: float = TIMEOUT_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        jitter: Callable[[], float] = random.random,
    ):
        self._database = database
        self._sequencer = sequencer
        self._clock = clock
        self._allow = allow
        self._webhooks = webhooks
        self.retry_seconds = retry_seconds
        self._threads_wanted = threads
        self._timeout_seconds = timeout_seconds
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._jitter = jitter
        self._local = threading.local()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- one lease ----------------------------------------------------------------------------------

    def run_once(self) -> int | None:
        """Lease one due webhook and send its due deliveries: how many were tried, or None when no
        webhook was due (or every due one was leased by another sender). Call with a connection."""
        now = self._clock()
        leased = self._lease(now)
        if leased is None:
            return None
        webhook, token = leased
        try:
            return self._send_due(webhook, now)
        finally:
            Webhook.update(lease_token=None, lease_expires_at=self._clock()).where(
                (Webhook.id == webhook.id) & (Webhook.lease_token == token)
            ).execute()

    def _lease(self, now: float) -> tuple[Webhook, str] | None:
        due = Delivery.select(Delivery.id).where(
            (Delivery.webhook_id == Webhook.id) & (Delivery.status == PENDING) & (Delivery.next_attempt_at <= now)
        )
        candidates = list(
            Webhook.select()
            .where((Webhook.next_attempt_at <= now) & (Webhook.lease_expires_at <= now) & peewee.fn.EXISTS(due))
            .order_by(Webhook.lease_expires_at)
            .limit(CANDIDATES)
        )
        for webhook in candidates:
            token = secrets.token_hex(16)
            # Conditional: of the senders that read this webhook free, one changes the row.
            taken = (
                Webhook.update(lease_token=token, lease_expires_at=now + self._lease_seconds)
                .where(
                    (Webhook.id == webhook.id) & (Webhook.lease_expires_at <= now) & (Webhook.next_attempt_at <= now)
                )
                .execute()
            )
            if taken:
                return webhook, token
        return None

    def _send_due(self, webhook: Webhook, now: float) -> int:
        """Send ``webhook``'s due deliveries in position order, in rounds of up to ``CONCURRENT_SENDS``
        at once, each of another key (a key's next delivery goes in a later round, once this one's
        outcome is written; a key waiting for a retry is blocked); stop when the receiver does not
        answer or the lease's time is nearly out."""
        sent = 0
        blocked: dict[str, float] = {}  # a key waiting for a retry, and until when
        after = -1
        with Deadline(self._lease_seconds - LEASE_MARGIN_SECONDS) as deadline:
            adapter = GuardedAdapter(self._allow, deadline)
            session = self._session()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            try:
                while True:
                    page = list(
                        Delivery.select()
                        .where(
                            (Delivery.webhook_id == webhook.id)
                            & (Delivery.status == PENDING)
                            & (Delivery.position > after)
                        )
                        .order_by(Delivery.position)
                        .limit(PAGE)
                    )
                    round_: dict[str, Delivery] = {}
                    for delivery in page:
                        key = delivery.order_key
                        waits_until = blocked.get(key)
                        if waits_until is not None:
                            if delivery.next_attempt_at < waits_until:  # due behind one that is not
                                _postpone(delivery, waits_until)
                            continue
                        if delivery.next_attempt_at > now:
                            blocked[key] = delivery.next_attempt_at
                            continue
                        if key not in round_ and len(round_) < CONCURRENT_SENDS:
                            round_[key] = delivery
                    if round_:
                        if _seconds_left(deadline) < self._timeout_seconds * 2:  # connect, then read
                            return sent
                        deliveries = list(round_.values())
                        outcomes = self._attempt_all(session, webhook, deliveries)
                        sent += len(deliveries)
                        for delivery, outcome in zip(deliveries, outcomes, strict=True):
                            retry_at = self._record(webhook, delivery, outcome)
                            if retry_at is not None:
                                blocked[delivery.order_key] = retry_at
                        if any(outcome.unreachable for outcome in outcomes):
                            return sent
                        continue  # the same page again: the keys just sent go on with their next delivery
                    if len(page) < PAGE:
                        return sent
                    after = page[-1].position
            finally:
                adapter.close()

    def _attempt_all(self, session: requests.Session, webhook: Webhook, deliveries: list[Delivery]) -> list[Outcome]:
        """Send ``deliveries`` (each of another key) at once, on this sender thread's pool; their
        events are read first, in one statement, and the connection goes back (to the pool on MySQL)
        while the receiver answers: a slow one must not hold one that API requests need."""
        kept = Event.select(Event.position, Event.type, Event.time, Event.software, Event.image_id, Event.data).where(
            Event.position.in_([delivery.position for delivery in deliveries])
        )
        rows: dict[int, tuple[Any, ...]] = {int(row[0]): row for row in kept.tuples()}  # type: ignore[index,misc]  # stubs: models
        if not self._database.in_transaction():
            self._database.close()
        bodies = [
            None
            if delivery.position not in rows
            else json.dumps(describe_event(*rows[delivery.position]), separators=(",", ":"), allow_nan=False).encode()
            for delivery in deliveries
        ]
        if len(deliveries) == 1:
            return [self._attempt(session, webhook, deliveries[0], bodies[0])]
        futures = [
            self._pool().submit(self._attempt, session, webhook, delivery, body)
            for delivery, body in zip(deliveries, bodies, strict=True)
        ]
        return [future.result() for future in futures]

    # -- one attempt --------------------------------------------------------------------------------

    def _attempt(self, session: requests.Session, webhook: Webhook, delivery: Delivery, body: bytes | None) -> Outcome:
        """One POST of ``body`` (None: the event is no longer kept) to the webhook's receiver."""
        if body is None:
            return Outcome(error=GONE)
        headers = signed_headers(webhook.secret, message_id(delivery), body)
        try:
            with session.post(
                webhook.url,
                data=body,
                headers=headers,
                timeout=self._timeout_seconds,
                allow_redirects=False,
                stream=True,
            ) as response:
                code = response.status_code
                _read_answer(response)
                if 200 <= code < 300:
                    return Outcome(status_code=code)
                retry = code in RETRIED_STATUSES or code >= 500
                error = f"answered {code} {response.reason or ''}".strip()
                return Outcome(code, error, retry, retry_after(response.headers.get("Retry-After"), time.time()))
        except OSError as error:  # requests' errors are OSErrors
            cause = _cause(error)
            if isinstance(cause, AddressForbidden):  # the host resolves to an internal address now
                return Outcome(error=str(cause).replace("uploads by URL", "webhooks"))
            kind = "timeout" if isinstance(error, requests.Timeout) else "connection error"
            return Outcome(error=f"{kind}: {type(error).__name__}", retry=True, unreachable=True)

    def _record(self, webhook: Webhook, delivery: Delivery, outcome: Outcome) -> float | None:
        """Write the outcome on the delivery (unless a replay made it anew meanwhile); when it waits
        for a retry, when that is due (seconds since the epoch), else None."""
        now = self._clock()
        attempts = delivery.attempts + 1
        fields: dict[str, object] = {
            "attempts": attempts,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error[:MAX_ERROR_CHARS] if outcome.error else None,
        }
        ends_at = delivery.created_at + self.retry_seconds
        retry_at: float | None = None
        if outcome.delivered:
            fields |= {"status": DELIVERED, "finished_at": now}
        elif not outcome.retry or now >= ends_at:
            fields |= {"status": FAILED, "finished_at": now}
        else:
            delay = max(self.backoff_seconds(attempts), outcome.retry_after_seconds)
            retry_at = fields["next_attempt_at"] = min(now + delay, ends_at)
            if outcome.unreachable:
                Webhook.update(next_attempt_at=retry_at).where(Webhook.id == webhook.id).execute()
        Delivery.update(fields).where(
            (Delivery.id == delivery.id) & (Delivery.status == PENDING) & (Delivery.created_at == delivery.created_at)
        ).execute()
        return retry_at

    def backoff_seconds(self, attempts: int) -> float:
        """Exponential backoff with full jitter after ``attempts`` attempts: a random time up to
        ``BACKOFF_BASE_SECONDS * 2**(attempts - 1)``, capped at ``MAX_BACKOFF_SECONDS``."""
        ceiling = min(MAX_BACKOFF_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(attempts - 1, 32))
        return self._jitter() * ceiling

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """This sender thread's own pool of ``CONCURRENT_SENDS`` threads: a dead receiver holds only
        the pool of the thread that leased its webhook."""
        pool: concurrent.futures.ThreadPoolExecutor | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = concurrent.futures.ThreadPoolExecutor(CONCURRENT_SENDS, "webhook-send")
        return pool

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # no proxy from the environment: the guard must see the receiver
            session.headers["User-Agent"] = USER_AGENT
        return session

    # -- the threads --------------------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self._threads_wanted):
            thread = threading.Thread(target=self._loop, args=(number == 0,), name=f"webhooks-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads; a send in flight ends within its timeout."""
        self._stopped.set()
        self._webhooks.made.ring()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _loop(self, keeps_retention: bool) -> None:
        next_retention = time.monotonic()
        while not self._stopped.is_set():
            rings = self._webhooks.made.rings
            worked = None
            try:
                worked = self.run_once()
                if keeps_retention and time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_EVERY_SECONDS
                    self._webhooks.forget_removed(self._sequencer.retained_after(), self._clock())
            except peewee.PeeweeException as error:  # the database is away: the next round tries again
                log.warning("webhook sender: %s: %s", type(error).__name__, error)
            except Exception:  # a bug must not end the thread: deliveries would stop for good
                log.exception("webhook sender")
            finally:
                # Not a ``connection()`` block: a send hands the connection back midway (_attempt_all).
                self._database.close()
            if not worked:  # nothing was due, or only what waits behind a retry
                self._webhooks.made.wait(rings, self._poll_seconds)


def message_id(delivery: Delivery) -> str:
    """A delivery's ``webhook-id``: its event's ID, the same on every retry; a replayed delivery's
    is ``<ID>-r<replays>``, new for each replay, so that a receiver that drops the messages it has seen
    (as Standard Webhooks advises) takes a replay it asked for. The body's ``id`` is always the event's."""
    return str(delivery.position) if not delivery.replays else f"{delivery.position}-r{delivery.replays}"


def signed_headers(secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of ``body``: ``webhook-id``, ``webhook-timestamp`` (now, whole
    seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``), and its Content-Type."""
    sent_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    signature = standardwebhooks.Webhook(secret).sign(message_id, sent_at, body)
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }


def retry_after(value: str | None, now: float) -> float:
    """``Retry-After`` (RFC 9110, 10.2.3: delay seconds or an HTTP date) as seconds from ``now``; 0 when
    absent or unreadable."""
    if not value:
        return 0.0
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - now)


def _read_answer(response: requests.Response) -> None:
    """Read the receiver's answer body, up to ``MAX_ANSWER_BYTES``: a body read to its end gives the
    connection back to the pool for the next delivery (a new connection for each, eight at once, can
    overflow a small receiver's listen backlog: a second lost to each SYN retried); a longer one is
    dropped with its connection."""
    read = 0
    for chunk in response.iter_content(16384):
        read += len(chunk)
        if read > MAX_ANSWER_BYTES:
            return


def _postpone(delivery: Delivery, until: float) -> None:
    """A delivery due behind an earlier one of its key that waits: due with it, so that its webhook is
    not leased for nothing until then."""
    Delivery.update(next_attempt_at=until).where(
        (Delivery.id == delivery.id) & (Delivery.status == PENDING) & (Delivery.created_at == delivery.created_at)
    ).execute()


def _seconds_left(deadline: Deadline) -> float:
    try:
        return deadline.remaining()
    except UrlRefused:
        return 0.0
