"""Deprecated: the example workers are :mod:`heartbeat.examples` now (``heartbeat.workers`` differed from
the SDK, ``heartbeat.worker``, by one letter). The old name, and ``heartbeat worker run
heartbeat.workers.face_detection:detect``, keep working for one release, with a DeprecationWarning."""

import warnings

warnings.warn(
    "heartbeat.workers is renamed heartbeat.examples (e.g. heartbeat.examples.face_detection:detect); "
    "the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
