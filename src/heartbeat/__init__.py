"""Heartbeat: a database and work coordinator for images that computer-vision software analyses."""

__version__ = "0.1.0"
