"""Every route of the contract, in one table."""

from __future__ import annotations

import falcon
import peewee

from heartbeat.api.blobs import SignedBlob
from heartbeat.api.dashboard import add_dashboard
from heartbeat.api.health import Health
from heartbeat.api.images import ImageCollection, ImageItem, UrlSigner
from heartbeat.api.jobs import BatchResults, Claim, JobCollection, JobItem
from heartbeat.api.openapi import OpenApi
from heartbeat.api.software import ExtraTable, SoftwareCollection, SoftwareItem
from heartbeat.api.uploads import UploadCollection, UploadItem
from heartbeat.catalog import Catalog
from heartbeat.config import Settings
from heartbeat.ingest import Ingest
from heartbeat.metrics import Metrics, MetricsPage
from heartbeat.queue import JobQueue
from heartbeat.queue.waiting import WaitingClaims
from heartbeat.registry import Registry
from heartbeat.storage import Storage
from heartbeat.uploads import DirectUploads


def add_routes(
    app: falcon.App,
    *,
    settings: Settings,
    database: peewee.Database,
    storage: Storage,
    registry: Registry,
    queue: JobQueue,
    waiting: WaitingClaims,
    metrics: Metrics,
    catalog: Catalog,
    ingest: Ingest,
    uploads: DirectUploads,
) -> None:
    signer = UrlSigner(storage, settings)
    image = ImageItem(catalog, registry, queue, signer)
    software = SoftwareItem(registry, queue)
    job = JobItem(registry, queue, metrics)

    add_dashboard(app)
    app.add_route("/openapi.json", OpenApi())
    app.add_route("/metrics", MetricsPage(metrics))
    app.add_route("/v1/health", Health(database, storage))
    app.add_route("/v1/images", ImageCollection(ingest, catalog, registry, queue, signer, metrics))
    app.add_route("/v1/images/{image_id}", image)
    app.add_route("/v1/images/{image_id}/url", image, suffix="url")
    app.add_route("/v1/images/{image_id}/content", image, suffix="content")
    app.add_route("/v1/images/{image_id}/thumbnail", image, suffix="thumbnail")
    app.add_route("/v1/blobs/{key:path}", SignedBlob(storage, ingest))
    app.add_route("/v1/uploads", UploadCollection(uploads, settings))
    app.add_route("/v1/uploads/{upload_id}/complete", UploadItem(uploads, metrics), suffix="complete")

    app.add_route("/v1/software", SoftwareCollection(registry))
    app.add_route("/v1/software/{name}", software)
    app.add_route("/v1/software/{name}/requeue", software, suffix="requeue")
    app.add_route("/v1/software/{name}/pause", software, suffix="pause")
    app.add_route("/v1/software/{name}/resume", software, suffix="resume")
    app.add_route("/v1/software/{name}/claim", Claim(registry, queue, waiting, storage, settings, metrics))
    app.add_route("/v1/software/{name}/results", BatchResults(registry, queue, metrics))
    app.add_route("/v1/software/{name}/jobs", JobCollection(registry))
    app.add_route("/v1/software/{name}/jobs/{image_id}", job)
    app.add_route("/v1/software/{name}/jobs/{image_id}/extend", job, suffix="extend")
    app.add_route("/v1/software/{name}/jobs/{image_id}/result", job, suffix="result")
    app.add_route("/v1/software/{name}/jobs/{image_id}/fail", job, suffix="fail")
    app.add_route("/v1/software/{name}/jobs/{image_id}/release", job, suffix="release")
    app.add_route("/v1/software/{name}/tables/{table}", ExtraTable(registry))
