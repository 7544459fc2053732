"""Example workers, each a handler for ``heartbeat worker run`` and a ``SOFTWARE`` dict to register it.

They need the ``faces`` extra: ``pip install 'heartbeat[faces]'``.
"""
