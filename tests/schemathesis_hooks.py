"""Schemathesis hooks for tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

A claim may wait up to 20 s for work, and the fuzzer pauses software now and then: cap the wait at
half a second so that the run stays short. Only the waiting is shortened; the value is still valid.
"""

from typing import Any

import schemathesis

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
