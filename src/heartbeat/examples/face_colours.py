"""The faces' average colours, kept in an extra table ``faces`` of the software ``face_colours``:
one row per face, with its box and the mean red, green and blue of the pixels inside it.

    heartbeat worker run heartbeat.examples.face_colours:describe --software face_colours --register

``info`` says how many faces there are; the rows go to the extra table in the same transaction.
"""

from __future__ import annotations

from typing import Any

from heartbeat.examples.face_detection import find_faces, load_rgb
from heartbeat.worker import Image

SOFTWARE: dict[str, Any] = {
    "name": "face_colours",
    "lease_seconds": 60,
    "tables": {
        "faces": {
            "x": "int",
            "y": "int",
            "w": "int",
            "h": "int",
            "mean_r": "float",
            "mean_g": "float",
            "mean_b": "float",
        }
    },
}


def describe(image_bytes: bytes, image: Image | None) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    """The handler: ``({"faces": n}, {"faces": [row, ...]})``, boxes in the image's upright pixels."""
    rgb = load_rgb(image_bytes, image)
    rows = []
    for box in find_faces(rgb):
        crop = rgb[box["y"] : box["y"] + box["h"], box["x"] : box["x"] + box["w"]]
        red, green, blue = (round(float(value), 2) for value in crop.reshape(-1, 3).mean(axis=0))
        rows.append(box | {"mean_r": red, "mean_g": green, "mean_b": blue})
    return {"faces": len(rows)}, {"faces": rows}
