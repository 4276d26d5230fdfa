"""The review queue in a browser: HQ's held requests, and a reviewer's Approve and Refuse.

``GET /review`` lists the requests held for a reviewer, oldest first (who asked, for which
notice and person, how long it has waited, the charges, each screening finding with the text
that triggered it highlighted, the request's facts and the person's stated status), each with
an Approve form (an optional note) and a Refuse form (a reason, required), and below them the
last decisions. ``POST /review/{id}/approve`` and ``/refuse`` decide through
:class:`~notice_bus.hq.review.Review`, exactly as ``notice-bus review approve|refuse`` do, and
send the browser back to the queue (303), or answer 400 (no reviewer or no reason), 404
(unknown request), 409 (decided already), 403 (a form posted from another site) or 503 (HQ's
database or the broker failed).

The page has no login of its own: serve it on a loopback address or behind HQ's access
control. The reviewer's name is taken as typed and recorded as such in the audit trail.
Everything a bureau sent is escaped: it is untrusted.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from notice_bus.errors import (
    AlreadyDecided,
    HQStateError,
    InvalidNotice,
    NoticeBusError,
    UnknownRequest,
)
from notice_bus.hq.review import Review
from notice_bus.hq.tables import HQ_REQUEST, HQRequest
from notice_bus.runtime.db import translate_errors
from notice_bus.wire.model import aware, utcnow
from notice_bus.wire.request import Decision, RequestStatus

__all__ = ["review_routes"]

_REQUEST: Any = HQ_REQUEST
_MAX_BODY = 64 * 1024
_REVIEWER_MAX = 100  # hq_request.decided_by
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "frame-ancestors 'none'",  # no clicking through a frame
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_CSS = """body{font:15px/1.4 system-ui,sans-serif;margin:1rem auto;max-width:70rem;padding:0 1rem}
.request{border:1px solid #ccc;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.request h2{font-size:1.05rem;margin:.2rem 0}.meta{color:#555}mark{background:#ffd54f}
.finding{margin:.3rem 0}.rule{font-family:monospace}.done{background:#e8f5e9;padding:.5rem}
form{display:inline-block;margin:.3rem 1rem .3rem 0;vertical-align:top}
textarea{width:22rem;height:3rem}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:.2rem .5rem;text-align:left}"""
_SCRIPT = """<script>
(function () {
  const who = document.getElementById("reviewer"), key = "noticeBusReviewer";
  try { who.value = who.value || localStorage.getItem(key) || ""; } catch (e) {}
  for (const form of document.querySelectorAll("form.decide")) {
    form.addEventListener("submit", (ev) => {
      if (!who.reportValidity()) { ev.preventDefault(); return; }
      form.elements.reviewer.value = who.value.trim();
      try { localStorage.setItem(key, who.value.trim()); } catch (e) {}
    });
  }
})();
</script>"""
_WARRANT_FIELD = re.compile(r"arrest_warrants\[(\d+)\]\.(charge|charge_translation)")


class _Refused(Exception):
    """A decision the page turns down, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def review_routes(open_review: Callable[[], Review]) -> list[Route]:
    """The review page's routes. ``open_review`` gives the :class:`Review` to use (it may
    open it on first call); it is called, like every Review method, in a worker thread."""
    deciding = threading.Lock()  # one decision at a time through the one HQ

    async def page(request: Request) -> Response:
        try:
            held, decided = await run_in_threadpool(_read, open_review)
        except NoticeBusError as exc:
            return _message(503, f"The review queue cannot be read: {exc}")
        done = request.query_params.get("done", "")
        body = _queue_html(held, decided, done, utcnow())
        return HTMLResponse(body, headers=_HEADERS)

    def decider(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def decide(request: Request) -> Response:
            request_id = request.path_params["request_id"]
            try:
                if _cross_site(request):
                    raise _Refused(403, "This form was posted from another site: refused.")
                form = await _form(request)

                def run() -> Decision:
                    with deciding:
                        return _decide(open_review(), action, request_id, form)

                decision = await run_in_threadpool(run)
            except _Refused as exc:
                return _message(exc.status, str(exc))
            except UnknownRequest as exc:
                return _message(404, str(exc))
            except (AlreadyDecided, HQStateError) as exc:
                return _message(409, str(exc))
            except InvalidNotice as exc:
                return _message(400, str(exc))
            except NoticeBusError as exc:
                return _message(503, f"HQ could not record the decision: {exc}")
            if decision.status is RequestStatus.APPROVED:
                done = f"Approved {request_id}: notice {decision.notice_id} published"
            else:
                done = f"Refused {request_id}: sent to no country"
            done += f"; {decision.requesting_country} told."
            return RedirectResponse("/review?" + urlencode({"done": done}), status_code=303)

        return decide

    return [
        Route("/review", page, methods=["GET"]),
        Route("/review/{request_id:path}/approve", decider("approve"), methods=["POST"]),
        Route("/review/{request_id:path}/refuse", decider("refuse"), methods=["POST"]),
    ]


def _read(open_review: Callable[[], Review]) -> tuple[list[HQRequest], list[HQRequest]]:
    """The held requests, oldest first, and the last 20 decided, newest first."""
    review = open_review()
    query = (
        select(HQRequest)
        .where(_REQUEST.c.status != RequestStatus.HELD.value)
        .order_by(_REQUEST.c.decided_at.desc())
        .limit(20)
    )
    with translate_errors(str(review.engine.url)), Session(review.engine) as session:
        decided = list(session.scalars(query))
    return review.waiting(), decided


def _decide(review: Review, action: str, request_id: str, form: dict[str, str]) -> Decision:
    reviewer = form.get("reviewer", "").strip()
    if not reviewer:
        raise _Refused(400, "Give your name as the reviewer: it goes in the audit trail.")
    if len(reviewer) > _REVIEWER_MAX:
        raise _Refused(400, f"A reviewer's name has at most {_REVIEWER_MAX} characters.")
    if action == "approve":
        return review.approve(request_id, reviewer, form.get("note", "").strip())
    reason = form.get("reason", "").strip()
    if not reason:
        raise _Refused(400, "A refusal needs a reason: the requesting bureau is told it.")
    return review.refuse(request_id, reviewer, reason)


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body's fields (the first of each)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _Refused(415, "Send the form as application/x-www-form-urlencoded.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise _Refused(413, f"The form is larger than {_MAX_BODY} bytes.")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _cross_site(request: Request) -> bool:
    """Whether the browser says the post comes from a page of another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") == "cross-site"
    return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


def _e(value: object) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _document(title: str, body: str, script: str = "") -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n{script}"
        "</body></html>\n"
    )


def _message(status: int, text: str) -> HTMLResponse:
    back = '<p><a href="/review">Back to the review queue</a></p>'
    body = f'<h1>{status}</h1><p id="message">{_e(text)}</p>{back}'
    return HTMLResponse(_document(f"Review: {status}", body), status, headers=_HEADERS)


def _queue_html(held: list[HQRequest], decided: list[HQRequest], done: str, now: datetime) -> str:
    parts = [
        '<p><a href="/">Dashboard</a></p>',
        f"<h1>Review queue: {len(held)} request(s) waiting</h1>",
        f'<p class="done" id="done" role="status">{_e(done)}</p>' if done else "",
        '<p><label>Reviewer <input id="reviewer" required maxlength="100" size="40"'
        ' pattern=".*\\S.*" autocomplete="name"'
        ' placeholder="your name, recorded in the audit trail"></label></p>',
    ]
    parts += [_request_html(r, now) for r in held]
    if not held:
        parts.append('<p id="empty">No request is waiting for a reviewer.</p>')
    parts.append("<h2>Last decisions</h2>")
    rows = "".join(
        f'<tr data-request-id="{_e(r.request_id)}"><td>{_e(r.status)}</td>'
        f"<td>{_e(r.request_id)}</td><td>{_e(r.country)}</td><td>{_e(r.notice_id)}</td>"
        f"<td>{_e(_when(r.decided_at))}</td><td>{_e(r.decided_by)}</td><td>{_e(r.reason)}</td></tr>"
        for r in decided
    )
    parts.append(
        '<table id="decided"><thead><tr><th>status</th><th>request</th><th>from</th>'
        "<th>notice</th><th>decided</th><th>by</th><th>reason or note</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if decided
        else "<p>No decision yet.</p>"
    )
    return _document("Review queue", "\n".join(parts), _SCRIPT)


def _request_html(r: HQRequest, now: datetime) -> str:
    draft: dict[str, Any] = r.draft if isinstance(r.draft, dict) else {}
    name = " ".join(str(draft.get(k) or "") for k in ("forename", "name")).strip()
    received = aware(r.received_at)
    charges = "".join(
        f"<li>{_e(w.get('charge'))} <span class=meta>(warrant of {_e(w.get('issuing_country_id'))}"
        + (
            f"; translated: {_e(w.get('charge_translation'))}"
            if w.get("charge_translation")
            else ""
        )
        + ")</span></li>"
        for w in _list(draft.get("arrest_warrants"))
        if isinstance(w, dict)
    )
    findings = "".join(
        f'<li class="finding"><span class="rule">{_e(f.get("rule_id"))}</span>'
        f" [{_e(f.get('category'))}] in <code>{_e(f.get('field'))}</code>: "
        f"{_highlight(_field_text(r, draft, str(f.get('field'))), str(f.get('text') or ''))}"
        f"<br><span class=meta>{_e(f.get('explanation'))}</span></li>"
        for f in r.findings
        if isinstance(f, dict)
    )
    path = "/review/" + quote(r.request_id, safe="")
    rid = _e(r.request_id)
    claimed = r.claimed_country not in (None, r.country)
    return f"""<section class="request" id="request-{rid}" data-request-id="{rid}">
<h2>{_e(name) or "(no name)"}: notice {_e(r.notice_id)} requested by {_e(r.country)}</h2>
<p class="meta">request {rid}; received {_e(_when(received))}, waiting {_e(_waited(received, now))}
{f"; claimed requester {_e(r.claimed_country)}" if claimed else ""}</p>
<p>Charges:</p><ul>{charges or "<li>(none)</li>"}</ul>
<p>Findings:</p><ul>{findings or "<li>(none)</li>"}</ul>
{f'<p>Facts: <span class="facts">{_e(r.facts)}</span></p>' if r.facts else ""}
{f"<p>Stated status of the person: {_e(r.person_status)}</p>" if r.person_status else ""}
<form class="decide approve" method="post" action="{_e(path)}/approve">
<input type="hidden" name="reviewer"><label>Note (optional) <input name="note"></label>
<button type="submit">Approve</button></form>
<form class="decide refuse" method="post" action="{_e(path)}/refuse">
<input type="hidden" name="reviewer"><label>Reason <textarea name="reason" required></textarea>
</label> <button type="submit">Refuse</button></form>
</section>"""


def _field_text(r: HQRequest, draft: dict[str, Any], field: str) -> str | None:
    """The whole text of the field a finding names, if it is a text of the request."""
    if field in ("facts", "person_status"):
        return r.facts if field == "facts" else r.person_status
    match = _WARRANT_FIELD.fullmatch(field)
    warrants = _list(draft.get("arrest_warrants"))
    warrant = warrants[int(match[1])] if match and int(match[1]) < len(warrants) else None
    value = warrant.get(match[2]) if match and isinstance(warrant, dict) else None
    return value if isinstance(value, str) else None


def _highlight(whole: str | None, text: str) -> str:
    """``whole`` (or some 80 characters around the match) with ``text`` marked, escaped."""
    found = re.search(re.escape(text), whole, re.IGNORECASE) if whole and text else None
    if whole is None or found is None:
        return f"<mark>{_e(text)}</mark>"
    start, end = found.span()
    before, after = whole[max(0, start - 80) : start], whole[end : end + 80]
    return (
        ("…" if start > 80 else "")
        + f"{_e(before)}<mark>{_e(whole[start:end])}</mark>{_e(after)}"
        + ("…" if end + 80 < len(whole) else "")
    )


def _when(at: datetime | None) -> str:
    return "" if at is None else f"{aware(at):%Y-%m-%d %H:%M:%S} UTC"


def _waited(since: datetime, now: datetime) -> str:
    seconds = max(0, int((now - since).total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {seconds // 60} min" if hours else f"{seconds // 60} min"
