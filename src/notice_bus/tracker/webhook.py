"""The escalator's webhook: an incident's "open" or "close" POSTed as JSON
(:mod:`notice_bus.tracker.escalation`)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from notice_bus.errors import TransientError

__all__ = ["post_json", "site_of"]


def post_json(url: str, body: dict[str, Any]) -> None:
    """POST ``body`` as JSON (10 s timeout); no 2xx answer raises :class:`TransientError`."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise TransientError(f"webhook {site_of(url)} answered HTTP {exc.code}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(f"webhook {site_of(url)} unreachable: {exc}") from exc
    if not 200 <= status < 300:
        raise TransientError(f"webhook {site_of(url)} answered HTTP {status}")


def site_of(url: str) -> str:
    """Scheme, host and port only: a webhook's path or query often carries its secret."""
    parts = urlsplit(url)
    host = (parts.netloc.rpartition("@")[2]) or "?"
    return f"{parts.scheme}://{host}" if parts.scheme else host
