"""The hot statements of one software's job table, as SQL text made once per table.

Every claim and every submit runs these; peewee's query builder costs more CPU per call than the
database spends running them, so they are written out here, in SQL that SQLite and MySQL/MariaDB
both take, with the database's own parameter marker and quoting. Everything rarer goes through
the models.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

from heartbeat.db.database import Database
from heartbeat.db.models import Image, Job, JobStatus, Stage, job_model, job_table_name

# On a cluster where every node takes writes: how many more candidates a claim reads than it takes,
# choosing among them at random, so that claims on different nodes rarely take the same job.
CLUSTER_SPREAD = 31
JOB_COLUMNS = (
    "image_id",
    "status",
    "info",
    "attempts",
    "claimed_at",
    "lease_expires_at",
    "finished_at",
    "error",
    "version",
    "claimed_version",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a claim reads of its software each time: what ``PATCH /v1/software/{name}`` may change
    (other processes of the API change it too)."""

    paused: bool
    version: str
    lease_seconds: int
    max_attempts: int
    recompute: bool  # whether the last new version reopened results of others (leases out then included)
    max_in_flight: int | None = None  # flow control (queue/flow.py): None, no limit
    rate_limit: int | None = None
    rate_window: int | None = None  # seconds

    @property
    def limited(self) -> bool:
        return self.max_in_flight is not None or self.rate_limit is not None


@dataclasses.dataclass(frozen=True)
class ClaimedJob:
    """A job a claim leased: what its worker needs to fetch, process and submit it."""

    image_id: str
    token: str
    attempt: int
    lease_expires_at: float
    version: str  # the software's version when claimed: the result of this lease is recorded under it


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A claimable job as the candidate query read it."""

    image_id: str
    status: str
    token: str | None
    attempts: int


def to_json(value: Any) -> str | None:
    """A value as the ``JsonTextField`` columns keep it."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


class JobTable:
    """SQL for one software's job table, as ``database`` takes it (``SKIP LOCKED`` where it has it)."""

    def __init__(self, software_name: str, database: Database):
        self.name = software_name
        self._database = database
        p = database.param
        table = database.quote(job_table_name(software_name))
        software = database.quote("software")
        # Not a subquery of the candidate query: its locking read would lock the software row too.
        self._settings = (
            f"SELECT paused, version, lease_seconds, max_attempts, recompute, max_in_flight, rate_limit, rate_window"
            f" FROM {software} WHERE id = {p}"
        )
        self._unlocked_candidates = (
            f"SELECT image_id, status, token, attempts FROM {table}"
            f" WHERE stage = {int(Stage.READY)} AND available_at <= {p}"
            f" ORDER BY sort_priority, uploaded_date, image_id LIMIT {p}"
        )
        self.candidates_sql = self._unlocked_candidates + (
            " FOR UPDATE SKIP LOCKED" if database.features.claims_hold_locks and database.features.mysql else ""
        )
        self._taking = (
            f"UPDATE {table} SET status = '{JobStatus.CLAIMED.value}', attempts = attempts + 1, claimed_at = {p},"
            f" lease_expires_at = {p}, available_at = {p}, claimed_version = {p}, error = NULL"
        )
        self._still_claimable = f"stage = {int(Stage.READY)} AND available_at <= {p}"
        self._any_claimable = f"SELECT 1 FROM {table} WHERE {self._still_claimable} LIMIT 1"
        unchanged = f"image_id = {p} AND status = {p} AND {self._still_claimable}"
        self._take_free = f"{self._taking}, token = {p} WHERE {unchanged} AND token IS NULL"
        self._take_expired = f"{self._taking}, token = {p} WHERE {unchanged} AND token = {p}"
        self._read = f"SELECT {', '.join(JOB_COLUMNS)}, token FROM {table} WHERE image_id"
        self._holding = f"SELECT image_id FROM {table} WHERE token IN "
        self._table = table
        self._p = p
        self._insert = (
            f"INSERT INTO {table} (image_id, uploaded_date, sort_priority, stage, status, error, finished_at) VALUES "
        )

    def insert_jobs(self, jobs: list[tuple[Image, Stage, JobStatus, str | None]]) -> None:
        """New images' jobs, in one statement: each (image, stage, status, error): pending (ready, or
        waiting on upstream jobs), or skipped at its upload (``error`` says why)."""
        if not jobs:
            return
        values: list[Any] = []
        for image, stage, status, error in jobs:
            finished_at = image.uploaded_date if status == JobStatus.SKIPPED else None
            values += (image.id, image.uploaded_date, -image.priority, int(stage), status.value, error, finished_at)
        marks = self._database.params(7)
        self._database.execute(self._insert + ", ".join(marks for _ in jobs), values)

    def settings(self, software_id: int, *, lock: str = "") -> Settings | None:
        """The software's settings as they are now (None: it is gone), read with ``lock`` (a
        :class:`~heartbeat.db.database.Features` lock suffix) when the transaction must hold them."""
        row = self._database.execute(self._settings + lock, (software_id,)).fetchone()
        if row is None:
            return None
        paused, version, lease_seconds, max_attempts, recompute, max_in_flight, rate_limit, rate_window = row
        return Settings(
            bool(paused), version, lease_seconds, max_attempts, bool(recompute), max_in_flight, rate_limit, rate_window
        )

    def candidates(self, now: float, limit: int) -> list[Candidate]:
        """Claimable jobs, highest priority then earliest upload first (the caller checks ``paused``).

        On a cluster where every node takes writes, a row lock is its node's alone, and a commit of
        another node that changed a row this transaction holds locked aborts it (a brute-force abort),
        whether or not this one would have changed that row. There the first ``limit +
        CLUSTER_SPREAD`` are read without a lock and ``limit`` of them chosen at random (in order),
        each then taken only if it is still as read (:meth:`take`): claims on two nodes meet only
        when they choose the same job, and the order holds to within that many jobs."""
        if not self._database.features.multi_writer:
            return [Candidate(*row) for row in self._database.execute(self.candidates_sql, (now, limit)).fetchall()]
        rows = self._database.execute(self._unlocked_candidates, (now, limit + CLUSTER_SPREAD)).fetchall()
        chosen = sorted(random.sample(range(len(rows)), min(limit, len(rows))))
        return [Candidate(*rows[index]) for index in chosen]

    def has_claimable(self, software_id: int, now: float) -> bool:
        """Whether an unpaused software has a job a claim would take now: two reads along indexes."""
        settings = self.settings(software_id)
        if settings is None or settings.paused:
            return False
        return self._database.execute(self._any_claimable, (now,)).fetchone() is not None

    def take(self, row: Candidate, token: str, now: float, lease_expires_at: float, version: str) -> bool:
        """Lease one job under ``version``, if it is still as ``row`` saw it (nobody took it meanwhile)."""
        params = [now, lease_expires_at, lease_expires_at, version, token, row.image_id, row.status, now]
        if row.token is None:
            return bool(self._database.execute(self._take_free, params).rowcount == 1)
        return bool(self._database.execute(self._take_expired, [*params, row.token]).rowcount == 1)

    def take_locked(
        self, rows: list[Candidate], tokens: list[str], now: float, lease_expires_at: float, version: str
    ) -> int:
        """Lease every job of ``rows`` in one statement; only for rows this transaction holds locked."""
        p = self._p
        cases = " ".join(f"WHEN {p} THEN {p}" for _ in rows)
        sql = (
            self._taking
            + f", token = CASE image_id {cases} END"
            + f" WHERE image_id IN ({', '.join(p for _ in rows)}) AND {self._still_claimable}"
        )
        params: list[Any] = [now, lease_expires_at, lease_expires_at, version]
        for row, token in zip(rows, tokens, strict=True):
            params += [row.image_id, token]
        params += [row.image_id for row in rows] + [now]
        return int(self._database.execute(sql, params).rowcount)

    def holding(self, tokens: list[str]) -> set[str]:
        """The images whose jobs these tokens hold."""
        sql = self._holding + self._database.params(len(tokens))
        return {row[0] for row in self._database.execute(sql, tokens).fetchall()}

    def store_results(self, results: list[tuple[str, str, Any]], now: float, *, late_error: str | None = None) -> int:
        """Mark jobs done in one statement, each only if its token holds it: ``(image_id, token, info)``.

        With ``late_error``, only jobs that failed with that error (a last lease that ran out: its
        worker's late result is still taken); else only claimed ones. Returns how many it marked.
        """
        p = self._p
        cases = " ".join(f"WHEN {p} THEN {p}" for _ in results)
        held = (
            f"status = '{JobStatus.FAILED.value}' AND error = {p}"
            if late_error
            else f"status = '{JobStatus.CLAIMED.value}'"
        )
        sql = (
            f"UPDATE {self._table} SET status = '{JobStatus.DONE.value}', stage = {int(Stage.FINISHED)}, error = NULL,"
            f" finished_at = {p}, version = claimed_version, info = CASE image_id {cases} END"
            f" WHERE image_id IN ({', '.join(p for _ in results)}) AND token = CASE image_id {cases} END AND {held}"
        )
        params: list[Any] = [now]
        for image_id, _token, info in results:
            params += [image_id, to_json(info)]
        params += [image_id for image_id, _token, _info in results]
        for image_id, token, _info in results:
            params += [image_id, token]
        if late_error:
            params.append(late_error)
        return int(self._database.execute(sql, params).rowcount)

    def read(self, image_id: str) -> Job | None:
        """The job row (with its token, for the caller to compare; never shown)."""
        return self.read_locked([image_id], lock="").get(image_id)

    def read_locked(self, image_ids: list[str], *, lock: str) -> dict[str, Job]:
        """These jobs' rows (those that exist), read with ``lock`` (a :class:`~heartbeat.db.database.Features`
        lock suffix): the rows a transaction is about to change, held until it ends."""
        sql = f"{self._read} IN {self._database.params(len(image_ids))}{lock}"
        model = job_model(self.name)
        jobs = {}
        for row in self._database.execute(sql, image_ids).fetchall():
            fields = dict(zip((*JOB_COLUMNS, "token"), row, strict=True))
            fields["info"] = None if fields["info"] is None else json.loads(fields["info"])
            jobs[fields["image_id"]] = model(**fields)
        return jobs
