"""Pipelines: software that builds on other software, and software that only takes some origins.

A software may name upstream software in ``after``: its job for an image waits (``Stage.WAITING``)
until every upstream job for that image is ``done``, and is ``skipped`` once one of them is failed
or skipped. A software may name ``origins``: images of any other origin get a ``skipped`` job.

Every statement here is a set-based UPDATE over one software's table, with the upstream tables in
subqueries: settling a million waiting jobs after a registration costs a few statements, and
settling one image after a submit one or two per downstream software. On MySQL those subqueries
read with shared locks, so two upstream jobs of one image finishing at the same moment cannot both
miss each other (one of the two transactions waits, or is rolled back as a deadlock and retried).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from heartbeat.db.database import database_proxy, quoted
from heartbeat.db.models import Software, Stage, job_model
from heartbeat.errors import Refused

SKIPPED = "skipped"
UPSTREAM_PREFIX = "upstream "  # the error of a job skipped because of its upstream (not its origin)


def dependency_order(after: Mapping[str, Iterable[str]]) -> list[str]:
    """The names with every upstream before its downstream; :class:`Refused` (422) on a cycle."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "placed":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise Refused(f"the dependencies would form a cycle: {cycle}")
        state[name] = "visiting"
        for upstream in after.get(name, ()):
            visit(upstream, (*path, name))
        state[name] = "placed"
        order.append(name)

    for name in sorted(after):
        visit(name, ())
    return order


def check_dependencies(name: str, after: list[str], registered: Iterable[Software]) -> None:
    """``after`` names registered software, and adding ``name`` with it keeps the graph acyclic."""
    graph: dict[str, Iterable[str]] = {software.name: software.after for software in registered}
    unknown = sorted(set(after) - set(graph) - {name})
    if unknown:
        raise Refused(f"after names software that is not registered: {', '.join(unknown)}")
    dependency_order(graph | {name: after})


def skip_reason(software: Software, origin: str | None, skipped_upstream: set[str]) -> str | None:
    """Why a new image's job for ``software`` is skipped at once, or None."""
    if software.origins is not None and origin not in software.origins:
        return f"origin {origin!r} is not one of {software.name}'s origins"
    for upstream in software.after:
        if upstream in skipped_upstream:
            return f"{UPSTREAM_PREFIX}{upstream} skipped"
    return None


def downstream_closure(software: Software) -> list[Software]:
    """Every software that builds on ``software``, directly or not, upstream first.

    Derived from every software's ``after``, read afresh (one short statement, not a model query):
    a downstream software registered while this request ran must not miss the job it just finished.
    """
    sql = f"SELECT name, after FROM {quoted('software')}"
    after = {name: json.loads(upstream or "[]") for name, upstream in database_proxy.execute_sql(sql).fetchall()}
    reached: set[str] = set()
    frontier = [software.name]
    while frontier:
        upstream = frontier.pop()
        for name, names in after.items():
            if upstream in names and name not in reached:
                reached.add(name)
                frontier.append(name)
    if not reached:
        return []
    registered = {item.name: item for item in Software.select().where(Software.name.in_(reached))}
    graph = {name: [up for up in after[name] if up in reached] for name in reached}
    return [registered[name] for name in dependency_order(graph)]


def settle(software: Software, now: float, image_ids: list[str] | None = None) -> int:
    """Waiting jobs whose upstream jobs are all done become claimable; those with one failed or
    skipped are skipped. ``image_ids`` None: every image. Returns how many jobs changed."""
    if not software.after:
        return 0
    job = job_model(software.name)
    waiting = job.stage == Stage.WAITING
    if image_ids is not None:
        waiting &= job.image_id.in_(image_ids)
    changed = 0
    for upstream in software.after:
        up = job_model(upstream)
        for status in ("failed", SKIPPED):
            ended = up.select(up.image_id).where(up.status == status)
            if image_ids is not None:
                ended = ended.where(up.image_id.in_(image_ids))
            changes = {"status": SKIPPED, "stage": Stage.FINISHED, "finished_at": now}
            error = f"{UPSTREAM_PREFIX}{upstream} {status}"
            changed += job.update(error=error, **changes).where(waiting & job.image_id.in_(ended)).execute()
    ready = waiting
    for upstream in software.after:
        up = job_model(upstream)
        done = up.select(up.image_id).where(up.status == "done")
        if image_ids is not None:
            done = done.where(up.image_id.in_(image_ids))
        ready &= job.image_id.in_(done)
    changed += job.update(stage=Stage.READY, available_at=now).where(ready).execute()
    return changed


def settle_downstream(software: Software, now: float, image_ids: list[str]) -> int:
    """After jobs of ``software`` ended (done, failed or skipped): settle everything built on them."""
    return sum(settle(item, now, image_ids) for item in downstream_closure(software))


def reopen_downstream(software: Software, now: float, image_ids: list[str] | None) -> int:
    """After jobs of ``software`` went back to pending, or turned done after failing: jobs built on
    them that were skipped for it, or were ready but not yet claimed, wait again, and are settled."""
    changed = 0
    for item in downstream_closure(software):
        job = job_model(item.name)
        skipped = (job.status == SKIPPED) & job.error.startswith(UPSTREAM_PREFIX)
        unclaimed = (job.status == "pending") & (job.stage == Stage.READY)
        if image_ids is not None:
            skipped &= job.image_id.in_(image_ids)
            unclaimed &= job.image_id.in_(image_ids)
        reopened = {"status": "pending", "stage": Stage.WAITING, "error": None, "finished_at": None, "attempts": 0}
        changed += job.update(**reopened).where(skipped).execute()
        changed += job.update(stage=Stage.WAITING).where(unclaimed).execute()
        settle(item, now, image_ids)
    return changed
