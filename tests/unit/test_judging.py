"""The judging of submitted results (``queue/judging.py``): which are stored, on time or late, which
are results stored already, and which are refused; and how the job counters move. No database."""

from __future__ import annotations

import pytest

from heartbeat.db.models import Job, JobStatus
from heartbeat.errors import NotFound, StaleToken
from heartbeat.queue.core import LEASE_EXPIRED, counted_as
from heartbeat.queue.judging import Judgement, PreparedResult, count_changes, judge

NOW = 1000.0


def job(image_id: str, status: JobStatus, token: str | None = "t", **fields: object) -> Job:
    return Job(image_id=image_id, status=status, token=token, attempts=1, claimed_version="1", **fields)


def result(image_id: str, token: str = "t", info: object = None) -> PreparedResult:
    return PreparedResult(image_id, token, info if info is not None else {"found": image_id}, [])


def test_a_claimed_job_under_the_results_token_is_stored_on_time_as_done_under_its_claimed_version():
    held = {"a": job("a", JobStatus.CLAIMED, claimed_at=900.0, lease_expires_at=1060.0)}
    judgement = judge("ocr", held, [result("a")], NOW)
    assert list(judgement.on_time) == ["a"] and judgement.late == {}
    [stored] = judgement.outcomes
    assert isinstance(stored, Job)
    assert (stored.status, stored.info, stored.finished_at, stored.version) == (
        JobStatus.DONE,
        {"found": "a"},
        NOW,
        "1",
    )
    assert (stored.claimed_at, stored.lease_expires_at, stored.attempts, stored.error) == (900.0, 1060.0, 1, None)


def test_a_job_whose_last_lease_ran_out_and_nobody_took_is_stored_late():
    held = {"a": job("a", JobStatus.FAILED, error=LEASE_EXPIRED)}
    judgement = judge("ocr", held, [result("a")], NOW)
    assert list(judgement.late) == ["a"] and judgement.on_time == {}
    assert judgement.outcomes[0].status == JobStatus.DONE


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        (job("a", JobStatus.CLAIMED, token="other"), StaleToken),  # another worker holds it now
        (job("a", JobStatus.FAILED, error="crashed"), StaleToken),  # failed by its worker: not taken back
        (job("a", JobStatus.FAILED, token="other", error=LEASE_EXPIRED), StaleToken),
        (job("a", JobStatus.SKIPPED), StaleToken),
        (None, NotFound),
    ],
)
def test_a_result_whose_token_no_longer_holds_its_job_or_of_no_job_is_refused_and_nothing_is_stored(held, expected):
    judgement = judge("ocr", {"a": held} if held is not None else {}, [result("a")], NOW)
    [outcome] = judgement.outcomes
    assert isinstance(outcome, expected)
    assert (judgement.on_time, judgement.late) == ({}, {})
    if expected is NotFound:
        assert str(outcome.description) == "ocr has no job for image 'a'"


@pytest.mark.parametrize("status", [JobStatus.DONE, JobStatus.PENDING])
def test_the_result_stored_already_is_answered_as_the_job_is_and_stored_again_never(status):
    """A retry after a lost COMMIT; pending: stored, then reopened by a new version."""
    held = {"a": job("a", status)}
    judgement = judge("ocr", held, [result("a")], NOW)
    assert judgement.outcomes == [held["a"]] and (judgement.on_time, judgement.late) == ({}, {})


def test_a_result_named_twice_in_a_batch_is_stored_once_and_the_other_token_is_stale():
    held = {"a": job("a", JobStatus.CLAIMED), "b": job("b", JobStatus.CLAIMED)}
    batch = [result("a"), result("a"), result("a", token="other"), result("b")]
    judgement = judge("ocr", held, batch, NOW)
    first, again, other, b = judgement.outcomes
    assert again is held["a"] and isinstance(other, StaleToken)
    assert isinstance(first, Job) and isinstance(b, Job)
    assert list(judgement.on_time) == ["a", "b"] and judgement.on_time["a"] is batch[0]


def test_counts_move_from_claimed_or_failed_to_done_under_the_claimed_version_or_back_to_pending():
    held = {
        "on-time": job("on-time", JobStatus.CLAIMED),
        "late": job("late", JobStatus.FAILED, error=LEASE_EXPIRED),
        "reopened": job("reopened", JobStatus.CLAIMED),
    }
    judgement = judge("ocr", held, [result(image_id) for image_id in held], NOW)
    changes = count_changes(judgement, held, reopened={"reopened"})
    open_, done, failed = counted_as(JobStatus.CLAIMED), counted_as(JobStatus.DONE, "1"), counted_as(JobStatus.FAILED)
    # claimed -> done, failed -> done, claimed -> pending (both "open": no change to count)
    assert changes == {open_: -1, done: 2, failed: -1}
    assert count_changes(Judgement(), {}, reopened=set()) == {}
