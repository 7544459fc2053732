"""Privacy by design: the audit of who was handed which pictures (``audit.py``), erasures with a
receipt (``erasure.py``), retention policies (``retention.py``), and the thread that runs erasures
and retention on one process of a cluster at a time (``chores.py``). ``docs/privacy.md`` is the
operator's page."""
