"""Direct hand-off: a submit that frees room at a software's ``max_in_flight`` leases a job, in its own
transaction, to the claim that has waited longest in this process.

Woken after the submit commits, a waiting claim would take the freed room in a transaction of its own:
the slot would stay empty for a thread switch and that transaction's commit (a log flush). Handed over
instead, the lease that ends and the one that begins commit together, so the number of live leases
never rises (a submit hands over at most as many jobs as it ended leases, and none past the limit as
its transaction reads it) and no moment passes with the room unused. The waiting claim answers with
the jobs handed to it as if it had claimed them. Claims waiting in other processes are found by their
watcher, as before; a software with a ``rate`` is left to its claims, which count handouts under
the flow lock (``flow.py``).
"""

from __future__ import annotations

from heartbeat.db.models import Software
from heartbeat.queue.claims import ClaimOutcome, Claims
from heartbeat.queue.core import QueueCore, QueuePart
from heartbeat.queue.flow import FlowControl
from heartbeat.queue.signal import WaitingClaim
from heartbeat.queue.statements import ClaimedJob, Settings


class Handoffs(QueuePart):
    """Hands the room freed by submits to the claims waiting in this process's line
    (:meth:`WorkSignal.join`)."""

    def __init__(self, core: QueueCore, claims: Claims, flow: FlowControl):
        super().__init__(core)
        self._claims = claims
        self._flow = flow

    def hand_over(self, software: Software, settings: Settings, freed: int, now: float) -> int:
        """Lease up to ``freed`` jobs (as many leases as this transaction ended) to the claims first in
        line for ``software``; they get them when this transaction commits, and go back to the front
        of the line if it rolls back. Returns how many jobs were handed over. Call in the transaction
        that ended the leases, after it did."""
        if settings.paused or settings.max_in_flight is None or settings.rate_limit is not None:
            return 0
        taken = self.signal.take(software.name, freed)
        if not taken:
            return 0
        handed: dict[WaitingClaim, list[ClaimedJob]] = {claim: [] for claim, _jobs in taken}
        self._database.after_rollback(lambda: self.signal.settle({claim: [] for claim in handed}))
        self._database.after_commit(lambda: self.signal.settle(handed))
        # The leases this transaction ended are not counted here: it sees its own changes.
        room = min(freed, settings.max_in_flight - self._flow.in_flight(software, now))
        for claim, jobs in taken:
            if room <= 0:
                break
            outcome = ClaimOutcome()
            self._claims.lease(
                software, settings, min(jobs, room), now, claim.lease_seconds, outcome, fail_expired=False
            )
            handed[claim] = outcome.jobs
            room -= len(outcome.jobs)
            if not outcome.jobs:
                break  # nothing left to claim
        return sum(len(jobs) for jobs in handed.values())
