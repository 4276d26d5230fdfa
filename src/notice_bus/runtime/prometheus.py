"""Serving a Prometheus registry over HTTP, for the adapters and the tracker."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` in a background thread; returns the server (``shutdown()`` stops it;
    ``server_port`` is the port, useful with ``port=0``)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
