"""Fetching an image's bytes from a presigned URL, and checking them against the image record."""

from __future__ import annotations

import hashlib

import requests

from heartbeat.worker.client import CONNECT_TIMEOUT_SECONDS, retrying_session
from heartbeat.worker.exceptions import ContentMismatch, ServerUnavailable, error_from_answer
from heartbeat.worker.models import ClaimedJob

# A session of its own, so that no API token ever goes to the storage host.
_downloads = retrying_session()


def fetch(url: str, *, timeout_seconds: float = 60.0) -> bytes:
    """The bytes at a presigned URL (it needs no token, and is sent none)."""
    try:
        response = _downloads.get(url, timeout=(CONNECT_TIMEOUT_SECONDS, timeout_seconds))
    except requests.RequestException as error:
        raise ServerUnavailable(f"could not fetch the image bytes: {error}") from error
    if response.status_code >= 400:
        raise error_from_answer(response.status_code, response.text)
    return response.content


def verified_bytes(job: ClaimedJob) -> bytes:
    """The image's bytes from the job's presigned URL, checked against the image record."""
    data = fetch(job.url)
    if len(data) != job.image.size:
        raise ContentMismatch(f"downloaded {len(data)} bytes, the image record says {job.image.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != job.image.sha256:
        raise ContentMismatch(f"downloaded bytes have sha256 {digest}, the image record says {job.image.sha256}")
    return data
