"""Erasures: every trace of the images a ``where`` expression (or a list of IDs) matches, removed in
the background in bounded steps, with a receipt that survives a restart (GDPR art. 17).

An erasure is a row of ``erasures`` and the IDs it matched and has not erased yet (``erasure_items``).
:meth:`Erasures.step` does one bounded step, each its own short transaction, so that none holds the
database or a thread for long and a crash between two loses nothing:

1. matching: the next ``MATCH_BATCH`` images of the expression, oldest first, become items, and the
   cursor of the match moves past them in the same transaction (by-ID erasures are matched at once);
2. erasing: the next ``ERASE_BATCH`` items lose their bytes and thumbnails first, then every row
   (:meth:`~heartbeat.catalog.images.Catalog.delete_rows`: jobs, extra-table rows, import records,
   events' payloads, counts; unlike a ``DELETE``, not even the picture's sha256 is kept), the items
   and the receipt's ``erased`` in one transaction with the audit entry naming their IDs. A crash
   after the bytes went leaves rows that the next step removes, never bytes that nothing names;
3. done: the receipt's ``status`` is ``done``, ``finished_at`` set, and what said what it matched (the
   expression) is cleared: the receipt names no image, filename or origin.

Steps are guarded by compare-and-set on the erasure's row, so two processes running the same erasure
(a chore lease that ran out under one of them) erase nothing twice and count nothing twice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from heartbeat.catalog.images import Catalog
from heartbeat.catalog.registry import Registry
from heartbeat.db.database import Database, transactional
from heartbeat.db.models import Erasure, ErasureItem, Image
from heartbeat.db.paging import CursorGrammar, keyset_page
from heartbeat.errors import InvalidInput, NotFound
from heartbeat.privacy import actions, audit

log = logging.getLogger(__name__)

RUNNING, DONE = "running", "done"
MATCH_BATCH = 1000  # images one matching step reads
ERASE_BATCH = 500  # images one erasing step removes
MATCHED = "*"  # the match cursor once every matching image is an item
MAX_IDS = 1000  # image IDs one request may name
ERASURE_ORDER = CursorGrammar(pattern="^[0-9a-f]{1,32}$", write=lambda key: key[0], read=lambda cursor: (cursor,))


def describe(erasure: Erasure) -> dict[str, Any]:
    """The receipt: ``{"id", "status", "matched", "erased", "started_at", "finished_at", "policy"}``
    (``policy``: the retention policy whose run it is, else null). Times are seconds since the epoch."""
    return {
        "id": erasure.id,
        "status": erasure.status,
        "matched": erasure.matched,
        "erased": erasure.erased,
        "started_at": erasure.started_at,
        "finished_at": erasure.finished_at,
        "policy": erasure.policy,
    }


class Erasures:
    """Start erasures, read their receipts, and run them a step at a time (the chores thread does)."""

    def __init__(self, database: Database, catalog: Catalog, registry: Registry, clock: Callable[[], float]):
        self._database = database
        self._catalog = catalog
        self._registry = registry
        self._clock = clock

    def start(
        self,
        *,
        expression: str | None = None,
        image_ids: list[str] | None = None,
        token_id: str | None = None,
        policy: str | None = None,
        uploaded_before: float | None = None,
    ) -> Erasure:
        """A new running erasure of the images ``expression`` matches (uploaded before
        ``uploaded_before``, if given), or of the existing ones among ``image_ids``; recorded in the
        audit. Raises :class:`InvalidInput` (400) for an expression the query language refuses."""
        if (expression is None) == (image_ids is None):
            raise InvalidInput("give either `where` or `image_ids`")
        if expression is not None:
            self._registry.where(expression)  # 400 now, with the column of the fault
        return self._start(expression, image_ids, token_id, policy, uploaded_before)

    @transactional
    def _start(
        self,
        expression: str | None,
        image_ids: list[str] | None,
        token_id: str | None,
        policy: str | None,
        uploaded_before: float | None,
    ) -> Erasure:
        now = self._clock()
        erasure = Erasure(
            id=secrets.token_hex(8),
            status=RUNNING,
            expression=expression,
            uploaded_before=uploaded_before,
            started_at=now,
            token_id=token_id,
            policy=policy,
        )
        found: list[str] = []
        if image_ids is not None:
            wanted = sorted(set(image_ids))
            found = [image.id for image in Image.select(Image.id).where(Image.id.in_(wanted))] if wanted else []
            erasure.match_cursor, erasure.matched = MATCHED, len(found)
        erasure.save(force_insert=True)
        if found:
            ErasureItem.insert_many([{"erasure_id": erasure.id, "image_id": image_id} for image_id in found]).execute()
        by = "image_ids" if image_ids is not None else "where"
        detail: dict[str, Any] = {"erasure_id": erasure.id, "by": by}
        if policy is not None:
            detail["policy"] = policy
        audit.write_entry(actions.ERASURE, now, token_id=token_id, image_ids=found, **detail)
        return erasure

    def get(self, erasure_id: str) -> Erasure:
        erasure = Erasure.get_or_none(Erasure.id == erasure_id)
        if erasure is None:
            raise NotFound(f"no erasure {erasure_id!r}")
        return erasure

    def page(self, cursor: str | None, limit: int) -> tuple[list[Erasure], str | None]:
        """Erasures by ID, past ``cursor``."""
        return keyset_page(Erasure.select(), (Erasure.id,), ERASURE_ORDER, cursor, limit)

    def running(self) -> list[Erasure]:
        """The erasures not finished yet, oldest first."""
        return list(Erasure.select().where(Erasure.status == RUNNING).order_by(Erasure.started_at, Erasure.id))

    def finish(self, erasure_id: str, *, keep_going: Callable[[], bool] = lambda: True) -> Erasure:
        """Run the erasure's steps while ``keep_going()`` says so, until it is done; the receipt."""
        while keep_going() and self.step(erasure_id):
            pass
        return self.get(erasure_id)

    def step(self, erasure_id: str) -> bool:
        """One bounded step of a running erasure; False once it is done (or unknown). Raises
        :class:`~heartbeat.errors.BackendUnavailable` when the store or the database fails: the step
        is then to be run again."""
        erasure = Erasure.get_or_none(Erasure.id == erasure_id)
        if erasure is None or erasure.status != RUNNING:
            return False
        if erasure.match_cursor != MATCHED:
            self._match(erasure)
            return True
        items = [
            item.image_id
            for item in ErasureItem.select(ErasureItem.image_id)
            .where(ErasureItem.erasure_id == erasure_id)
            .order_by(ErasureItem.image_id)
            .limit(ERASE_BATCH)
        ]
        if not items:
            self._done(erasure_id)
            return False
        images = self._catalog.delete_objects(items)  # first: see the module's docstring
        self._erase_rows(erasure, items, images)
        return True

    def _match(self, erasure: Erasure) -> None:
        try:
            where = self._registry.where(erasure.expression)
        except InvalidInput as error:  # a software it names was removed since: nothing more matches
            log.warning("erasure %s: its expression no longer applies (%s): matching stops", erasure.id, error)
            images: list[Image] = []
            cursor = None
        else:
            images, cursor = self._catalog.page(
                origin=None, status=None, where=where, cursor=erasure.match_cursor, limit=MATCH_BATCH
            )
        before = erasure.uploaded_before
        if before is not None and any(image.uploaded_date >= before for image in images):
            images, cursor = [image for image in images if image.uploaded_date < before], None  # oldest first
        self._matched(erasure, [image.id for image in images], cursor or MATCHED)

    @transactional
    def _matched(self, erasure: Erasure, image_ids: list[str], cursor: str) -> None:
        moved = (
            Erasure.update(match_cursor=cursor, matched=Erasure.matched + len(image_ids))
            .where((Erasure.id == erasure.id) & _same_cursor(erasure.match_cursor))
            .execute()
        )
        if moved and image_ids:  # else another process made this step
            rows = [{"erasure_id": erasure.id, "image_id": image_id} for image_id in image_ids]
            ErasureItem.insert_many(rows).on_conflict_ignore().execute()

    @transactional
    def _erase_rows(self, erasure: Erasure, items: list[str], images: list[Image]) -> None:
        # Counted once: items another process took meanwhile are not ours to count.
        taken = ErasureItem.delete().where((ErasureItem.erasure_id == erasure.id) & ErasureItem.image_id.in_(items))
        count = int(taken.execute())
        present = sorted(image.id for image in images)
        self._catalog.delete_rows(
            list(Image.select().where(Image.id.in_(present))) if present else [], keep_digests=False
        )
        Erasure.update(erased=Erasure.erased + count).where(Erasure.id == erasure.id).execute()
        detail: dict[str, Any] = {"erasure_id": erasure.id}
        audit.write_entry(actions.IMAGES_ERASED, self._clock(), token_id=erasure.token_id, image_ids=items, **detail)

    @transactional
    def _done(self, erasure_id: str) -> None:
        Erasure.update(status=DONE, finished_at=self._clock(), expression=None, uploaded_before=None).where(
            (Erasure.id == erasure_id) & (Erasure.status == RUNNING)
        ).execute()


def _same_cursor(cursor: str | None) -> Any:
    return Erasure.match_cursor.is_null() if cursor is None else Erasure.match_cursor == cursor
