"""The dashboard at /ui/: server-rendered pages (Jinja2) over the service layer, called
in-process with the signed-in key's scopes, as the API checks them.

- ``web``: rendering, the security headers, sessions, CSRF and the page route class.
- ``data``: the figures that come from the statistics and webhook features, one
  function each; a function returns None where its feature does not exist yet and
  the page says "not available".
- ``charts``: SVG drawn on the server (stock bars, the 30-day chart).
- ``account``, ``sets``, ``deliveries``, ``admin``: the pages, by subject.

Static files (one style sheet, one small script) are in ``static/``; nothing is
loaded from another host."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.ui import account, admin, deliveries, sets

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to ``app``."""
    for module in (account, sets, deliveries, admin):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
