"""Big tables, built fast: MariaDB makes the rows itself with ``INSERT ... SELECT`` from its sequence
engine's ``seq_<first>_to_<last>`` tables, a chunk per statement, with a progress bar.

The rows match the models in ``heartbeat.db.models`` column for column (checked before the first
statement), so the API reads them as its own. Image ``n`` of a load has the ID ``<prefix><n, 12
digits>``; its bytes are never written (a claim only signs the key; nothing here fetches it), except
by :func:`store_images`, for the loads that download what they claim.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pymysql
from harness import JPEG_SIZE, jpeg_variants
from tqdm import tqdm

from heartbeat.db.models import Image, Stage, job_model, job_table_name

CHUNK_ROWS = 50_000
EPOCH = 1_600_000_000.0  # uploaded_date of image 0; image n is n milliseconds later

IMAGE_ID = "CONCAT({prefix}, LPAD(seq, 12, '0'))"
UPLOADED = f"{EPOCH} + seq / 1000"
IMAGE_COLUMNS = {
    "id": IMAGE_ID,
    "filename": "CONCAT('bench-', seq, '.jpg')",
    "uploaded_date": UPLOADED,
    "origin": "'bench'",
    "other_data": "NULL",
    "sha256": "CONCAT({prefix}, LPAD(HEX(seq), 63, '0'))",
    "size": "100000",
    "content_type": "'image/jpeg'",
    "width": "640",
    "height": "480",
    "storage_key": f"CONCAT('images/bench/', {IMAGE_ID}, '.jpg')",
    "priority": "0",
    "orientation": "1",  # upright: no server start has to read it from the bytes
}
DONE = "seq <= {done_through}"
JOB_COLUMNS = {
    "image_id": IMAGE_ID,
    "uploaded_date": UPLOADED,
    "sort_priority": "0",
    "status": f"IF({DONE}, 'done', 'pending')",
    "stage": f"IF({DONE}, {int(Stage.FINISHED)}, {int(Stage.READY)})",
    "available_at": "0",
    "claimed_at": f"IF({DONE}, {UPLOADED} + 1, NULL)",
    "lease_expires_at": "NULL",
    "token": f"IF({DONE}, CONCAT('bench-token-', seq), NULL)",
    "attempts": f"IF({DONE}, 1, 0)",
    "info": f"IF({DONE}, JSON_OBJECT('faces', 0), NULL)",
    "error": "NULL",
    "finished_at": f"IF({DONE}, {UPLOADED} + 2, NULL)",
    "version": f"IF({DONE}, '1', NULL)",
    "claimed_version": f"IF({DONE}, '1', NULL)",
}


def _check_columns(table: str, columns: dict[str, str], model_columns: set[str]) -> None:
    if set(columns) != model_columns:
        raise RuntimeError(f"bulk rows for {table} no longer match the model: {sorted(set(columns) ^ model_columns)}")


def _insert(connection: pymysql.Connection, table: str, columns: dict[str, str], first: int, last: int) -> float:
    """Rows ``first..last`` into ``table`` in chunks; returns the seconds it took."""
    names = ", ".join(f"`{name}`" for name in columns)
    expressions = ", ".join(columns.values())
    started = time.monotonic()
    with connection.cursor() as cursor, tqdm(total=last - first + 1, unit="row", desc=table, leave=False) as bar:
        for start in range(first, last + 1, CHUNK_ROWS):
            end = min(last, start + CHUNK_ROWS - 1)
            cursor.execute(f"INSERT INTO `{table}` ({names}) SELECT {expressions} FROM seq_{start}_to_{end}")
            bar.update(end - start + 1)
    return time.monotonic() - started


def insert_images(connection: pymysql.Connection, prefix: str, first: int, last: int) -> float:
    """Images ``first..last`` (with no jobs: give them jobs by registering a software, or below)."""
    _check_columns("images", IMAGE_COLUMNS, set(Image._meta.columns))  # type: ignore[attr-defined]
    quoted = connection.escape(prefix)
    columns = {name: expression.format(prefix=quoted) for name, expression in IMAGE_COLUMNS.items()}
    return _insert(connection, "images", columns, first, last)


def insert_jobs(
    connection: pymysql.Connection, software: str, prefix: str, first: int, last: int, *, done_through: int
) -> float:
    """Jobs of ``software`` for images ``first..last``: done up to image ``done_through``, pending after it."""
    table = job_table_name(software)
    _check_columns(table, JOB_COLUMNS, set(job_model(software)._meta.columns))  # type: ignore[attr-defined]
    quoted = connection.escape(prefix)
    columns = {
        name: expression.format(prefix=quoted, done_through=done_through) for name, expression in JOB_COLUMNS.items()
    }
    return _insert(connection, table, columns, first, last)


def store_images(connection: pymysql.Connection, storage_root: Path, prefix: str, count: int) -> float:
    """``count`` real ~100 KB JPEGs written into a local store at ``storage_root`` and their rows inserted
    (sha256 and size true, so that a worker's check of what it downloads passes); returns the seconds."""
    _check_columns("images", IMAGE_COLUMNS, set(Image._meta.columns))  # type: ignore[attr-defined]
    width, height = JPEG_SIZE
    names = ", ".join(f"`{name}`" for name in IMAGE_COLUMNS)
    insert = f"INSERT INTO images ({names}) VALUES ({', '.join(['%s'] * len(IMAGE_COLUMNS))})"
    started = time.monotonic()
    rows = []
    for seq, data in enumerate(tqdm(jpeg_variants(count), total=count, unit="image", leave=False), start=1):
        image_id = f"{prefix}{seq:012d}"
        key = f"images/bench/{image_id}.jpg"
        path = storage_root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        uploaded = EPOCH + seq / 1000
        row = {"id": image_id, "filename": f"bench-{seq}.jpg", "uploaded_date": uploaded, "origin": "bench"}
        row |= {"other_data": None, "sha256": sha256, "size": len(data), "content_type": "image/jpeg"}
        row |= {"width": width, "height": height, "storage_key": key, "priority": 0, "orientation": 1}
        rows.append(tuple(row[name] for name in IMAGE_COLUMNS))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            cursor.executemany(insert, rows[start : start + 1000])
    return time.monotonic() - started


def insert_rows(connection: pymysql.Connection, table: str, prefix: str, rows: int, per_image: int) -> float:
    """``rows`` rows of an extra table with number columns ``w`` and ``h``, ``per_image`` for each of
    the images ``1..rows / per_image``; ``w`` and ``h`` spread over 0..199."""
    quoted = connection.escape(prefix)
    image = f"CONCAT({quoted}, LPAD(CEIL(seq / {per_image}), 12, '0'))"
    columns = {"image_id": image, "w": "seq * 37 % 200", "h": "seq * 53 % 200"}
    return _insert(connection, table, columns, 1, rows)
