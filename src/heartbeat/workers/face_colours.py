"""Deprecated name of :mod:`heartbeat.examples.face_colours` (see :mod:`heartbeat.workers`): the same module."""

import sys

from heartbeat.examples import face_colours

sys.modules[__name__] = face_colours
