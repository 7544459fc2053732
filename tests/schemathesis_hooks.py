"""Schemathesis hooks for tests/integration/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

A claim (and an event read) may wait up to 20 s, an event stream 300 s, and the fuzzer pauses
software now and then: cap the wait (and a stream) at half a second so that the run stays short.
Only the waiting is shortened; the value is still valid.

Every part of a multipart form is text. When the negative check turns a text field's value into
``true``, ``5``, ``4.7e-241``, ``null`` or ``{"a": 1}``, schemathesis sends that very text, which the field takes:
such an acceptance is not a fault of the server, and is dropped. (A list, sent as the field twice, is
refused by the server and stays a failure if it is not.) Likewise a form whose parts, as sent (the file
as bytes, a JSON part as its object, every other part as text, an empty list as no part), are valid under the document:
schemathesis's validator cannot take the bytes of a ``format: binary`` part for the string the schema
names, and calls the form invalid; nor a field turned into ``[]``, which sends nothing.
"""

from typing import Any

import jsonschema
import schemathesis
from schemathesis.core.mutations import OperatorKind
from schemathesis.core.parameters import ParameterLocation

ACCEPTED_NEGATIVE_DATA = "ST201"

MAX_WAIT_SECONDS = 0.5


def _cap(body: Any) -> None:
    if isinstance(body, dict):
        wait = body.get("wait_seconds")
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > MAX_WAIT_SECONDS:
            body["wait_seconds"] = MAX_WAIT_SECONDS


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    _cap(case.body)
    _cap(kwargs.get("json"))
    params = kwargs.get("params")
    if isinstance(params, dict):  # an event read's wait, and a stream's length
        for name in ("wait_seconds", "max_seconds"):
            if name in params and _over(params[name]):
                params[name] = MAX_WAIT_SECONDS
        if case.operation.path == "/v1/events/stream" and "max_seconds" not in params:
            params["max_seconds"] = MAX_WAIT_SECONDS


def _over(value: Any) -> bool:
    try:
        return float(value) > MAX_WAIT_SECONDS
    except (TypeError, ValueError):
        return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    return not (_form_text_retyped(failure, case) or _form_valid_as_sent(failure, case))


def _form_valid_as_sent(failure: Any, case: Any) -> bool:
    """Whether ``failure`` is an accepted form that is valid under the document as it was sent."""
    if failure.code != ACCEPTED_NEGATIVE_DATA or not (case.media_type or "").startswith("multipart/form-data"):
        return False
    body = case.operation.get_body_for_media_type(case.media_type)
    schema = body.resolved_schema if body is not None else None
    if not isinstance(schema, dict) or not isinstance(case.body, dict):
        return False
    sent = {}
    for name, value in case.body.items():
        if isinstance(value, bytes):
            sent[name] = value.decode("latin-1")  # the file: any bytes are a binary string
        elif isinstance(value, str):
            sent[name] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            sent[name] = str(value)  # a number retyped into a text field goes as its text: 5, 4.7e-241
        elif isinstance(value, dict):
            sent[name] = value  # a JSON part (other_data): it goes as the object it is
        elif value == []:
            continue  # a list is sent as the field once per item: an empty one sends no part at all
        else:
            return False  # a value that is not one part of text or bytes: not valid as sent
    return jsonschema.Draft202012Validator(schema).is_valid(sent)


def _form_text_retyped(failure: Any, case: Any) -> bool:
    """Whether ``failure`` is an accepted form whose only fault is a text field given another type."""
    if failure.code != ACCEPTED_NEGATIVE_DATA or not (case.media_type or "").startswith("multipart/form-data"):
        return False
    mutations = getattr(case.meta.phase.data, "mutations", ()) if case.meta else ()
    body = case.operation.get_body_for_media_type(case.media_type)
    properties = (body.resolved_schema or {}).get("properties", {}) if body is not None else {}
    return bool(mutations) and all(
        mutation.operator == OperatorKind.CHANGE_TYPE
        and mutation.parameter_location == ParameterLocation.BODY
        and len(mutation.path) == 1
        and properties.get(mutation.path[0], {}).get("type") == "string"
        and not isinstance(case.body.get(mutation.path[0]), list)
        for mutation in mutations
    )
