"""``GET /``: the dashboard page; its script and style are served from ``/dashboard/``."""

from __future__ import annotations

from pathlib import Path

import falcon

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"


class DashboardPage:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = (DASHBOARD_DIR / "index.html").read_bytes()


def add_dashboard_files(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """The page's script and style (the page itself is a route of the table)."""
    app.add_static_route("/dashboard", str(DASHBOARD_DIR))
