"""Deprecated name of :mod:`heartbeat.examples.face_detection` (see :mod:`heartbeat.workers`): the same module."""

import sys

from heartbeat.examples import face_detection

sys.modules[__name__] = face_detection
