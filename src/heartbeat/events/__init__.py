"""Events: every change a consumer may act on, written in the change's own transaction (``outbox.py``),
given its place in commit order once committed (``sequencer.py``), and read by cursor (``feed.py``)."""
