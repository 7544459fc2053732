"""``Client``: one method for every route of the Heartbeat API, on ``requests``.

Connection errors and 503 answers are retried with a bounded exponential backoff (urllib3's
``Retry``); a 4xx never is. Errors come out as the exceptions of :mod:`heartbeat.worker.exceptions`.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from heartbeat import __version__
from heartbeat.worker.download import Downloads
from heartbeat.worker.events import EventFollower
from heartbeat.worker.exceptions import HeartbeatError, ServerUnavailable, error_from_answer
from heartbeat.worker.models import (
    Claim,
    ClaimedJob,
    EventPage,
    Health,
    Image,
    Job,
    Page,
    Result,
    ResultOutcome,
    SignedUrl,
    Software,
)
from heartbeat.worker.upload_body import UploadBody

T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 10
FileLike = str | os.PathLike[str] | bytes | IO[bytes]


class _Retry(Retry):
    """Retries what the server did not do: a connection refused, or a 503 (its transaction was rolled
    back), on any route. An answer lost after the request went out is retried only where sending it
    again changes nothing (GET, PUT of a result, DELETE): a claim sent twice would lease jobs that
    nobody holds, a registration sent twice would answer 409."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        return super().is_retry("GET", status_code, has_retry_after)  # 503s: whatever the method


def retry_policy(retries: int = 4, backoff_seconds: float = 0.5, max_backoff_seconds: float = 8.0) -> Retry:
    """Connection errors and 503s retried, never another status (see :class:`_Retry`).

    The first retry goes at once, the next after ``2 * backoff_seconds``, then 4 *, 8 * ...,
    each wait at most ``max_backoff_seconds`` (or what a 503's ``Retry-After`` asks).
    """
    return _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=0,
        status_forcelist={503},
        allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),  # for lost answers
        backoff_factor=backoff_seconds,
        backoff_max=max_backoff_seconds,
        raise_on_status=False,  # the last 503 comes back as an answer and becomes ServerUnavailable
    )


def retrying_session(
    retries: int = 4, backoff_seconds: float = 0.5, max_backoff_seconds: float = 8.0
) -> requests.Session:
    """A session that retries as :func:`retry_policy` says."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry_policy(retries, backoff_seconds, max_backoff_seconds), pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"heartbeat-worker/{__version__}"
    return session


def _settle_environment(session: requests.Session, url: str) -> None:
    """Take what the environment says about reaching ``url`` (a proxy, a CA bundle) once, now, where
    requests would read it again on every request: that reading cost a worker more CPU than the rest
    of a claim. A login in ~/.netrc is no longer looked up: it would replace the bearer token, the one
    credential the API takes."""
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.trust_env = False


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(quote(part, safe="") for part in parts)


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` in delta-seconds (RFC 9110); None when absent or not a number of seconds."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


class _Keep(enum.Enum):
    """The default of :meth:`Client.update`'s limits: leave the limit as it is (None lifts it)."""

    KEEP = "keep"


KEEP = _Keep.KEEP
RATE_UNITS = {"s": "per_second", "min": "per_minute", "h": "per_hour"}
Rate = dict[str, int] | str


def rate_body(rate: Rate | None) -> dict[str, int] | None:
    """A rate as the API takes it: ``{"per_minute": 30}`` as it is, or ``"30/min"`` (``/s``,
    ``/min``, ``/h``) made so; None (no limit) stays None. A string of another form: ValueError."""
    if rate is None or isinstance(rate, dict):
        return rate
    count, _slash, unit = rate.partition("/")
    if unit not in RATE_UNITS or not count.strip().isdigit():
        raise ValueError(f"a rate is N/s, N/min or N/h, or a dict such as {{'per_minute': 30}}: not {rate!r}")
    return {RATE_UNITS[unit]: int(count)}


def _comma_separated(values: str | Sequence[str] | None) -> str | None:
    return values if values is None or isinstance(values, str) else ",".join(values)


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class Client:
    """The Heartbeat API at ``api_url``, with an optional bearer ``token``.

    ``timeout_seconds`` bounds each answer (a long-polling claim gets its ``wait_seconds`` on top),
    and each read of a download. A connection error or a 503 is retried ``retries`` times with an
    exponential backoff (see :func:`retry_policy`) before :class:`ServerUnavailable` is raised; a 4xx
    never is. Downloads from presigned URLs go through pools of the client's own, retried alike.
    :meth:`close` (or leaving a ``with`` block) closes every connection.
    """

    def __init__(
        self,
        api_url: str,
        token: str | None = None,
        *,
        timeout_seconds: float = 30.0,
        retries: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
    ):
        self.api_url = api_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._session = retrying_session(retries, backoff_seconds, max_backoff_seconds)
        _settle_environment(self._session, self.api_url)
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._downloads = Downloads(
            retry_policy(retries, backoff_seconds, max_backoff_seconds),
            urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=timeout_seconds),
        )

    def close(self) -> None:
        """Close the connections to the API and to the storage hosts."""
        self._session.close()
        self._downloads.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, job_route: bool = False, wait_seconds: float = 0, **options: Any
    ) -> requests.Response:
        options.setdefault("timeout", (CONNECT_TIMEOUT_SECONDS, self.timeout_seconds + wait_seconds))
        try:
            response = self._session.request(method, self.api_url + path, **options)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ServerUnavailable(f"no answer from {self.api_url}: {_cause(error)}") from error
        except requests.RequestException as error:
            raise HeartbeatError(f"{method} {self.api_url + path}: {error}") from error
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            retry_after = _seconds(response.headers.get("Retry-After"))
            raise error_from_answer(response.status_code, body, job_route=job_route, retry_after=retry_after)
        return response

    def _json(self, method: str, path: str, **options: Any) -> Any:
        return self._request(method, path, **options).json()

    @staticmethod
    def iterate(list_method: Callable[..., Page[T]], *args: Any, **kwargs: Any) -> Iterator[T]:
        """Every item of a paged list, page after page: ``client.iterate(client.images, origin="x")``."""
        cursor = kwargs.pop("cursor", None)
        while True:
            page = list_method(*args, cursor=cursor, **kwargs)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # --- operations -------------------------------------------------------------------------

    def health(self) -> Health:
        """Whether the database and the object storage answer now (``ok=False`` naming what failed).

        Asked once, without retries and without the token (the route needs none).
        """
        url = self.api_url + "/v1/health"
        try:
            response = requests.get(url, timeout=(CONNECT_TIMEOUT_SECONDS, self.timeout_seconds))
        except requests.RequestException as error:
            raise ServerUnavailable(f"no answer from {self.api_url}: {_cause(error)}") from error
        if response.status_code not in (200, 503):
            raise error_from_answer(response.status_code, response.text)
        return Health(ok=response.status_code == 200, checks=response.json().get("checks", {}))

    # --- images -----------------------------------------------------------------------------

    def upload(
        self,
        file: FileLike,
        *,
        filename: str | None = None,
        origin: str | None = None,
        other_data: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> Image:
        """Upload bytes, a file object (from where it stands) or the file at a path; ``duplicate`` is
        set when the bytes were stored before.

        The file is streamed, a chunk at a time, and read again from where it stood if the request is
        retried. A file object that cannot seek (a pipe) is read whole first, so that a retry can send it again.
        """
        form = _params(
            origin=origin,
            other_data=json.dumps(other_data) if other_data is not None else None,
            priority=str(priority) if priority is not None else None,
        )
        with contextlib.ExitStack() as opened:
            if isinstance(file, str | os.PathLike):
                path = Path(file)
                stream: IO[bytes] = opened.enter_context(path.open("rb"))
                filename = filename or path.name
            elif isinstance(file, bytes):
                stream = io.BytesIO(file)
            else:
                seekable = getattr(file, "seekable", None)
                stream = file if seekable is not None and seekable() else io.BytesIO(file.read())
                name = getattr(file, "name", None)  # a file opened on a descriptor is named by its number
                filename = filename or (os.path.basename(name) if isinstance(name, str | os.PathLike) else None)
            body = UploadBody(form, filename or "upload", stream)
            answer = self._json("POST", "/v1/images", data=body, headers={"Content-Type": body.content_type})
        return Image.from_json(answer)

    def upload_url(
        self,
        url: str,
        *,
        origin: str | None = None,
        other_data: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> Image:
        """Have the server fetch an image from ``url`` and store it."""
        body = {"url": url} | _params(origin=origin, other_data=other_data, priority=priority)
        return Image.from_json(self._json("POST", "/v1/images", json=body))

    def images(
        self,
        *,
        origin: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Image]:
        """One page of images, oldest first; ``status`` is ``"<software>:<status>"``."""
        params = _params(origin=origin, status=status, limit=limit, cursor=cursor)
        body = self._json("GET", "/v1/images", params=params)
        return Page([Image.from_json(item) for item in body["images"]], body.get("next_cursor"))

    def image(self, image_id: str) -> Image:
        """One image, with each software's job status in ``jobs``."""
        return Image.from_json(self._json("GET", _path("images", image_id)))

    def image_url(self, image_id: str) -> SignedUrl:
        """A presigned GET URL for the image's bytes."""
        body = self._json("GET", _path("images", image_id, "url"))
        return SignedUrl(body["url"], body["expires_at"])

    def content_url(self, image_id: str) -> str:
        """Where ``GET /v1/images/{id}/content`` redirects to (without following it)."""
        response = self._request("GET", _path("images", image_id, "content"), allow_redirects=False)
        return response.headers["Location"]

    def download(self, image_id: str) -> bytes:
        """The image's bytes, fetched from its presigned URL (which is sent no token)."""
        return self.fetch(self.image_url(image_id).url)

    def fetch(self, url: str) -> bytes:
        """The bytes at a presigned URL (a claimed job's ``url``, or :meth:`image_url`'s), sent no token.

        Connection errors and 503s are retried as the API's are, and redirects followed.
        """
        return self._downloads.fetch(url)

    def set_priority(self, image_id: str, priority: int) -> Image:
        """Change an image's priority (admin): its pending jobs are claimed in the new order."""
        return Image.from_json(self._json("PATCH", _path("images", image_id), json={"priority": priority}))

    def delete_image(self, image_id: str) -> None:
        """Delete the image, its jobs, its extra-table rows and its bytes (admin)."""
        self._request("DELETE", _path("images", image_id))

    # --- software ---------------------------------------------------------------------------

    def software_list(self) -> list[Software]:
        """Every registered software, with its job counts, by name: page after page of :meth:`software_page`."""
        return list(self.iterate(self.software_page))

    def software_page(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Software]:
        """One page of the registered software, by name, with their job counts."""
        body = self._json("GET", "/v1/software", params=_params(limit=limit, cursor=cursor))
        return Page([Software.from_json(item) for item in body["software"]], body.get("next_cursor"))

    def software(self, name: str) -> Software:
        """One software, with its job counts."""
        return Software.from_json(self._json("GET", _path("software", name)))

    def register(
        self,
        name: str,
        *,
        lease_seconds: int | None = None,
        max_attempts: int | None = None,
        tables: dict[str, dict[str, str]] | None = None,
        after: Sequence[str] | None = None,
        origins: Sequence[str] | None = None,
        version: str | None = None,
        max_in_flight: int | None = None,
        rate: Rate | None = None,
    ) -> Software:
        """Register a software (admin); every stored image gets a job. ``version``: its model (``"1"``).

        ``after``: upstream software whose jobs must be done first; ``origins``: only these origins.
        ``max_in_flight``: how many of its jobs may be claimed at once, across every server process
        and machine; ``rate``: how many may be handed out in any second, minute or hour,
        ``{"per_minute": 30}`` or ``"30/min"`` (``/s``, ``/h``). None: no limit.
        """
        body = {"name": name} | _params(
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            tables=tables,
            after=list(after) if after is not None else None,
            origins=list(origins) if origins is not None else None,
            version=version,
            max_in_flight=max_in_flight,
            rate=rate_body(rate),
        )
        return Software.from_json(self._json("POST", "/v1/software", json=body))

    def update(
        self,
        name: str,
        *,
        version: str | None = None,
        recompute: bool = True,
        lease_seconds: int | None = None,
        max_attempts: int | None = None,
        paused: bool | None = None,
        max_in_flight: int | _Keep | None = KEEP,
        rate: Rate | _Keep | None = KEEP,
    ) -> Software:
        """Change a software's settings (admin). A new ``version`` reopens the done jobs whose result came
        from another version, unless ``recompute`` is False; each keeps its last result until the new one.

        ``max_in_flight`` and ``rate`` (as :meth:`register` takes them) change its limits at once, for
        every claim from then on; None lifts a limit, and a limit not given stays as it is.
        """
        body = _params(version=version, lease_seconds=lease_seconds, max_attempts=max_attempts, paused=paused)
        if version is not None and not recompute:
            body["recompute"] = False
        if not isinstance(max_in_flight, _Keep):
            body["max_in_flight"] = max_in_flight
        if not isinstance(rate, _Keep):
            body["rate"] = rate_body(rate)
        return Software.from_json(self._json("PATCH", _path("software", name), json=body))

    def pause(self, name: str) -> Software:
        """Pause a software (admin): its claims find no jobs until it is resumed."""
        return Software.from_json(self._json("POST", _path("software", name, "pause")))

    def resume(self, name: str) -> Software:
        """Resume a paused software (admin)."""
        return Software.from_json(self._json("POST", _path("software", name, "resume")))

    def requeue(self, name: str, status: str, image_ids: Sequence[str] | None = None) -> int:
        """Put ``failed`` or ``done`` jobs back to pending (admin); returns how many."""
        body = {"status": status} | _params(image_ids=list(image_ids) if image_ids is not None else None)
        return int(self._json("POST", _path("software", name, "requeue"), json=body)["requeued"])

    def rows(
        self,
        name: str,
        table: str,
        *,
        image_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:
        """One page of a software's extra-table rows, each with its ``id`` and ``image_id``."""
        params = _params(image_id=image_id, limit=limit, cursor=cursor)
        body = self._json("GET", _path("software", name, "tables", table), params=params)
        return Page(body["rows"], body.get("next_cursor"))

    # --- jobs -------------------------------------------------------------------------------

    def claim(
        self, name: str, max: int = 1, *, lease_seconds: int | None = None, wait_seconds: float = 0
    ) -> list[ClaimedJob]:
        """Lease up to ``max`` jobs, earliest upload first, waiting up to ``wait_seconds`` for one."""
        return self.claim_jobs(name, max, lease_seconds=lease_seconds, wait_seconds=wait_seconds).jobs

    def claim_jobs(
        self, name: str, max: int = 1, *, lease_seconds: int | None = None, wait_seconds: float = 0
    ) -> Claim:
        """As :meth:`claim`, with the server's ``Retry-After`` when it had no room to let the claim wait."""
        body = {"max": max, "wait_seconds": wait_seconds} | _params(lease_seconds=lease_seconds)
        response = self._request("POST", _path("software", name, "claim"), json=body, wait_seconds=wait_seconds)
        jobs = [ClaimedJob.from_json(item) for item in response.json()["jobs"]]
        return Claim(jobs, _seconds(response.headers.get("Retry-After")))

    def extend(self, name: str, image_id: str, token: str, *, lease_seconds: int | None = None) -> float:
        """Renew the lease; returns its new expiry. :class:`LeaseLost` when the token no longer holds it."""
        body = {"token": token} | _params(lease_seconds=lease_seconds)
        path = _path("software", name, "jobs", image_id, "extend")
        return float(self._json("POST", path, json=body, job_route=True)["lease_expires_at"])

    def submit(
        self, name: str, image_id: str, token: str, info: Any, rows: dict[str, list[dict[str, Any]]] | None = None
    ) -> Job:
        """Store the result (and extra-table rows); the job is then ``done``."""
        body = {"token": token, "info": info} | _params(rows=rows)
        path = _path("software", name, "jobs", image_id, "result")
        return Job.from_json(self._json("PUT", path, json=body, job_route=True))

    def submit_many(self, name: str, results: Sequence[Result]) -> list[ResultOutcome]:
        """Submit up to 100 results at once; each is judged ``done``, ``stale`` or ``invalid``."""
        body = {"results": [result.to_json() for result in results]}
        answer = self._json("POST", _path("software", name, "results"), json=body, job_route=True)
        return [ResultOutcome.from_json(item) for item in answer["results"]]

    def fail(
        self,
        name: str,
        image_id: str,
        token: str,
        error: str,
        *,
        retry: bool = True,
        retry_after: float | None = None,
    ) -> Job:
        """Report that the job failed: pending again after a backoff while attempts remain, else ``failed``."""
        body = {"token": token, "error": error, "retry": retry} | _params(retry_after=retry_after)
        path = _path("software", name, "jobs", image_id, "fail")
        return Job.from_json(self._json("POST", path, json=body, job_route=True))

    def release(self, name: str, image_id: str, token: str) -> Job:
        """Give the job back at once, the attempt not counted."""
        path = _path("software", name, "jobs", image_id, "release")
        return Job.from_json(self._json("POST", path, json={"token": token}, job_route=True))

    def jobs(
        self,
        name: str,
        *,
        status: str | None = None,
        version: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        """One page of the software's job rows, optionally of one ``status`` and result ``version``."""
        params = _params(status=status, version=version, limit=limit, cursor=cursor)
        body = self._json("GET", _path("software", name, "jobs"), params=params)
        return Page([Job.from_json(item) for item in body["jobs"]], body.get("next_cursor"))

    def job(self, name: str, image_id: str) -> Job:
        """One job row."""
        return Job.from_json(self._json("GET", _path("software", name, "jobs", image_id)))

    # --- events -----------------------------------------------------------------------------

    def events_page(
        self,
        after: str | None = None,
        *,
        types: str | Sequence[str] | None = None,
        software: str | None = None,
        limit: int | None = None,
        wait_seconds: float = 0,
    ) -> EventPage:
        """One page of the events after the cursor ``after`` (an event's ``id``, a ``next_cursor``, or
        ``"now"``; None: the oldest kept), in commit order, waiting up to ``wait_seconds`` (at most 20)
        for one. ``types``: only these (a list, or comma separated); ``software``: only its events.
        :class:`CursorExpired` (410) for a cursor older than the events kept."""
        params = _params(
            after=after,
            types=_comma_separated(types),
            software=software,
            limit=limit,
            wait_seconds=wait_seconds or None,
        )
        response = self._request("GET", "/v1/events", params=params, wait_seconds=wait_seconds)
        body = response.json()
        return EventPage(body["events"], body["next_cursor"], _seconds(response.headers.get("Retry-After")))

    def events(
        self,
        after: str | None = None,
        types: str | Sequence[str] | None = None,
        software: str | None = None,
        wait_seconds: float = 20,
        *,
        limit: int | None = None,
        follow: bool = True,
    ) -> EventFollower:
        """Every event after the cursor ``after``, one dict at a time, each once, following
        ``next_cursor`` with long polls of ``wait_seconds``; an iterator that never ends unless
        ``follow`` is False (then it ends once it has caught up). Connection errors and 5xx answers are
        waited out (backoff, or the server's ``Retry-After``) and asked again; a 4xx is raised, a 410
        as :class:`CursorExpired` (start again without a cursor). The iterator's ``cursor`` is where to
        resume from::

            feed = client.events(after=saved, types=["job.done"])
            for event in feed:
                handle(event)
                saved = feed.cursor  # store it: pass it back as after= to miss nothing
        """

        def fetch(cursor: str | None, wait: float) -> EventPage:
            return self.events_page(cursor, types=types, software=software, limit=limit, wait_seconds=wait)

        return EventFollower(
            fetch,
            after,
            follow=follow,
            wait_seconds=wait_seconds,
            backoff_seconds=self._backoff_seconds,
            max_backoff_seconds=self._max_backoff_seconds,
        )


def _cause(error: requests.RequestException) -> str:
    """What went wrong at the bottom of a requests error, in a few words (``[Errno 111] Connection
    refused``, ``timed out``), rather than urllib3's pool and retry wrappers around it."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "reason", None) or (cause.args[0] if cause.args else None)
        if not isinstance(inner, BaseException):
            break
        cause = inner
    text = str(cause)
    return text.rpartition("Failed to establish a new connection: ")[2] or text
