"""The worker SDK: a :class:`Client` for the Heartbeat API and a :class:`Worker` that runs a handler
on a software's jobs. It needs only ``requests`` (and requests-toolbelt, which streams uploads): a worker
machine never configures a server.

    from heartbeat.worker import Client, Worker

    def detect(image_bytes, image):
        return [{"x": 10, "y": 8, "w": 20, "h": 20}]

    Worker(Client("http://api:8080", token="..."), "face_detection", detect, concurrency=4).run()

Every coordinate a handler reports is in the upright picture (after the image's EXIF ``orientation``):
``open_upright(image_bytes, image)`` decodes it so with Pillow.
"""

from heartbeat.worker.client import Client
from heartbeat.worker.events import EventFollower
from heartbeat.worker.exceptions import (
    Conflict,
    ContentMismatch,
    CursorExpired,
    Forbidden,
    HeartbeatError,
    InvalidRequest,
    LeaseLost,
    NotFound,
    ServerError,
    ServerUnavailable,
    Unauthorized,
)
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
from heartbeat.worker.pictures import open_upright
from heartbeat.worker.runner import Handler, Worker

__all__ = [
    "Claim",
    "ClaimedJob",
    "Client",
    "Conflict",
    "ContentMismatch",
    "CursorExpired",
    "EventFollower",
    "EventPage",
    "Forbidden",
    "Handler",
    "Health",
    "HeartbeatError",
    "Image",
    "InvalidRequest",
    "Job",
    "LeaseLost",
    "NotFound",
    "Page",
    "Result",
    "ResultOutcome",
    "ServerError",
    "ServerUnavailable",
    "SignedUrl",
    "Software",
    "Unauthorized",
    "Worker",
    "open_upright",
]
