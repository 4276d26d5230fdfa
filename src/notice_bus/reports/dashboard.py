"""The live dashboard: the HTML report over HTTP, from the tracker's tables.

Routes: ``GET /`` the page (:func:`notice_bus.reports.html.render_html`), loaded once; ``GET
/dashboard.json`` what the page refreshes itself with every ``refresh_s`` (:func:`page_data`):
it updates its table, banners and charts in place, keeping the viewer's zoom, and says so when
a refresh fails; ``GET /report.json`` the report as ``notice-bus report --format json`` prints
it; ``GET /healthz`` "ok"; and any ``extra_routes`` (the review queue, from the command),
which ``links`` point to in a line atop the page. The page inlines plotly.js (some megabytes)
once; each refresh moves only the figures' data.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from notice_bus.errors import LocalSystemUnavailable
from notice_bus.reports.charts import CHART_CONFIG
from notice_bus.reports.formats import to_json
from notice_bus.reports.html import page_parts, render_html
from notice_bus.reports.report import CountryReport, build_report, open_tracker_database
from notice_bus.runtime.settings import Settings
from notice_bus.wire.model import utcnow

__all__ = ["create_app", "make_server", "page_data", "refresh_script", "serve"]


def create_app(
    settings: Settings,
    *,
    database_url: str | None = None,
    refresh_s: int = 10,
    stale_after_s: float | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    links: Sequence[tuple[str, str]] = (),
) -> Starlette:
    """The dashboard over the tracker's database (``database_url``, else the settings' one);
    one engine for the app's lifetime, disposed on shutdown. The page warns when the
    tracker's last sample is older than ``stale_after_s`` (default:
    :func:`~notice_bus.reports.html.default_stale_after_s`)."""
    engine = open_tracker_database(database_url or settings.tracker_database_url)
    script = refresh_script("dashboard.json", refresh_s)
    nav = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a> ' for text, href in links)

    # Plain functions: Starlette runs them in its thread pool, so the blocking database
    # queries do not stall the event loop.
    def page(_request: Request) -> Response:
        try:
            reports = build_report(engine, settings)
            page = render_html(
                engine, settings, reports, stale_after_s=stale_after_s, script=script
            )
        except LocalSystemUnavailable as exc:
            return _unavailable(exc)
        if nav:
            page = page.replace("<body>", f'<body>\n<nav class="links">{nav}</nav>', 1)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    def data(_request: Request) -> Response:
        try:
            reports = build_report(engine, settings)
            body = page_data(engine, settings, reports, stale_after_s=stale_after_s)
        except LocalSystemUnavailable as exc:
            return _unavailable(exc)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

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

    routes: list[BaseRoute] = [
        Route("/", page, methods=["GET"]),
        Route("/dashboard.json", data, methods=["GET"]),
        Route("/report.json", report_json, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *extra_routes,
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _unavailable(exc: Exception) -> Response:
    # The tracker's database is down: say so; the page shows it and tries again.
    return PlainTextResponse(f"tracker database unavailable: {exc}", status_code=503)


def page_data(
    engine: Engine,
    settings: Settings,
    reports: Sequence[CountryReport],
    *,
    clock: Callable[[], datetime] = utcnow,
    stale_after_s: float | None = None,
) -> dict[str, Any]:
    """What the page refreshes itself with (see :class:`~notice_bus.reports.html.PageParts`):
    its time, summary, stale and security warnings, the table's rows as escaped HTML, and each
    chart's plotly figure (``data`` and ``layout``) by the id of its element."""
    parts = page_parts(engine, settings, reports, clock(), stale_after_s)
    return {
        "generated": parts.now.isoformat(),
        "generated_text": parts.now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "summary": parts.summary,
        "stale": parts.stale,
        "security": parts.security,
        "rows": parts.rows,
        "reviews": parts.reviews,
        "copies": parts.copies,
        "figures": {k: json.loads(fig.to_json()) for k, fig in parts.figures.items()},
    }


def refresh_script(data_url: str, refresh_s: int) -> str:
    """The page's script: every ``refresh_s`` seconds, fetch ``data_url`` and update the page
    in place (``window.noticeBusRefreshes`` counts the updates done)."""
    # innerHTML takes only the rows, which the server escaped; other texts go in as text.
    return f"""<script>
(function () {{
  const url = {json.dumps(data_url)}, every = {int(refresh_s) * 1000};
  const config = {json.dumps(CHART_CONFIG)};
  const $ = (id) => document.getElementById(id);
  window.noticeBusRefreshes = 0;
  async function refresh() {{
    try {{
      const answer = await fetch(url, {{cache: "no-store"}});
      if (!answer.ok) throw new Error(answer.status + " " + (await answer.text()));
      const d = await answer.json();
      $("generated").textContent = d.generated_text;
      $("generated").setAttribute("datetime", d.generated);
      $("summary").textContent = d.summary;
      $("stale").textContent = d.stale;
      $("stale").hidden = !d.stale;
      $("security").textContent = d.security;
      $("security").hidden = !d.security;
      $("countries").tBodies[0].innerHTML = d.rows;
      $("reviews").tBodies[0].innerHTML = d.reviews;
      $("copies").tBodies[0].innerHTML = d.copies;
      for (const [id, fig] of Object.entries(d.figures)) {{
        $(id).style.height = fig.layout.height + "px";
        await Plotly.react(id, fig.data, fig.layout, config);
      }}
      $("refresh-error").hidden = true;
      window.noticeBusRefreshes += 1;
    }} catch (e) {{
      $("refresh-error").textContent = "Cannot refresh (" + e.message + "); trying again.";
      $("refresh-error").hidden = false;
    }} finally {{
      setTimeout(refresh, every);
    }}
  }}
  setTimeout(refresh, every);
}})();
</script>
"""


def make_server(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    database_url: str | None = None,
    refresh_s: int = 10,
    stale_after_s: float | None = None,
    log_level: str = "info",
    extra_routes: Sequence[BaseRoute] = (),
    links: Sequence[tuple[str, str]] = (),
) -> uvicorn.Server:
    """A server for the dashboard, not yet started. ``port=0`` picks a free port (read it
    from ``server.servers[0].sockets[0]`` once ``server.started``); ``server.run()`` blocks,
    setting ``server.should_exit`` stops it."""
    app = create_app(
        settings,
        database_url=database_url,
        refresh_s=refresh_s,
        stale_after_s=stale_after_s,
        extra_routes=extra_routes,
        links=links,
    )
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    database_url: str | None = None,
    stale_after_s: float | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    links: Sequence[tuple[str, str]] = (),
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C or SIGTERM)."""
    server = make_server(
        settings,
        host=host,
        port=port,
        database_url=database_url,
        stale_after_s=stale_after_s,
        extra_routes=extra_routes,
        links=links,
    )
    server.run()
