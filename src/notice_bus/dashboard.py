"""The live dashboard: the HTML report over HTTP, rebuilt from the tracker's tables on every
request and reloaded by the browser every few seconds.

Routes: ``GET /`` the page (:func:`notice_bus.report_html.render_html`), ``GET /report.json``
the report as ``notice-bus report --format json`` prints it, ``GET /healthz`` "ok". The page
inlines plotly.js (some megabytes), so it is meant for a handful of viewers, not a wall of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from notice_bus.db import make_engine
from notice_bus.errors import LocalSystemUnavailable
from notice_bus.report import build_report, to_json
from notice_bus.report_html import render_html
from notice_bus.settings import Settings
from notice_bus.tables import TRACKER_TABLES

__all__ = ["create_app", "make_server", "serve"]


def create_app(
    settings: Settings, *, database_url: str | None = None, refresh_s: int = 10
) -> Starlette:
    """The dashboard over the tracker's database (``database_url``, else the settings' one);
    one engine for the app's lifetime, disposed on shutdown."""
    engine = make_engine(database_url or settings.tracker_database_url, TRACKER_TABLES)

    # Plain functions: Starlette runs them in its thread pool, so the blocking database
    # queries do not stall the event loop.
    def page(_request: Request) -> Response:
        try:
            reports = build_report(engine, settings)
            return HTMLResponse(render_html(engine, settings, reports, refresh_s=refresh_s))
        except LocalSystemUnavailable as exc:
            return _unavailable(exc)

    def report_json(_request: Request) -> Response:
        try:
            text = to_json(build_report(engine, settings))
        except LocalSystemUnavailable as exc:
            return _unavailable(exc)
        return Response(text, media_type="application/json")

    def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/report.json", report_json, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _unavailable(exc: Exception) -> Response:
    # The tracker's database is down: say so, and let the page's refresh try again.
    return PlainTextResponse(f"tracker database unavailable: {exc}", status_code=503)


def make_server(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    database_url: str | None = None,
    refresh_s: int = 10,
    log_level: str = "info",
) -> uvicorn.Server:
    """A server for the dashboard, not yet started. ``port=0`` picks a free port (read it
    from ``server.servers[0].sockets[0]`` once ``server.started``); ``server.run()`` blocks,
    setting ``server.should_exit`` stops it."""
    app = create_app(settings, database_url=database_url, refresh_s=refresh_s)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    database_url: str | None = None,
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C or SIGTERM)."""
    make_server(settings, host=host, port=port, database_url=database_url).run()
