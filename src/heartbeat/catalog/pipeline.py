"""Pipelines: software that builds on other software, and software that only takes some origins.

A software may name upstream software in ``after``: its job for an image waits (``Stage.WAITING``)
until every upstream job for that image is ``done``, and is ``skipped`` once one of them is failed
or skipped. A software may name ``origins``: images of any other origin get a ``skipped`` job.

These are the graph's rules; the statements that move jobs through it are in ``queue/pipeline.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from heartbeat.db.models import Software
from heartbeat.errors import Refused

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
