"""The wake-ups of waiting claims in one process: a wake meant for one claim wakes that one, and the
line of claims waiting at a limit hands jobs only to claims that wait in it."""

from __future__ import annotations

import threading

from heartbeat.queue.signal import Place, WaitingClaim, WorkSignal
from heartbeat.queue.statements import ClaimedJob

WAIT = 30  # seconds: far past what any wait here takes when it works


def job(image_id: str) -> ClaimedJob:
    return ClaimedJob(image_id, f"token-{image_id}", 1, 0.0, "1")


def waiting_threads(signal: WorkSignal, count: int, claims: list[WaitingClaim] | None = None) -> list[threading.Thread]:
    """``count`` threads waiting for software "s" (each with its claim, when given), started and
    waiting when this returns; each records in ``woken`` whether it was woken."""
    generation = signal.generation("s")
    threads = []
    for number in range(count):
        claim = claims[number] if claims else None
        thread = threading.Thread(target=lambda claim=claim: signal.wait("s", generation, WAIT, claim), daemon=True)
        thread.start()
        threads.append(thread)
    while sum(len(waiters) for waiters in signal._waiters.values()) < count:  # they are in wait()
        threading.Event().wait(0.001)
    return threads


def test_wake_one_wakes_exactly_one_waiter_and_notify_wakes_them_all():
    signal = WorkSignal()
    threads = waiting_threads(signal, 3)
    signal.wake_one("s")
    threads[0].join(WAIT)
    assert not threads[0].is_alive(), "the first waiter is woken"
    assert all(thread.is_alive() for thread in threads[1:]), "and only it"
    signal.notify("other")
    assert all(thread.is_alive() for thread in threads[1:]), "work for another software wakes none"
    signal.notify("s")
    for thread in threads[1:]:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_jobs_handed_to_a_claim_wake_its_thread_alone():
    signal = WorkSignal()
    claims = [WaitingClaim("s", 1, None), WaitingClaim("s", 1, None)]
    for claim in claims:
        signal.join(claim)
    threads = waiting_threads(signal, 2, claims)
    [(taken, count)] = signal.take("s", 1)
    assert (taken, count, taken.place) == (claims[0], 1, Place.TAKEN)
    signal.settle({taken: [job("a")]})
    threads[0].join(WAIT)
    assert not threads[0].is_alive() and threads[1].is_alive()
    assert signal.leave(claims[0]) == [job("a")] and claims[0].place is Place.OUT
    assert signal.take("s", 5) == [(claims[1], 1)]
    signal.settle({claims[1]: []})  # rolled back, or nothing left to claim: back at the front of the line
    assert claims[1].place is Place.IN_LINE and threads[1].is_alive()
    assert signal.leave(claims[1]) == [] and signal.take("s", 1) == []
    signal.notify()
    threads[1].join(WAIT)


def test_a_claim_leaving_while_a_hand_over_holds_it_waits_for_the_outcome():
    """A waiting claim whose time is up while a submit's transaction is leasing jobs for it must not
    answer empty: the jobs would be leased to nobody until their lease ran out."""
    signal = WorkSignal()
    claim = WaitingClaim("s", 2, None)
    signal.join(claim)
    [(taken, count)] = signal.take("s", 3)
    assert count == 2, "no more than the claim wants"
    left: list[list[ClaimedJob]] = []
    leaving = threading.Thread(target=lambda: left.append(signal.leave(claim)), daemon=True)
    leaving.start()
    leaving.join(0.05)
    assert leaving.is_alive(), "it waits while the hand-over holds it"
    signal.settle({taken: [job("a"), job("b")]})
    leaving.join(WAIT)
    assert left == [[job("a"), job("b")]]


def test_claims_are_taken_first_come_first_served_up_to_the_jobs_freed():
    signal = WorkSignal()
    claims = [WaitingClaim("s", wanted, None) for wanted in (2, 1, 3)]
    for claim in claims:
        signal.join(claim)
    assert signal.take("s", 3) == [(claims[0], 2), (claims[1], 1)]
    assert signal.take("s", 1) == [(claims[2], 1)]
    signal.settle({claims[0]: [], claims[1]: []})
    assert signal.take("s", 9) == [(claims[0], 2), (claims[1], 1)], "settled empty: back in front, in order"
