"""Peewee models: the overview table, the software registry, and the tables made per software.

A software's job table is ``job_<name>``; its extra tables are ``ext_<software id>_<table>``.
Both are built on demand from the registry row and cached by table name.
"""

from __future__ import annotations

import enum
import json
import threading
from typing import TYPE_CHECKING, Any

import peewee

if TYPE_CHECKING:
    from heartbeat.db.database import Database

# The models' database: bound once by :func:`heartbeat.db.connect.connect` (see :func:`bind_models`).
database_proxy = peewee.DatabaseProxy()


class JsonTextField(peewee.TextField):
    """Any JSON value, kept as text (LONGTEXT on MySQL)."""

    field_type = "JSONTEXT"

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Image(BaseModel):
    """The overview table: one row per stored picture."""

    id = peewee.CharField(max_length=32, primary_key=True)
    filename = peewee.CharField(max_length=255)
    uploaded_date = peewee.DoubleField(index=True)
    origin = peewee.CharField(max_length=255, null=True)
    other_data = JsonTextField(null=True)
    sha256 = peewee.CharField(max_length=64, unique=True)
    size = peewee.BigIntegerField()
    content_type = peewee.CharField(max_length=64)
    width = peewee.IntegerField()  # upright: after ``orientation``
    height = peewee.IntegerField()
    # Where the bytes are: the store's own key, or an imported object's locator s3://BUCKET/KEY (a
    # bucket name has at most 63 characters, a key at most 1,024 bytes: AWS S3, "Naming Amazon S3 objects").
    storage_key = peewee.CharField(max_length=1100)
    priority = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
    # EXIF orientation, 1 to 8. NULL: not read yet, in a row stored before the column existed (or by a
    # server of that release still running): the migration at start reads it, and the upright size,
    # from the bytes (heartbeat/db/orientation_backfill.py). No default, so that such a row cannot pass for upright.
    orientation = peewee.SmallIntegerField(null=True)

    class Meta:
        table_name = "images"
        # Listings read in upload order along an index, all images or those of one origin; the
        # migration at start finds the rows it has to read along (orientation).
        indexes = (
            (("uploaded_date", "id"), False),
            (("origin", "uploaded_date", "id"), False),
            (("orientation",), False),
        )


DEFAULT_VERSION = "1"


class Software(BaseModel):
    """The registry: one row per kind of processing."""

    id = peewee.AutoField()
    name = peewee.CharField(max_length=48, unique=True)
    lease_seconds = peewee.IntegerField()
    max_attempts = peewee.IntegerField()
    tables = JsonTextField(default=dict)
    created_at = peewee.DoubleField()
    paused = peewee.BooleanField(default=False, constraints=[peewee.SQL("DEFAULT 0")])
    after = JsonTextField(default=list)  # upstream software: a job waits until theirs are done
    origins = JsonTextField(null=True)  # only images of these origins get a job; None: every image
    # The model whose results are current; a new one reopens the done jobs of the others.
    version = peewee.CharField(max_length=64, default=DEFAULT_VERSION, constraints=[peewee.SQL("DEFAULT '1'")])
    # Whether that version reopens the results of others: the ``recompute`` of the change that set it. A
    # result of a lease taken under an older version, coming in after the change, is reopened on arrival.
    recompute = peewee.BooleanField(default=True, constraints=[peewee.SQL("DEFAULT 1")])
    # Flow control (queue/flow.py): at most this many of its jobs claimed at once (None: no limit), and
    # at most ``rate_limit`` handed out in any ``rate_window`` seconds (1, 60 or 3600; None: no limit).
    max_in_flight = peewee.IntegerField(null=True)
    rate_limit = peewee.IntegerField(null=True)
    rate_window = peewee.IntegerField(null=True)

    class Meta:
        table_name = "software"


class ApiToken(BaseModel):
    """An API token: only the sha256 of its secret is kept. ``id`` is the first 16 hex digits of that hash."""

    id = peewee.CharField(max_length=16, primary_key=True)
    secret_sha256 = peewee.CharField(max_length=64)
    role = peewee.CharField(max_length=16)
    software = peewee.CharField(max_length=48, null=True)
    name = peewee.CharField(max_length=255, null=True)
    created_at = peewee.DoubleField()
    revoked_at = peewee.DoubleField(null=True, index=True)

    class Meta:
        table_name = "api_tokens"


class JobStatus(enum.StrEnum):
    """A job's status, as the API shows it and the job tables keep it."""

    PENDING = "pending"  # waiting to be claimed (or for its upstream jobs, or for a retry's backoff)
    CLAIMED = "claimed"  # leased to a worker until ``lease_expires_at``
    DONE = "done"  # its result is stored
    FAILED = "failed"  # out of attempts, or failed for good by its worker
    SKIPPED = "skipped"  # never to run: an origin its software does not take, or an upstream job that did not finish


class Stage(enum.IntEnum):
    """Where a job stands in its queue; the claim reads only ``READY`` jobs."""

    READY = 0  # pending or claimed: in the claim's range of the index
    WAITING = 1  # pending until every upstream job of its image is done
    FINISHED = 2  # done, failed or skipped


class JobCount(BaseModel):
    """Maintained job counts: how many jobs of a software have a status, kept in ``COUNT_SLOTS``
    rows per (software, status) that transactions pick among at random, and summed on read, so that
    concurrent claims seldom wait on the same row (the counters are changed by ``queue/counts.py``)."""

    software = peewee.CharField(max_length=48)
    status = peewee.CharField(max_length=80)  # a counter: "open", "failed", "skipped", "done@<version>"
    slot = peewee.SmallIntegerField()
    count = peewee.BigIntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])

    class Meta:
        table_name = "job_counts"
        primary_key = peewee.CompositeKey("software", "status", "slot")


class Upload(BaseModel):
    """A direct upload handed out by ``POST /v1/uploads``: its bytes wait under ``uploads/<id>``
    until ``POST /v1/uploads/<id>/complete`` checks them and turns them into an image."""

    id = peewee.CharField(max_length=32, primary_key=True)
    filename = peewee.CharField(max_length=255, null=True)
    created_at = peewee.DoubleField()
    expires_at = peewee.DoubleField(index=True)

    class Meta:
        table_name = "uploads"

    @property
    def storage_key(self) -> str:
        return f"uploads/{self.id}"


DELETED_OUTCOME = "deleted"  # an import record whose picture was deleted through the API (ImportedObject.outcome)


class ImportedObject(BaseModel):
    """What ``heartbeat import`` has seen of one object of a source: a run reads only objects whose
    (size, version) it has no record of, and lists the recorded ones that are gone.

    ``id`` is the sha256 (hex) of ``source`` and ``key`` with a newline between them, so that the
    database's primary key keeps two imports of one source at once from recording an object twice
    whatever the length of its key. ``outcome`` is ``new`` (``image_id`` is the image the object
    became), ``duplicate`` (``image_id`` is the image its bytes were already), ``refused`` (no
    image; ``refused`` says why) or ``deleted`` (its picture was deleted through the API: no image,
    and none again while the object is unchanged; ``key`` is blank, as a name may name a person).
    """

    id = peewee.CharField(max_length=64, primary_key=True)
    source = peewee.CharField(max_length=255)  # s3://BUCKET/PREFIX, or a folder's absolute path
    key = peewee.TextField()  # the object's storage key (s3://BUCKET/KEY), or its path in the folder
    size = peewee.BigIntegerField()
    version = peewee.CharField(max_length=255)  # the ETag, else the modification time (ns), as listed
    outcome = peewee.CharField(max_length=16)
    image_id = peewee.CharField(max_length=32, null=True, index=True)
    refused = peewee.TextField(null=True)
    seen_at = peewee.DoubleField()  # when a run last listed it (or recorded it)

    class Meta:
        table_name = "imported_objects"
        # A run finds the records it did not list along (source, id), a page at a time. Not along
        # seen_at: a run marks every record it lists, and an index of seen_at made that ten times dearer.
        indexes = ((("source", "id"), False),)


class DeletedPicture(BaseModel):
    """The sha256 (hex) of a picture deleted through the API: ``heartbeat import`` registers no object
    with these bytes again. A digest is not the picture: nothing else of it is kept."""

    sha256 = peewee.CharField(max_length=64, primary_key=True)
    deleted_at = peewee.DoubleField()

    class Meta:
        table_name = "deleted_pictures"


class PendingImage(BaseModel):
    """An image ID that ``heartbeat import`` reserved before it stored that image's objects (its bytes
    under ``images/``, its thumbnail): until the image's row commits (which removes this one in the
    same transaction), ``heartbeat check`` counts them as owned, whatever their age on disk (a hard
    link keeps its file's old modification time)."""

    id = peewee.CharField(max_length=32, primary_key=True)
    reserved_at = peewee.DoubleField()

    class Meta:
        table_name = "pending_images"


class FlowLock(BaseModel):
    """One row per software with a limit: the claims of that software lock it, so that they read the
    room left one at a time (queue/flow.py). Not the software's own row, which submits read shared."""

    software = peewee.CharField(max_length=48, primary_key=True)

    class Meta:
        table_name = "flow_locks"


class Handout(BaseModel):
    """Jobs handed out by one claim of a software with a rate: ``count`` at ``at`` (seconds since the
    epoch). A claim sums those of the window before it; older rows are removed as claims go."""

    id = peewee.BigAutoField()
    software = peewee.CharField(max_length=48)
    at = peewee.DoubleField()
    count = peewee.IntegerField()

    class Meta:
        table_name = "handouts"
        indexes = ((("software", "at"), False),)


class AuditEntry(BaseModel):
    """One access to picture bytes or results in bulk, or one deletion, erasure, retention run or token
    change (``privacy/audit.py``). Only ever inserted, and removed past its retention: no route changes
    one. ``detail`` holds IDs, counts and names of ours, never a filename or an origin."""

    id = peewee.BigAutoField()
    time = peewee.DoubleField(index=True)
    token_id = peewee.CharField(max_length=16, null=True, index=True)
    action = peewee.CharField(max_length=32)
    image_ids = JsonTextField()
    detail = JsonTextField()

    class Meta:
        table_name = "audit_entries"


class AuditImage(BaseModel):
    """Which entries name an image: ``GET /v1/audit?image_id=`` reads along this key."""

    image_id = peewee.CharField(max_length=32)
    entry_id = peewee.BigIntegerField()

    class Meta:
        table_name = "audit_images"
        primary_key = peewee.CompositeKey("image_id", "entry_id")
        indexes = ((("entry_id",), False),)  # retention removes an entry's rows with it


class RetentionPolicy(BaseModel):
    """Images matching ``expression`` (a ``where`` of the query language) and uploaded more than ``max_age_seconds`` ago
    are erased by the server (``privacy/retention.py``)."""

    name = peewee.CharField(max_length=48, primary_key=True)
    expression = peewee.TextField()
    max_age_seconds = peewee.DoubleField()
    created_at = peewee.DoubleField()
    last_run_at = peewee.DoubleField(null=True)

    class Meta:
        table_name = "retention_policies"


class Erasure(BaseModel):
    """An erasure and its receipt (``privacy/erasure.py``). While it runs, ``expression`` (its
    ``where``; or the IDs it was given, as ``erasure_items`` rows) and ``uploaded_before`` say what
    it matches, and ``match_cursor`` how far the matching went (NULL: not begun; ``MATCHED``: done);
    once finished they are cleared, and the receipt names no image, filename or origin."""

    id = peewee.CharField(max_length=32, primary_key=True)
    status = peewee.CharField(max_length=16)
    expression = peewee.TextField(null=True)
    uploaded_before = peewee.DoubleField(null=True)
    match_cursor = peewee.TextField(null=True)
    matched = peewee.BigIntegerField(default=0)
    erased = peewee.BigIntegerField(default=0)
    started_at = peewee.DoubleField()
    finished_at = peewee.DoubleField(null=True)
    token_id = peewee.CharField(max_length=16, null=True)
    policy = peewee.CharField(max_length=48, null=True)  # a retention run's: its policy

    class Meta:
        table_name = "erasures"
        indexes = ((("status", "started_at"), False),)


class ErasureItem(BaseModel):
    """An image a running erasure matched and has not erased yet."""

    erasure_id = peewee.CharField(max_length=32)
    image_id = peewee.CharField(max_length=32)

    class Meta:
        table_name = "erasure_items"
        primary_key = peewee.CompositeKey("erasure_id", "image_id")


class ChoreLease(BaseModel):
    """Which server process runs a cluster-wide chore (``privacy/chores.py``) until ``expires_at``."""

    name = peewee.CharField(max_length=32, primary_key=True)
    holder = peewee.CharField(max_length=32)
    expires_at = peewee.DoubleField()

    class Meta:
        table_name = "chore_leases"


class Event(BaseModel):
    """The outbox: one row per change a consumer may act on, written in the change's transaction.

    ``id`` is taken at insert, so IDs do not come in commit order; ``position`` is given once the row
    has committed, by the one sequencer pass running at a time (``events/sequencer.py``), and readers
    page along it. NULL: committed (or about to) and not yet sequenced."""

    id = peewee.BigAutoField()
    position = peewee.BigIntegerField(null=True)
    type = peewee.CharField(max_length=32)
    time = peewee.DoubleField()
    software = peewee.CharField(max_length=48, null=True)
    image_id = peewee.CharField(max_length=32, null=True, index=True)
    data = JsonTextField()

    class Meta:
        table_name = "events"
        # Unsequenced rows (position NULL) in insert order, and the sequenced ones in their order.
        indexes = ((("position", "id"), False),)


class EventState(BaseModel):
    """The sequencer's small state, by name: ``position`` (the last position given; its row is the
    lock that lets one sequencer pass run at a time), ``retained_after`` (positions up to this one were
    removed as older than the retention), ``open:<software>`` (1 when the software had pending or
    claimed jobs at the last pass, 0 when not: a change to 0 is ``software.drained``)."""

    name = peewee.CharField(max_length=64, primary_key=True)
    value = peewee.BigIntegerField()

    class Meta:
        table_name = "event_state"


class Webhook(BaseModel):
    """A webhook subscription: events of ``types`` (None: all) and of ``software`` (None: any) are
    POSTed to ``url``, signed with ``secret`` (Standard Webhooks' ``whsec_`` form). ``next_attempt_at``
    holds every delivery of a receiver that did not answer; ``lease_expires_at`` is the lease of the
    server thread sending its deliveries (one at a time, so that one image's events arrive in order)."""

    id = peewee.CharField(max_length=32, primary_key=True)
    url = peewee.CharField(max_length=2048)
    types = JsonTextField(null=True)
    software = peewee.CharField(max_length=48, null=True)
    secret = peewee.CharField(max_length=128)
    created_at = peewee.DoubleField()
    next_attempt_at = peewee.DoubleField(default=0)
    lease_expires_at = peewee.DoubleField(default=0)
    lease_token = peewee.CharField(max_length=32, null=True)

    class Meta:
        table_name = "webhooks"


class Delivery(BaseModel):
    """One event (by ``position``) for one webhook: ``pending`` until a 2xx (``delivered``) or a refusal
    or the end of the retry time (``failed``). ``order_key`` is the image's ID (or ``software:NAME``,
    else empty): a webhook receives one key's events in order."""

    id = peewee.BigAutoField()
    webhook_id = peewee.CharField(max_length=32)
    position = peewee.BigIntegerField()
    order_key = peewee.CharField(max_length=64)
    status = peewee.CharField(max_length=16, default="pending")
    attempts = peewee.IntegerField(default=0)
    created_at = peewee.DoubleField()
    next_attempt_at = peewee.DoubleField()
    last_status_code = peewee.IntegerField(null=True)
    last_error = peewee.CharField(max_length=255, null=True)
    finished_at = peewee.DoubleField(null=True)
    # How often a replay made it anew: its ``webhook-id`` is the event's ID, then ``<ID>-r<replays>``, so
    # that a receiver dropping messages it has seen (Standard Webhooks) takes a replay, not a retry.
    replays = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])

    class Meta:
        table_name = "deliveries"
        indexes = (
            (("webhook_id", "position"), True),
            (("webhook_id", "status", "position"), False),
            (("position",), False),  # retention removes the deliveries of removed events
        )


class Job(BaseModel):
    """Columns every software's job table has; subclassed per software by :func:`job_model`.

    The claim walks the index ``(stage, sort_priority, uploaded_date, image_id)`` from the start of
    ``Stage.READY``, so its cost grows neither with finished jobs nor with jobs waiting on upstream
    software. ``sort_priority`` is the image's priority negated, so that one ascending index gives
    the highest priority first, then the earliest upload. ``available_at`` is when the job may next
    be claimed: the end of a retry backoff while pending, the lease expiry while claimed.
    """

    image_id = peewee.CharField(max_length=32, primary_key=True)
    uploaded_date = peewee.DoubleField()
    sort_priority = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
    status = peewee.CharField(
        max_length=16,
        default=JobStatus.PENDING.value,
        constraints=[peewee.SQL(f"DEFAULT '{JobStatus.PENDING.value}'")],
    )
    stage = peewee.SmallIntegerField(default=Stage.READY, constraints=[peewee.SQL("DEFAULT 0")])
    available_at = peewee.DoubleField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
    claimed_at = peewee.DoubleField(null=True)
    lease_expires_at = peewee.DoubleField(null=True)
    token = peewee.CharField(max_length=64, null=True)
    attempts = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
    info = JsonTextField(null=True)
    error = peewee.TextField(null=True)
    finished_at = peewee.DoubleField(null=True)
    version = peewee.CharField(max_length=64, null=True)  # the software's version its result came from
    claimed_version = peewee.CharField(max_length=64, null=True)  # the software's version when last claimed


COLUMN_FIELDS: dict[str, type[peewee.Field]] = {
    "text": peewee.TextField,
    "int": peewee.BigIntegerField,
    "float": peewee.DoubleField,
    "bool": peewee.BooleanField,
    "json": JsonTextField,
    "time": peewee.DoubleField,
}

_models: dict[str, type[BaseModel]] = {}
_models_lock = threading.Lock()


def job_table_name(software_name: str) -> str:
    return f"job_{software_name}"


def extra_table_name(software_id: int, table: str) -> str:
    return f"ext_{software_id}_{table}"


def column_attribute(column: str) -> str:
    return f"c_{column}"


def job_model(software_name: str) -> type[Job]:
    """The model of ``job_<software_name>``."""
    table_name = job_table_name(software_name)

    def build() -> type[BaseModel]:
        meta = type(
            "Meta",
            (),
            {
                "table_name": table_name,
                "indexes": (
                    (("stage", "sort_priority", "uploaded_date", "image_id"), False),
                    # Listings of one status (jobs, images by a software's status), in upload order.
                    (("status", "uploaded_date", "image_id"), False),
                    (("status", "finished_at"), False),  # the throughput: jobs done or failed lately
                ),
            },
        )
        return type(f"Job_{software_name}", (Job,), {"Meta": meta, "__module__": __name__})

    return _cached(table_name, build)  # type: ignore[return-value]


def extra_table_model(software_id: int, table: str, columns: dict[str, str]) -> Any:
    """The model of one extra table: an id, the image it belongs to, and the declared columns."""
    table_name = extra_table_name(software_id, table)

    def build() -> type[BaseModel]:
        attrs: dict[str, Any] = {
            "id": peewee.BigAutoField(),
            "image_id": peewee.CharField(max_length=32, index=True),
            "__module__": __name__,
            "Meta": type("Meta", (), {"table_name": table_name}),
        }
        for column, kind in columns.items():
            # Prefixed attribute names, so that a column called "save" or "select" cannot
            # shadow a Model method; the SQL column keeps the declared name.
            attrs[column_attribute(column)] = COLUMN_FIELDS[kind](null=True, column_name=column)
        return type(f"Extra_{table_name}", (BaseModel,), attrs)

    return _cached(table_name, build)


def _cached(table_name: str, build: Any) -> type[BaseModel]:
    model = _models.get(table_name)
    if model is None:
        with _models_lock:
            model = _models.get(table_name) or build()
            _models[table_name] = model
    return model


def forget_models() -> None:
    """Drop the cache of per-software models (after the tables were dropped, in tests)."""
    with _models_lock:
        _models.clear()


def bind_models(database: Database) -> None:
    """Run every model's queries on ``database`` from now on."""
    database_proxy.initialize(database.engine)


def create_base_tables(database: Database) -> None:
    """The tables every database has, with every column and index of this release."""
    models: list[type[peewee.Model]] = [
        Image,
        Software,
        ApiToken,
        Upload,
        JobCount,
        ImportedObject,
        DeletedPicture,
        PendingImage,
        FlowLock,
        Handout,
        Event,
        EventState,
        Webhook,
        Delivery,
        AuditEntry,
        AuditImage,
        RetentionPolicy,
        Erasure,
        ErasureItem,
        ChoreLease,
    ]
    existing = set(database.tables())
    for model in models:
        if model._meta.table_name in existing:
            # Before CREATE TABLE IF NOT EXISTS, which makes the model's indexes too: SQLite would index
            # a column it lacks as the text of its name.
            database.add_missing_columns(model)
    database.create_tables(models)
    if EventState._meta.table_name not in existing:  # the sequencer's lock row, and where retention stands
        EventState.insert_many([{"name": "position", "value": 0}, {"name": "retained_after", "value": 0}]).execute()
    for model in models:
        database.add_missing_columns(model)
        database.widen_columns(model)
        database.add_missing_indexes(model)
