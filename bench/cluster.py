"""Where a benchmark run happens: a plain broker, or a secured one with credentials issued by
``notice-bus pki`` (SCRAM-SHA-512 over TLS for every client, ACLs for everything, HQ's
signatures on every notice and the bureaus' MACs on every acknowledgement)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notice_bus.runtime.kafka import admin_client
from notice_bus.runtime.local_broker import LocalBroker
from notice_bus.runtime.settings import Settings
from notice_bus.trust.acl import apply_registry
from notice_bus.trust.pki import issue

#: The hub principal that serves every country of a secured run (``--hub bench``).
HUB = "bench"


@dataclass(frozen=True)
class Cluster:
    """``pki`` None: PLAINTEXT, every client anonymous. Otherwise each part of a run connects
    as its own principal: ``admin`` makes the topics and watches, ``hq`` publishes, and the
    adapters' host is the hub ``hub-bench``."""

    bootstrap: str
    pki: Path | None = None

    @property
    def secured(self) -> bool:
        return self.pki is not None

    def settings(self, principal: str, **overrides: Any) -> Settings:
        """``principal``'s settings on this cluster, ``overrides`` on top."""
        return self.as_(principal, Settings(bootstrap_servers=self.bootstrap)).with_(**overrides)

    def as_(self, principal: str, settings: Settings) -> Settings:
        """``settings`` with ``principal``'s credentials on top (none on a plain cluster)."""
        if self.pki is None:
            return settings
        return settings.overlay(self.pki / principal / "notice-bus.toml")

    def host_env(self) -> dict[str, str]:
        """What the adapters' host process adds to its environment."""
        if self.pki is None:
            return {}
        return {"NOTICE_BUS_CONFIG": str(self.pki / f"hub-{HUB}" / "notice-bus.toml")}

    def host_args(self) -> list[str]:
        return ["--hub", HUB] if self.secured else []


@contextmanager
def plain_cluster(tmp: Path) -> Iterator[Cluster]:
    """``KAFKA_BOOTSTRAP_SERVERS``, else a local broker, stopped on the way out: the secured
    run that may follow then has the machine to itself."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""):
        yield Cluster(bootstrap)
        return
    with LocalBroker(tmp / "kafka") as broker:
        yield Cluster(broker.bootstrap_servers)


@contextmanager
def secured_cluster(tmp: Path, countries: Sequence[str]) -> Iterator[tuple[Cluster, LocalBroker]]:
    """A secured local broker, and the credentials of admin, HQ and a hub of ``countries``."""
    pki = tmp / "pki"
    issue(pki, hubs={HUB: list(countries)})
    with LocalBroker(tmp / "kafka-secured", pki=pki) as broker:
        cluster = Cluster(broker.bootstrap_servers, pki)
        apply_registry(cluster.settings("admin"))  # the principals' SCRAM users, and grants
        yield cluster, broker


def handshakes(cluster: Cluster, broker: LocalBroker, repeat: int = 10) -> dict[str, float]:
    """Median seconds from a new client to its first answer (the topic list), SCRAM-SHA-512
    over TLS and mutual TLS: what each connection of a restart or a new bureau costs."""
    protocols = {
        "SASL_SSL": {},
        "SSL": {"security_protocol": "SSL", "bootstrap_servers": broker.tls_bootstrap_servers},
    }
    out = {}
    for name, overrides in protocols.items():
        settings = cluster.settings(f"hub-{HUB}", **overrides)
        runs = []
        for _ in range(repeat):
            began = time.perf_counter()
            admin = admin_client(settings)
            admin.list_topics()
            runs.append(time.perf_counter() - began)
            admin.close()
        out[name] = statistics.median(runs)
    return out
