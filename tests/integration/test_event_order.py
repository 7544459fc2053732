"""The outbox's classic trap, shown and cured: an event's ID is taken at insert, not at commit, so
a transaction that took a lower ID may commit after one with a higher ID. A reader that pages by ID
passes the lower one and never sees it; a reader that pages by position does not, because a
position is given only to committed events."""

from __future__ import annotations

import threading

import pytest

from heartbeat.db.models import Event
from heartbeat.events.feed import EventFeed, EventFilter
from heartbeat.events.outbox import IMAGE_DELETED, Outbox
from heartbeat.events.sequencer import Sequencer


@pytest.fixture
def parts(database, clock):
    outbox = Outbox(database, clock)
    sequencer = Sequencer(database, outbox, clock, retain_seconds=3600)
    return outbox, sequencer, EventFeed(database, sequencer)


def test_an_event_whose_transaction_commits_after_a_later_id_is_not_skipped(database, parts):
    if not database.features.mysql:
        pytest.skip("SQLite: one write transaction at a time, so IDs come in commit order there")
    outbox, _sequencer, feed = parts
    inserted, commit = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with database.connection():

            def write() -> None:
                outbox.add(IMAGE_DELETED, {"id": "slow"}, image_id="slow")
                inserted.set()
                assert commit.wait(30)

            database.transaction(write)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert inserted.wait(30)
    with database.connection():
        database.transaction(outbox.add, IMAGE_DELETED, {"id": "fast"}, image_id="fast")
        # The naive reader: by ID. It sees "fast" (the higher ID) and moves its cursor past "slow".
        naive = list(Event.select().where(Event.id > 0).order_by(Event.id))
        assert [event.image_id for event in naive] == ["fast"]
        naive_cursor = naive[-1].id
        # Ours: by position.
        first, cursor = feed.page(feed.position(None), EventFilter(), 100)
        assert [event["image_id"] for event in first] == ["fast"]
    commit.set()
    thread.join()
    with database.connection():
        assert [e.image_id for e in Event.select().where(Event.id > naive_cursor)] == [], "the naive reader lost it"
        later, _ = feed.page(feed.position(str(cursor)), EventFilter(), 100)
        assert [event["image_id"] for event in later] == ["slow"]
        assert int(later[0]["id"]) > cursor


def test_a_pass_sequences_only_what_has_committed_and_the_next_takes_the_rest(database, parts):
    outbox, sequencer, feed = parts
    with database.connection():
        for name in ("a", "b", "c"):
            database.transaction(outbox.add, IMAGE_DELETED, {"id": name}, image_id=name)
        assert sequencer.run_once() == 3
        assert sequencer.run_once() == 0
        events, cursor = feed.page(0, EventFilter(), 100)
        assert [event["image_id"] for event in events] == ["a", "b", "c"]
        assert cursor == sequencer.head() == int(events[-1]["id"])


def test_a_read_waits_for_a_pass_in_progress_and_sees_what_committed_before_it(database, parts):
    """A reader sees its own writes: while another pass (of another thread or process) holds the lock
    and its snapshot predates an event, a read neither skips that pass's work nor answers without the
    event; it waits for the pass and runs one of its own."""
    if not database.features.mysql:
        pytest.skip("SQLite: one write transaction at a time, so no pass runs beside a read")
    outbox, _sequencer, feed = parts
    holding, release = threading.Event(), threading.Event()

    def other_pass() -> None:
        with database.connection():

            def hold() -> None:
                database.execute("SELECT value FROM event_state WHERE name = 'position' FOR UPDATE")
                holding.set()
                assert release.wait(30)

            database.transaction(hold)

    with database.connection():
        start = feed.position(None)
    thread = threading.Thread(target=other_pass)
    thread.start()
    assert holding.wait(30)
    answers: dict[str, list] = {}

    def reader() -> None:
        with database.connection():
            database.transaction(outbox.add, IMAGE_DELETED, {"id": "mine"}, image_id="mine")
            answers["page"] = feed.page(feed.position(str(start)), EventFilter(), 100)[0]

    read = threading.Thread(target=reader)
    read.start()
    # The reader's pass waits for the lock: it has not answered 2 s into the other pass's hold (its lock
    # wait is not always listed in information_schema.innodb_trx, so its thread is what is watched).
    read.join(2)
    assert read.is_alive(), f"the read answered without waiting: {answers}"
    release.set()
    thread.join()
    read.join(30)
    assert [event["image_id"] for event in answers["page"]] == ["mine"]
