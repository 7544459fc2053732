"""Retention policies: pictures kept no longer than asked (GDPR art. 5(1)(e), storage limitation).

A policy is a name, a ``where`` expression and a maximum age. The chores thread
(``privacy/chores.py``) looks at each policy every ``HEARTBEAT_RETENTION_INTERVAL_SECONDS`` and starts
a retention run: an erasure (``privacy/erasure.py``) of the images the expression matches that were
uploaded more than ``max_age_seconds`` before, so an image is erased within one interval (and the
run's length) of coming due. A policy whose last run is still erasing starts no second one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import peewee

from heartbeat.catalog.registry import NAME_PATTERN, Registry
from heartbeat.db.database import Database, transactional
from heartbeat.db.models import Erasure, RetentionPolicy
from heartbeat.db.paging import NAME_ORDER, keyset_page
from heartbeat.errors import Conflict, InvalidInput, NotFound
from heartbeat.privacy import actions, audit
from heartbeat.privacy.erasure import RUNNING, Erasures

log = logging.getLogger(__name__)


def describe(policy: RetentionPolicy) -> dict[str, Any]:
    """``{"name", "where", "max_age_seconds", "created_at", "last_run_at"}`` (times: seconds since the
    epoch; ``last_run_at`` null before its first run)."""
    return {
        "name": policy.name,
        "where": policy.expression,
        "max_age_seconds": policy.max_age_seconds,
        "created_at": policy.created_at,
        "last_run_at": policy.last_run_at,
    }


class RetentionPolicies:
    def __init__(
        self,
        database: Database,
        registry: Registry,
        erasures: Erasures,
        clock: Callable[[], float],
        *,
        interval_seconds: float,
    ):
        self._database = database
        self._registry = registry
        self._erasures = erasures
        self._clock = clock
        self.interval_seconds = interval_seconds

    def add(self, name: str, expression: str, max_age_seconds: float) -> RetentionPolicy:
        """A new policy; :class:`InvalidInput` (400) for a bad name or expression, :class:`Conflict`
        (409) for a name taken."""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidInput(f"a policy's name must match {NAME_PATTERN.pattern}")
        self._registry.where(expression)  # 400 with the column of the fault
        policy = RetentionPolicy(
            name=name, expression=expression, max_age_seconds=max_age_seconds, created_at=self._clock()
        )
        try:
            self._insert(policy)
        except peewee.IntegrityError:
            raise Conflict(f"a retention policy named {name!r} exists") from None
        return policy

    @transactional
    def _insert(self, policy: RetentionPolicy) -> None:
        policy.save(force_insert=True)

    def get(self, name: str) -> RetentionPolicy:
        policy = RetentionPolicy.get_or_none(RetentionPolicy.name == name)
        if policy is None:
            raise NotFound(f"no retention policy {name!r}")
        return policy

    def page(self, cursor: str | None, limit: int) -> tuple[list[RetentionPolicy], str | None]:
        return keyset_page(RetentionPolicy.select(), (RetentionPolicy.name,), NAME_ORDER, cursor, limit)

    def remove(self, name: str) -> None:
        """:class:`NotFound` (404) for an unknown name. A run it started goes on to its end."""
        if not RetentionPolicy.delete().where(RetentionPolicy.name == name).execute():
            raise NotFound(f"no retention policy {name!r}")

    def start_due(self) -> list[Erasure]:
        """Start a run of every policy not run for ``interval_seconds`` (none while its last one
        runs); the erasures started."""
        now = self._clock()
        due = RetentionPolicy.select().where(
            RetentionPolicy.last_run_at.is_null() | (RetentionPolicy.last_run_at <= now - self.interval_seconds)
        )
        started = []
        for policy in list(due.order_by(RetentionPolicy.name)):
            running = Erasure.select().where((Erasure.policy == policy.name) & (Erasure.status == RUNNING)).exists()
            if running:
                continue
            try:
                erasure = self._erasures.start(
                    expression=policy.expression, policy=policy.name, uploaded_before=now - policy.max_age_seconds
                )
            except InvalidInput as error:  # a software it names was removed since
                log.warning("retention policy %s cannot run: %s", policy.name, error)
                erasure = None
            self._ran(policy.name, now, erasure)
            if erasure is not None:
                started.append(erasure)
        return started

    @transactional
    def _ran(self, name: str, now: float, erasure: Erasure | None) -> None:
        RetentionPolicy.update(last_run_at=now).where(RetentionPolicy.name == name).execute()
        if erasure is not None:
            audit.write_entry(actions.RETENTION_RUN, now, token_id=None, policy=name, erasure_id=erasure.id)
