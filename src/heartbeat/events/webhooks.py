"""Webhooks: subscriptions to events, and one ``deliveries`` row per event each of them is to receive.

A sequencer pass hands its events to :meth:`Webhooks.fan_out` in its own transaction, so a delivery
row exists if and only if its event has a position; :mod:`heartbeat.events.delivery` sends them.
A webhook's URL obeys the rules of an upload by URL (:mod:`heartbeat.ingest.urlfetch`): no internal
address unless ``HEARTBEAT_URL_ALLOW`` allows it, checked here at creation and again at each send.
Its secret is a Standard Webhooks one (``whsec_`` and the base64 of 32 random bytes; the
specification asks for 24 to 64).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import peewee

from heartbeat.config import UrlAllowList
from heartbeat.db.database import Database, transactional
from heartbeat.db.models import Delivery, Event, Webhook
from heartbeat.db.paging import CursorGrammar, keyset_page
from heartbeat.errors import InvalidInput, NotFound, UrlRefused
from heartbeat.events.bell import Bell
from heartbeat.events.outbox import EVENT_TYPES
from heartbeat.events.sequencer import Sequenced
from heartbeat.ingest.urlfetch import AddressForbidden, Deadline, resolve_checked
from heartbeat.ingest.urlsyntax import check_url

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)
SECRET_BYTES = 32
RESOLVE_SECONDS = 5.0  # a URL's host must resolve within this, at creation
INSERT_CHUNK = 500
REPLAY_CHUNK = 1000  # events one replay statement reads
GONE = "event no longer kept"
WEBHOOK_ORDER = CursorGrammar(pattern="^[0-9a-f]{1,32}$", write=lambda key: key[0], read=lambda cursor: (cursor,))
POSITION_ORDER = CursorGrammar(pattern="^[0-9]{1,18}$", write=lambda key: str(key[0]), read=lambda c: (int(c),))


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` then the base64 of ``SECRET_BYTES`` random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def check_webhook_url(url: str, allow: UrlAllowList) -> None:
    """:class:`UrlRefused` (422) for a URL an upload by URL could not fetch: malformed, or a host that
    does not resolve or resolves to an internal address that ``allow`` does not allow."""
    check_url(url, what="the webhook's URL")
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with Deadline(RESOLVE_SECONDS) as deadline:
            resolve_checked(host, port, allow, deadline)
    except AddressForbidden as error:
        raise UrlRefused(str(error).replace("uploads by URL", "webhooks")) from None


def order_key(image_id: str | None, software: str | None) -> str:
    """What a webhook receives in order: one image's events, else one software's, else all the rest."""
    if image_id is not None:
        return image_id
    return f"software:{software}" if software is not None else ""


def matches(webhook: Webhook, type: str, software: str | None) -> bool:
    return (webhook.types is None or type in webhook.types) and (
        webhook.software is None or software == webhook.software
    )


def describe(webhook: Webhook, *, secret: bool = False) -> dict[str, Any]:
    """``{"id", "url", "types", "software", "created_at"}`` (``types`` null: every type; ``software``
    null: any), with ``"secret"`` when asked (at creation only)."""
    shown = {
        "id": webhook.id,
        "url": webhook.url,
        "types": webhook.types,
        "software": webhook.software,
        "created_at": webhook.created_at,
    }
    return shown | {"secret": webhook.secret} if secret else shown


def describe_delivery(delivery: Delivery) -> dict[str, Any]:
    """``{"event_id", "status", "attempts", "last_status_code", "last_error", "next_attempt_at"}``;
    ``next_attempt_at`` (seconds since the epoch) is null once the delivery is finished."""
    return {
        "event_id": str(delivery.position),
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": delivery.next_attempt_at if delivery.status == PENDING else None,
    }


class Webhooks:
    """The webhooks and their deliveries' rows (sending is :class:`~heartbeat.events.delivery.WebhookSender`'s)."""

    def __init__(self, database: Database, clock: Callable[[], float], allow: UrlAllowList):
        self._database = database
        self._clock = clock
        self._allow = allow
        self.made = Bell()  # rung when deliveries were made (a pass's, a replay's) and have committed

    # -- subscriptions ------------------------------------------------------------------------------

    def create(self, url: str, types: list[str] | None, software: str | None) -> Webhook:
        """A new webhook; raises what :func:`check_webhook_url` raises."""
        check_webhook_url(url, self._allow)
        webhook = Webhook(
            id=secrets.token_hex(8),
            url=url,
            types=_types(types),
            software=software,
            secret=new_secret(),
            created_at=self._clock(),
        )
        webhook.save(force_insert=True)
        return webhook

    def get(self, webhook_id: str) -> Webhook:
        """:class:`NotFound` (404) when there is no such webhook."""
        webhook = Webhook.get_or_none(Webhook.id == webhook_id)
        if webhook is None:
            raise NotFound(f"no webhook {webhook_id[:40]!r}")
        return webhook

    def page(self, cursor: str | None, limit: int) -> tuple[list[Webhook], str | None]:
        return keyset_page(Webhook.select(), (Webhook.id,), WEBHOOK_ORDER, cursor, limit)

    def change(self, webhook_id: str, changes: dict[str, Any]) -> Webhook:
        """Change ``url``, ``types`` or ``software`` (each optional; null types or software: all).
        :class:`NotFound` (404) before :class:`UrlRefused` (422)."""
        self.get(webhook_id)
        if "url" in changes:
            check_webhook_url(changes["url"], self._allow)
        fields: dict[Any, Any] = {}
        if "url" in changes:
            fields[Webhook.url] = changes["url"]
        if "types" in changes:
            fields[Webhook.types] = _types(changes["types"])
        if "software" in changes:
            fields[Webhook.software] = changes["software"]
        if fields and not Webhook.update(fields).where(Webhook.id == webhook_id).execute():
            self.get(webhook_id)  # gone meanwhile: 404; an update that changed nothing is no error
        return self.get(webhook_id)

    @transactional
    def delete(self, webhook_id: str) -> None:
        """The webhook and every delivery of it; :class:`NotFound` when there is none."""
        if not Webhook.delete().where(Webhook.id == webhook_id).execute():
            raise NotFound(f"no webhook {webhook_id[:40]!r}")
        Delivery.delete().where(Delivery.webhook_id == webhook_id).execute()

    # -- deliveries ---------------------------------------------------------------------------------

    def deliveries(
        self, webhook_id: str, status: str | None, cursor: str | None, limit: int
    ) -> tuple[list[Delivery], str | None]:
        """A page of the webhook's deliveries in event order, of ``status`` if given."""
        self.get(webhook_id)
        query = Delivery.select().where(Delivery.webhook_id == webhook_id)
        if status is not None:
            query = query.where(Delivery.status == status)
        return keyset_page(query, (Delivery.position,), POSITION_ORDER, cursor, limit)

    def fan_out(self, sequenced: list[Sequenced], now: float) -> None:
        """A sequencer listener: one pending delivery for each webhook and each of ``sequenced`` it
        wants, in the pass's transaction (the webhooks are read once a pass: a few rows)."""
        webhooks = list(Webhook.select(Webhook.id, Webhook.types, Webhook.software))
        if not webhooks:
            return
        rows = [
            _new_delivery(webhook.id, event.position, order_key(event.image_id, event.software), now)
            for event in sequenced
            for webhook in webhooks
            if matches(webhook, event.type, event.software)
        ]
        for chunk in peewee.chunked(rows, INSERT_CHUNK):
            Delivery.insert_many(chunk).execute()
        if rows:
            self._database.after_commit(self.made.ring)

    def replay(self, webhook_id: str, after: int, head: int) -> int:
        """Deliver again every kept event past position ``after`` (up to ``head``) that the webhook
        wants: its deliveries back to pending, as new, and the missing ones made. Returns how many."""
        replayed = 0
        while after < head:
            count, after = self._replay_chunk(webhook_id, after, head)
            replayed += count
        if replayed:
            self.made.ring()
        return replayed

    @transactional
    def _replay_chunk(self, webhook_id: str, after: int, head: int) -> tuple[int, int]:
        webhook = self.get(webhook_id)
        events: list[Any] = list(
            Event.select(Event.position, Event.type, Event.software, Event.image_id)
            .where((Event.position > after) & (Event.position <= head))
            .order_by(Event.position)
            .limit(REPLAY_CHUNK)
            .tuples()
        )
        if not events:
            return 0, head
        now = self._clock()
        wanted = {
            int(p): order_key(image_id, software)
            for p, type_, software, image_id in events
            if matches(webhook, type_, software)
        }
        existing: set[int] = set()
        for positions in peewee.chunked(sorted(wanted), INSERT_CHUNK):
            where = (Delivery.webhook_id == webhook_id) & Delivery.position.in_(positions)
            existing |= {int(row[0]) for row in Delivery.select(Delivery.position).where(where).tuples()}  # type: ignore[index]
            Delivery.update(
                status=PENDING,
                replays=Delivery.replays + 1,
                attempts=0,
                created_at=now,
                next_attempt_at=now,
                finished_at=None,
                last_status_code=None,
                last_error=None,
            ).where(where).execute()
        rows = [_new_delivery(webhook_id, p, key, now) for p, key in wanted.items() if p not in existing]
        for chunk in peewee.chunked(rows, INSERT_CHUNK):
            Delivery.insert_many(chunk).execute()
        last = int(events[-1][0])
        return len(wanted), (last if len(events) == REPLAY_CHUNK else head)

    def forget_removed(self, retained_after: int, now: float) -> None:
        """Retention: the events up to ``retained_after`` were removed. Their finished deliveries go;
        a pending one fails (:data:`GONE`)."""
        removed = Delivery.position <= retained_after
        Delivery.delete().where(removed & (Delivery.status != PENDING)).execute()  # a failed one shows a pass
        Delivery.update(status=FAILED, last_error=GONE, finished_at=now).where(
            removed & (Delivery.status == PENDING)
        ).execute()


def _types(types: Iterable[str] | None) -> list[str] | None:
    if types is None:
        return None
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"unknown event type {unknown[0]!r}: one of {', '.join(EVENT_TYPES)}")
    return sorted(set(types), key=EVENT_TYPES.index)


def _new_delivery(webhook_id: str, position: int, key: str, now: float) -> dict[str, Any]:
    return {
        "webhook_id": webhook_id,
        "position": position,
        "order_key": key,
        "status": PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }
