"""The privacy chores, on exactly one process of a cluster at a time: running erasures a step at a
time, starting due retention runs, removing audit entries past their retention.

Every server process runs a :class:`PrivacyChores` thread; the one holding the ``privacy`` row of
``chore_leases`` does the work, renewing its lease between steps. A process that stops (or dies)
stops renewing, and another takes the lease once it ran out (``LEASE_SECONDS``): an erasure it was in
the middle of goes on from its last committed step (``privacy/erasure.py``). A lease is a
compare-and-set on that row, which every engine (SQLite, MySQL, a Galera cluster) serialises; no
engine-specific lock is used.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

import peewee

from heartbeat.db.database import Database, transactional
from heartbeat.db.models import ChoreLease
from heartbeat.errors import BackendUnavailable
from heartbeat.privacy.audit import Audit
from heartbeat.privacy.erasure import Erasures
from heartbeat.privacy.retention import RetentionPolicies

log = logging.getLogger(__name__)

PRIVACY = "privacy"
LEASE_SECONDS = 15.0
IDLE_SECONDS = 1.0  # how often an idle process looks for work (and for a lease that ran out)
AUDIT_PRUNE_EVERY_SECONDS = 3600.0


class ChoreLeases:
    """Leases on named chores: one holder at a time until ``expires_at``."""

    def __init__(self, database: Database, clock: Callable[[], float]):
        self._database = database
        self._clock = clock
        self.holder = secrets.token_hex(8)

    @transactional
    def take(self, name: str, seconds: float) -> bool:
        """Take (or renew) the lease on ``name`` for ``seconds``; whether this holder has it now."""
        now = self._clock()
        mine_or_free = (ChoreLease.name == name) & ((ChoreLease.holder == self.holder) | (ChoreLease.expires_at < now))
        if ChoreLease.update(holder=self.holder, expires_at=now + seconds).where(mine_or_free).execute():
            return True
        ChoreLease.insert(name=name, holder=self.holder, expires_at=now + seconds).on_conflict_ignore().execute()
        return self.holds(name)  # the first lease on it: ours, unless another process made it first

    def holds(self, name: str) -> bool:
        lease = ChoreLease.get_or_none(ChoreLease.name == name)
        return lease is not None and lease.holder == self.holder

    @transactional
    def give_up(self, name: str) -> None:
        ChoreLease.delete().where((ChoreLease.name == name) & (ChoreLease.holder == self.holder)).execute()


class PrivacyChores:
    """The thread (:meth:`start`, :meth:`stop`, :meth:`wake` when an erasure was asked for here), or
    one pass of its work (:meth:`run_once`)."""

    def __init__(
        self,
        database: Database,
        erasures: Erasures,
        retention: RetentionPolicies,
        audit: Audit,
        clock: Callable[[], float],
    ):
        self._database = database
        self._erasures = erasures
        self._retention = retention
        self._audit = audit
        self.leases = ChoreLeases(database, clock)
        self._woken = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0

    def run_once(self) -> bool:
        """If this process holds (or can take) the lease: start due retention runs, run every running
        erasure to its end (renewing the lease between steps; stopping when it is lost), and remove
        old audit entries once an hour. Whether it held the lease."""
        if not self.leases.take(PRIVACY, LEASE_SECONDS):
            return False
        self._retention.start_due()
        for erasure in self._erasures.running():
            self._erasures.finish(erasure.id, keep_going=self._keep_going)
            if not self.leases.holds(PRIVACY):
                return False
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + AUDIT_PRUNE_EVERY_SECONDS
            self._audit.remove_expired()
        return True

    def _keep_going(self) -> bool:
        return not self._stopped.is_set() and self.leases.take(PRIVACY, LEASE_SECONDS)

    def wake(self) -> None:
        self._woken.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="privacy-chores", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the step it is in, and hand the lease on at once."""
        self._stopped.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with self._database.connection():
                self.leases.give_up(PRIVACY)
        except peewee.PeeweeException as error:
            log.info("privacy chores: the lease is left to run out (%s)", error)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                with self._database.connection():
                    self.run_once()
            except (peewee.PeeweeException, BackendUnavailable) as error:  # away: the next round tries again
                log.warning("privacy chores: %s: %s", type(error).__name__, error)
            self._woken.wait(IDLE_SECONDS)
            self._woken.clear()
