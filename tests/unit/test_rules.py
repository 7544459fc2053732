"""Rules stated once and derived elsewhere: what the derived forms rely on holds."""

from __future__ import annotations

import re

import PIL.Image
import pytest

from heartbeat.api import schemas
from heartbeat.db.models import JobStatus
from heartbeat.ingest.image_types import IMAGE_SUFFIXES, IMAGE_TYPES
from heartbeat.ingest.registration import MAX_PRIORITY, new_image_id


def test_the_form_priority_pattern_takes_exactly_the_priorities_from_minus_to_plus_max():
    # The pattern spells the range out in digits, which works only while MAX_PRIORITY is a power of ten.
    assert str(MAX_PRIORITY) == "1" + "0" * (len(str(MAX_PRIORITY)) - 1)
    pattern = re.compile(schemas.FORM_PRIORITY["pattern"])
    for number in (-MAX_PRIORITY, -1, 0, 7, MAX_PRIORITY - 1, MAX_PRIORITY):
        assert pattern.fullmatch(str(number)), number
    for text in (str(MAX_PRIORITY + 1), str(-MAX_PRIORITY - 1), "1.5", "+3"):
        assert not pattern.fullmatch(text), text


@pytest.mark.parametrize("name", sorted(IMAGE_TYPES))
def test_every_image_type_is_a_pillow_format_with_its_suffixes_and_content_type(name):
    pillow_suffixes = {
        suffix for suffix, format_name in PIL.Image.registered_extensions().items() if format_name == name
    }
    assert set(IMAGE_TYPES[name].suffixes) <= pillow_suffixes
    assert PIL.Image.MIME.get(name, IMAGE_TYPES[name].content_type) == IMAGE_TYPES[name].content_type


def test_the_cli_sends_every_suffix_of_every_image_type():
    assert {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"} <= IMAGE_SUFFIXES


def test_the_job_status_filters_take_exactly_the_statuses():
    assert schemas.JOB_STATUS["enum"] == [status.value for status in JobStatus]
    pattern = re.compile(schemas.IMAGE_STATUS["pattern"])
    assert all(pattern.fullmatch(f"face_detection:{status}") for status in JobStatus)
    assert not pattern.fullmatch("face_detection:lost")


def test_an_image_id_is_16_url_safe_characters_never_beginning_as_a_flag_or_a_formula():
    ids = [new_image_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{15}", image_id) for image_id in ids)
    assert len(set(ids)) == len(ids)
    assert {image_id[1] for image_id in ids} >= {"-", "_"}, "only the first character is held to letters and digits"
