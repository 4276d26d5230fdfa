"""A real HTTP server playing a bureau's REST API, for the tests of ``notice_bus_rest_api``.

It speaks the contract of that module's docstring, keeps what it receives in memory, and can be
told to misbehave: fail the next requests, fail at random (seeded), answer slowly, or go down
(answer 503 to everything, or stop listening altogether) and come back on the same port.
"""

from __future__ import annotations

import json
import random
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

_NOTICE = re.compile(r"^/notices/(\d{4}-\d{1,10})(/withdrawal)?$")


@dataclass(frozen=True)
class Request:
    """One request as the server saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the decoded JSON, or None
    status: int


class NationalApi:
    """The fake API. ``notices`` and ``withdrawals`` map a notice id to the last body stored."""

    def __init__(
        self,
        *,
        token: str | None = None,
        failure_rate: float = 0.0,
        seed: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        self.token = token
        self.failure_rate = failure_rate
        self.delay_s = delay_s
        self.notices: dict[str, dict[str, Any]] = {}
        self.withdrawals: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._failures: list[tuple[int, str]] = []  # (status, body) for the next requests
        self._passes = 0  # requests let through before the queued failures start
        self._answer_503 = False
        self._stopping = threading.Event()
        self._port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # --- misbehaving ------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503, *, after: int = 0, body: str = "") -> None:
        """Answer ``status`` to ``n`` requests, once ``after`` more have been served normally."""
        with self._lock:
            self._passes = after
            self._failures = [(status, body or f'{{"error": "injected {status}"}}')] * n

    def down(self, how: Literal["503", "closed"] = "503") -> None:
        """Answer 503 to everything, or close the listening socket (connections are refused)."""
        if how == "503":
            self._answer_503 = True
        else:
            self._stop_serving()

    def up(self) -> None:
        """Serve normally again, on the same port."""
        self._answer_503 = False
        if self._server is None:
            self._serve()

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> NationalApi:
        self._serve()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()  # wakes handlers sleeping in a delay
        self._stop_serving()

    def _serve(self) -> None:
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.api = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _stop_serving(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    # --- answering --------------------------------------------------------------------------

    def _injected(self) -> tuple[int, str] | None:
        with self._lock:
            if self._answer_503:
                return 503, '{"error": "down"}'
            if self._failures:
                if self._passes > 0:
                    self._passes -= 1
                    return None
                return self._failures.pop(0)
            if self.failure_rate and self._random.random() < self.failure_rate:
                return 503, '{"error": "random failure"}'
        return None

    def answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, str]:
        """Decide the answer to one request, store what it carries, log it."""
        if self.delay_s:
            self._stopping.wait(self.delay_s)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = headers.get("authorization")
        status, text = self._injected() or self._serve_one(method, path, auth, body)
        with self._lock:
            self.requests.append(Request(method, path, headers, body, status))
        return status, text

    def _serve_one(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, str]:
        if self.token is not None and auth != f"Bearer {self.token}":
            return 401, '{"error": "bad or missing bearer token"}'
        if method == "GET" and path == "/health":
            return 200, '{"status": "ok"}'
        match = _NOTICE.match(path)
        if method != "PUT" or match is None:
            return 404, '{"error": "no such resource"}'
        path_id, withdrawal = match.groups()
        if not isinstance(body, dict):
            return 400, '{"error": "body is not a JSON object"}'
        if str(body.get("notice_id", "")).replace("/", "-") != path_id:
            return 400, '{"error": "notice_id does not match the path"}'
        if not isinstance(body.get("version"), int):
            return 400, '{"error": "version is not an integer"}'
        with self._lock:
            (self.withdrawals if withdrawal else self.notices)[body["notice_id"]] = body
        return 200, '{"stored": true}'


class _Server(ThreadingHTTPServer):
    api: NationalApi
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (after its timeout) is expected here, not an error."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        # Read the whole body first: answering before it would reset the client's connection.
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, text = self.server.api.answer(self.command, self.path, headers, raw)
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``NationalApi.requests`` instead."""
