"""The resources of the route table, each made once from the app's collaborators, by the name the table uses."""

from __future__ import annotations

from collections.abc import Sequence

from heartbeat.api.blobs import SignedBlob
from heartbeat.api.dashboard import DASHBOARD_DIR, DOCS_POLICY, SWAGGER_UI_DIR, SWAGGER_UI_FILES, Page, StaticFiles
from heartbeat.api.exports import Export
from heartbeat.api.health import Health
from heartbeat.api.images import ImageCollection, ImageItem, UrlSigner
from heartbeat.api.jobs import BatchResults, Claim, JobCollection, JobItem
from heartbeat.api.openapi import OpenApi
from heartbeat.api.routes import ROUTES
from heartbeat.api.routes.table import Route
from heartbeat.api.software import ExtraTable, SoftwareCollection, SoftwareItem
from heartbeat.api.uploads import UploadCollection, UploadItem
from heartbeat.catalog.images import Catalog
from heartbeat.catalog.registry import Registry
from heartbeat.config import Settings
from heartbeat.db.database import Database
from heartbeat.ingest.direct_uploads import DirectUploads
from heartbeat.ingest.registration import Ingest
from heartbeat.metrics import Metrics, MetricsPage
from heartbeat.queue import JobQueue
from heartbeat.queue.waiting import WaitingClaims
from heartbeat.storage import Storage


def make_resources(
    *,
    settings: Settings,
    database: Database,
    storage: Storage,
    registry: Registry,
    queue: JobQueue,
    waiting: WaitingClaims,
    metrics: Metrics,
    catalog: Catalog,
    ingest: Ingest,
    uploads: DirectUploads,
    table: Sequence[Route] = ROUTES,
) -> dict[str, object]:
    """The resources ``add_routes`` serves ``table`` with; ``openapi`` documents ``table``."""
    signer = UrlSigner(storage, settings)
    return {
        "dashboard_page": Page("index.html"),
        "dashboard_files": StaticFiles(DASHBOARD_DIR),
        "docs_page": Page("docs.html", DOCS_POLICY),
        "docs_assets": StaticFiles(SWAGGER_UI_DIR, SWAGGER_UI_FILES),
        "openapi": OpenApi(table),
        "metrics_page": MetricsPage(metrics),
        "health": Health(database, storage),
        "image_collection": ImageCollection(ingest, catalog, registry, queue, signer, metrics),
        "image_item": ImageItem(catalog, registry, queue, signer, storage),
        "signed_blob": SignedBlob(storage, ingest),
        "upload_collection": UploadCollection(uploads, settings),
        "upload_item": UploadItem(uploads, metrics),
        "software_collection": SoftwareCollection(registry),
        "software_item": SoftwareItem(registry, queue),
        "claim": Claim(registry, queue, catalog, waiting, storage, settings, metrics),
        "batch_results": BatchResults(registry, queue, metrics),
        "job_collection": JobCollection(registry, queue),
        "job_item": JobItem(registry, queue, metrics),
        "extra_table": ExtraTable(registry),
        "export": Export(database, catalog, queue, registry),
    }
