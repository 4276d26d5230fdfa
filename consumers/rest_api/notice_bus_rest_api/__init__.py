"""A bureau whose local system is a national REST API.

The contract the bureau's API must offer (``{id}`` is the notice id with ``/`` spelt ``-``,
e.g. ``2026-17``):

- ``PUT {base_url}/notices/{id}``: create or replace a notice. JSON body: ``notice_id``,
  ``version``, ``status`` (``"ACTIVE"``), ``requesting_country``, ``published_at`` (ISO 8601,
  with offset), ``target_countries`` and the person's fields (``name``, ``forename``,
  ``arrest_warrants``...).
- ``PUT {base_url}/notices/{id}/withdrawal``: withdraw a notice. JSON body: ``notice_id``,
  ``version``, ``reason`` (may be null), ``published_at``. Must be accepted for a notice the
  API never had.
- ``GET {base_url}/health``: any 2xx means "ready to take notices".
- Requests carry ``Content-Type: application/json`` and, when a token is configured,
  ``Authorization: Bearer <token>``. Any 2xx answer means the version is stored durably.
- Both PUTs are idempotent: the same version may be sent again after a retry or a crash and
  must leave the same state. Versions only ever increase per notice, and nothing is sent for a
  notice after its cancellation (the :class:`~notice_bus.bureau.sinks.local_system.LedgerSink`
  ensures both). A withdrawal whose ``reason`` is ``"no longer addressed to this country"`` is
  not final: a later version may be PUT again when the notice addresses the country again.
- Answers: only these are a refusal of the notice for good (:class:`LocalSystemRejected`, with
  the start of the answer's body; the adapter dead-letters the notice): **400** Bad Request,
  **409** Conflict, **413** Payload Too Large, **415** Unsupported Media Type and **422**
  Unprocessable Content. Every other non-2xx answer means "try later"
  (:class:`LocalSystemUnavailable`: the adapter holds the country's batch and retries until
  the API takes it): 5xx, 408, 429, but also 401 and 403 (an expired or revoked token), 404
  (a wrong route or ``base_url``) and redirects, which an operator fixes, as are refused or
  reset connections and timeouts. A request that cannot even be built for a notice (an id
  that cannot be part of a URL) is refused for good.

Options: ``base_url``, ``token`` (sent as a Bearer token), ``timeout_s`` (per request, default
5). A token is refused with a plain ``http://`` base_url, which would send it in clear, unless
the host is a loopback address or ``allow_insecure_http = true`` is given.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from notice_bus.bureau.sinks.local_system import (
    LocalSystem,
    external_id,
    notice_document,
    withdrawal_document,
)
from notice_bus.bureau.sinks.sink import Health
from notice_bus.errors import ConfigError, LocalSystemRejected, LocalSystemUnavailable
from notice_bus.wire.model import NoticeEvent

#: The only answers that refuse a notice for good; see the module docstring.
REFUSAL_STATUS = frozenset({400, 409, 413, 415, 422})
_BODY_EXCERPT = 500  # characters of a refusal's body kept in the error message


class RestApi(LocalSystem):
    """Sends each notice version to a national REST API; see the module docstring."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 5.0,
        allow_insecure_http: bool = False,
    ) -> None:
        try:
            parsed = urllib.parse.urlsplit(base_url)
            parsed.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise ConfigError(f"rest base_url {base_url!r} is malformed: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"rest base_url {base_url!r} is not an http(s) URL")
        if timeout_s <= 0:
            raise ConfigError(f"rest timeout_s must be positive, not {timeout_s}")
        if not base_url.isascii():
            raise ConfigError(
                f"rest base_url {base_url!r} must be ASCII: percent-encode its path, and give"
                " an internationalised host name in its xn-- form"
            )
        if token is not None and not (token.isascii() and token.isprintable()):
            raise ConfigError("rest token must be printable ASCII: it goes in an HTTP header")
        insecure = parsed.scheme == "http" and not _is_loopback(parsed.hostname)
        if token and insecure and not allow_insecure_http:
            raise ConfigError(
                f"rest base_url {base_url!r} is plain http: the token would travel in clear;"
                " use https, or set allow_insecure_http = true"
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def write(self, notices: Sequence[NoticeEvent]) -> None:
        for e in notices:
            self._request("PUT", f"/notices/{_segment(e)}", notice_document(e))

    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        for e in cancels:
            self._request("PUT", f"/notices/{_segment(e)}/withdrawal", withdrawal_document(e))

    def health(self) -> Health:
        try:
            self._request("GET", "/health")
        except (LocalSystemUnavailable, LocalSystemRejected) as exc:
            return Health(False, str(exc))
        return Health(True)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """Send one request; return on 2xx, raise the mapped error otherwise."""
        url = self.base_url + path
        headers = {"Accept": "application/json", "User-Agent": "notice-bus"}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()  # drain it: the answer is complete only once read
        except urllib.error.HTTPError as exc:  # a non-2xx answer (before URLError: a subclass)
            status = f"HTTP {exc.code} {exc.reason}"
            if exc.code in REFUSAL_STATUS:
                raise LocalSystemRejected(f"{method} {url}: {status}: {_excerpt(exc)}") from exc
            raise LocalSystemUnavailable(f"{method} {url}: {status}: {_excerpt(exc)}") from exc
        except urllib.error.URLError as exc:  # refused, unresolvable, timed out while connecting
            raise LocalSystemUnavailable(f"{method} {url}: {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:  # reset, timed out while reading
            raise LocalSystemUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        except (UnicodeError, ValueError) as exc:
            # base_url and token are checked at start: what does not encode is the notice's.
            raise LocalSystemRejected(f"{method} {url!r}: cannot be sent: {exc}") from exc


def _segment(event: NoticeEvent) -> str:
    """The notice id as one URL path segment, percent-encoded whatever it holds."""
    return urllib.parse.quote(external_id(event), safe="")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return "(no body)"
    text = text.strip()
    return text[:_BODY_EXCERPT] + ("..." if len(text) > _BODY_EXCERPT else "") or "(empty body)"
