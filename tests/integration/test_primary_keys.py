"""Every table Heartbeat makes has a primary key: a Galera cluster replicates a table without one
badly (its rows are certified by the whole row, and deletes may apply in another order on each node),
and MySQL Group Replication refuses to write to it (``docs/galera.md``)."""

from __future__ import annotations

from helpers import claim, register, upload


def test_every_table_has_a_primary_key_extra_tables_included(client, database):
    register(client, "face_detection", tables={"faces": {"x": "int", "label": "text"}, "marks": {"n": "float"}})
    register(client, "ocr", after=["face_detection"])
    image_id = upload(client).json["id"]
    [job] = claim(client, "face_detection")
    body = {"token": job["token"], "info": {}, "rows": {"faces": [{"x": 1, "label": "a"}]}}
    assert client.simulate_put(f"/v1/software/face_detection/jobs/{image_id}/result", json=body).status_code == 200
    with database.connection():
        tables = database.tables()
        assert {"images", "job_face_detection", "job_ocr", "audit_entries", "erasure_items"} <= set(tables)
        assert len([table for table in tables if table.startswith("ext_")]) == 2
        without = [table for table in tables if not database.engine.get_primary_keys(table)]
    assert without == []
