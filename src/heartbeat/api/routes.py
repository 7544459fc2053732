"""Every route of the contract, in one table: ``ROUTES``, gathered from the resource modules that
declare each beside its resource (see :mod:`heartbeat.api.routing`)."""

from __future__ import annotations

from heartbeat.api import (
    blobs,
    dashboard,
    direct_uploads,
    events,
    exports,
    health,
    images,
    jobs,
    openapi,
    privacy,
    software,
    webhooks,
)
from heartbeat.api.routing import Route

ROUTES: list[Route] = [
    *dashboard.ROUTES,
    *health.ROUTES,
    *openapi.ROUTES,
    *exports.ROUTES,
    *images.ROUTES,
    *blobs.ROUTES,
    *direct_uploads.ROUTES,
    *software.ROUTES,
    *jobs.ROUTES,
    *events.ROUTES,
    *webhooks.ROUTES,
    *privacy.ROUTES,
]
