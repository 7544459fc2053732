"""The typed answers of the API. Each is built from the JSON the server sends; fields the server
adds later are ignored, so an older SDK keeps working against a newer server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {field.name for field in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key in names}


class _FromJson:
    """``from_json``: the dataclass made from the fields of an answer it knows."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**_known_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class Image(_FromJson):
    """One stored picture: its row in the overview table."""

    id: str
    filename: str | None
    uploaded_date: float
    origin: str | None
    other_data: Any
    sha256: str
    size: int
    content_type: str | None = None
    width: int | None = None  # upright: after ``orientation`` (as every coordinate in a result)
    height: int | None = None
    # EXIF orientation of the bytes, 1 to 8 (None from a server older than the field); the bytes are
    # stored as uploaded, so a handler turns them upright with heartbeat.worker.open_upright.
    orientation: int | None = None
    priority: int = 0  # higher is claimed first
    jobs: dict[str, str] | None = None  # each software's status, where the answer includes it
    duplicate: bool | None = None  # on upload: the same bytes were stored before
    # In a claimed job of a software with ``after``: each upstream software's ``info`` for this image.
    upstream: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class SignedUrl:
    """A presigned GET URL for an image's bytes; it needs no token."""

    url: str
    expires_at: float


@dataclasses.dataclass(frozen=True)
class Software(_FromJson):
    """One kind of processing, with its job counts per status."""

    name: str
    lease_seconds: int
    max_attempts: int
    tables: dict[str, dict[str, str]]
    counts: dict[str, int]
    paused: bool = False
    after: list[str] = dataclasses.field(default_factory=list)  # upstream software
    origins: list[str] | None = None  # only images of these origins get a job
    throughput: dict[str, int] | None = None  # jobs done and failed in the last window_seconds
    version: str = "1"  # the current model; counts["outdated"]: done jobs with a result of another
    # Flow control: how many of its jobs may be claimed at once, across every server process (None:
    # no limit); how many may be handed out in any window, {"per_second" | "per_minute" | "per_hour": n}
    # (None: no limit); and how many are claimed now under a lease that has not run out.
    max_in_flight: int | None = None
    rate: dict[str, int] | None = None
    in_flight: int = 0

    @property
    def held_back(self) -> bool:
        """Whether its claims find no room now for want of ``max_in_flight`` while jobs are pending."""
        return (
            self.max_in_flight is not None
            and self.in_flight >= self.max_in_flight
            and self.counts.get("pending", 0) > 0
        )


@dataclasses.dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds under a lease: the token, the bytes' URL and the image record."""

    image_id: str
    token: str
    attempt: int
    lease_expires_at: float
    url: str
    url_expires_at: float
    image: Image  # with ``upstream`` filled in for a software with ``after``
    version: str = "1"  # the software's version when claimed: the result is recorded under it

    @property
    def upstream(self) -> dict[str, Any] | None:
        """For a software with ``after``: each upstream software's ``info`` for this image."""
        return self.image.upstream

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaimedJob:
        fields = _known_fields(cls, data)
        fields["image"] = Image.from_json(data["image"] | {"upstream": data.get("upstream")})
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim's answer: the jobs leased, and, when none were and the server had no room to let the
    claim wait, ``retry_after_seconds``: how long to wait before claiming again (its ``Retry-After``)."""

    jobs: list[ClaimedJob]
    retry_after_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Job(_FromJson):
    """A row of a software's job table (never its token)."""

    image_id: str
    status: str
    info: Any = None
    attempts: int = 0
    claimed_at: float | None = None
    lease_expires_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    version: str | None = None  # the software's version its result came from (None before the first)


@dataclasses.dataclass(frozen=True)
class Result:
    """One result for the batch submit: what the single submit would send."""

    image_id: str
    token: str
    info: Any
    rows: dict[str, list[dict[str, Any]]] | None = None

    def to_json(self) -> dict[str, Any]:
        body = {"image_id": self.image_id, "token": self.token, "info": self.info}
        if self.rows is not None:
            body["rows"] = self.rows
        return body


@dataclasses.dataclass(frozen=True)
class ResultOutcome(_FromJson):
    """How the batch submit judged one result: ``done``, ``stale`` (lease lost) or ``invalid``."""

    image_id: str
    status: str
    description: str | None = None


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; pass ``next_cursor`` back as ``cursor=`` for the next (``None``: the last)."""

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclasses.dataclass(frozen=True)
class Health:
    """Whether the API's database and object storage answer, and what failed if not."""

    ok: bool
    checks: dict[str, str]


@dataclasses.dataclass(frozen=True)
class EventPage:
    """One page of ``GET /v1/events``: the events (dicts as the API sends them: ``id``, ``type``,
    ``time``, ``software``?, ``image_id``?, ``data``) and the cursor to ask after next. When it is empty
    because the server had no room to let the request wait, ``retry_after_seconds`` says how long to
    wait before asking again (its ``Retry-After``)."""

    events: list[dict[str, Any]]
    next_cursor: str
    retry_after_seconds: float | None = None
