"""A throwaway single-node Apache Kafka broker (KRaft, combined broker and controller), or one
node of a :class:`~notice_bus.runtime.local_cluster.LocalCluster`.

It runs the official jars (:mod:`notice_bus.runtime.kafka_dist`: fetched from Maven Central
once, cached in ``~/.cache/notice-bus``) on free ports of 127.0.0.1 with its data in a
temporary folder. It is what the tests and ``make demo`` use where no cluster is configured
and no Docker engine runs, and what ``notice-bus broker`` starts for someone trying things by
hand.

Given a folder of its own, a broker started again on it is the same broker: it keeps the
cluster id its storage was formatted with (``data/meta.properties``) and the ports it listened
on (``server.properties``), so its topics and records are there and clients reconnect to the
same address. A client port given explicitly replaces the one kept.
"""

from __future__ import annotations

import base64
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from notice_bus.errors import BrokerSetupError, OutputError
from notice_bus.runtime.broker_logs import BASE_LOG4J, REQUEST_LOG4J, gc_flags
from notice_bus.runtime.kafka_dist import require_java, resolve_jars
from notice_bus.runtime.scratch import scratch_dir


def _cluster_id() -> str:
    """Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 now. As Kafka does, it may reuse
    the address: connections a stopped broker left in TIME_WAIT do not make the port busy."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _properties(path: Path) -> dict[str, str]:
    """The ``key=value`` lines of a Java properties file we wrote (or Kafka did); {} if none."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BrokerSetupError(f"cannot read {path}: {exc.strerror}") from exc
    pairs = (line.partition("=") for line in lines if not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, sep, v in pairs if sep}


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BrokerSetupError(f"cannot read {path}: {exc.strerror}") from exc


def _kept_ports(workdir: Path) -> dict[str, int]:
    """The ports of the listeners a previous start wrote, by listener name (PLAINTEXT,
    SASL_SSL, SSL, CONTROLLER)."""
    listeners = _properties(workdir / "server.properties").get("listeners", "")
    found = re.findall(r"(\w+)://[^:,]*:(\d+)", listeners)
    return {name: int(port) for name, port in found}


class LocalBroker:
    """Start with :meth:`start` (or ``with``); :attr:`bootstrap_servers` is its address."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        heap_mb: int = 768,
        port: int | None = None,
        pki: Path | None = None,
        node_id: int = 1,
        cluster_id: str | None = None,
        replicas: int = 1,
        request_log: bool = False,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        """``workdir``: a folder to keep the data in (and find it again); default a temporary
        one in memory (:func:`scratch_dir`), removed by :meth:`stop`. ``port``: the client
        port; default the one kept in ``workdir``, else a free one. ``pki``: a folder of
        ``notice-bus pki``'s; the broker then trusts nobody it does not know (see
        :meth:`_security`). A cluster's node gets its ``node_id``, the cluster's id (unless
        its storage has one), ``replicas`` (the nodes' count, up to 3) and, in :attr:`voters`,
        every controller of the quorum. ``request_log``: every request the broker completes
        goes to ``requests.log`` with its split of the time (:mod:`.broker_logs`; ``gc.log``
        is always written). ``overrides``: Kafka settings written after ours, so they win."""
        self._own_dir = workdir is None
        self.overrides = dict(overrides or {})
        self.node_id = node_id
        self.replicas = replicas
        self.request_log = request_log
        self.workdir = workdir or scratch_dir("notice-bus-kafka-")
        self.heap_mb = heap_mb
        self.pki = pki.resolve() if pki else None
        kept = _kept_ports(self.workdir)
        client = "SASL_SSL" if self.pki else "PLAINTEXT"
        self.port = port or kept.get(client) or free_port()
        tls = kept.get("SSL")
        if tls is None or tls == self.port or not port_is_free(tls):
            tls = free_port()
        self.tls_port = tls
        # Clients never see the controller's port: a new one will do if the old one is taken.
        controller = kept.get("CONTROLLER")
        if controller is None or controller == self.port or not port_is_free(controller):
            controller = free_port()
        self.controller_port = controller
        meta = _properties(self.workdir / "data" / "meta.properties")
        # The storage refuses to start under another id than the one it was formatted with.
        self.cluster_id = meta.get("cluster.id") or cluster_id or _cluster_id()
        #: ``controller.quorum.voters``: ``id@host:port`` of every controller, comma-separated.
        self.voters = f"{node_id}@127.0.0.1:{self.controller_port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The client listener: PLAINTEXT, or SASL_SSL (SCRAM) when secured."""
        return f"127.0.0.1:{self.port}"

    @property
    def tls_bootstrap_servers(self) -> str:
        """When secured, the mutual-TLS listener (security_protocol SSL)."""
        return f"127.0.0.1:{self.tls_port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def pid(self) -> int | None:
        """The Java process's id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout_s: float = 90.0) -> str:
        self.launch()
        self.wait_ready(timeout_s)
        return self.bootstrap_servers

    def launch(self) -> None:
        """Format the storage (once) and start Java, without waiting for it to be ready: a
        cluster's node cannot be until a majority of the controllers runs."""
        java = require_java()
        if not port_is_free(self.port):
            raise BrokerSetupError(
                f"port {self.port} of 127.0.0.1 is in use (a broker already running on"
                f" {self.workdir}?); stop it, or give another port"
            )
        classpath = f"{resolve_jars()}/*"
        config = self._write_config()
        log4j = f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}"
        fmt = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                log4j,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={self.cluster_id}",
                "-c",
                str(config),
                "--ignore-formatted",
                *self._scram_at_format(),
            ],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise BrokerSetupError(f"formatting Kafka storage failed: {fmt.stdout}{fmt.stderr}")
        with open(self.workdir / "stdout.log", "wb") as out:
            self._proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap_mb}m",
                    "-Xss1m",
                    "-XX:+UseSerialGC",
                    *gc_flags(self.workdir),
                    log4j,
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, timeout_s: float = 30.0, *, keep_data: bool = False) -> None:
        """Shut the broker down; ``keep_data`` lets :meth:`start` bring it back as it was."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # controlled shutdown
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_dir and not keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no controlled shutdown; the data and ports stay."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _scram_at_format(self) -> list[str]:
        """The admin's SCRAM credential, which must exist before anyone can create the others."""
        if self.pki is None:
            return []
        password = _read_secret(self.pki / "admin" / "scram.password")
        return ["--add-scram", f"SCRAM-SHA-512=[name=admin,password={password}]"]

    def _listeners(self) -> list[str]:
        c = self.controller_port
        if self.pki is None:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{c}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        return [
            f"listeners=SASL_SSL://127.0.0.1:{self.port},SSL://127.0.0.1:{self.tls_port},"
            f"CONTROLLER://127.0.0.1:{c}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port},"
            f"SSL://127.0.0.1:{self.tls_port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL",
            *self._security(),
        ]

    def _security(self) -> list[str]:
        """A broker that lets nobody in unannounced: TLS on every listener (the CA of ``pki``),
        SCRAM-SHA-512 on the client port, mutual TLS on the other and between the broker and
        its controller, and ACLs for everything (no ACL, no access). Super users: the
        broker itself and ``admin``. A certificate's principal is its CN."""
        assert self.pki is not None
        return [
            "inter.broker.listener.name=SSL",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.pki / 'broker' / 'server.pem'}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.pki / 'ca.crt'}",
            "listener.name.ssl.ssl.client.auth=required",
            "listener.name.controller.ssl.client.auth=required",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.principal.mapping.rules=RULE:^CN=([^,]+),.*$/$1/,RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=User:broker;User:admin",
        ]

    def admin_config(self) -> dict[str, object]:
        """kafka-python options of a client that may do anything: admin's, when secured."""
        if self.pki is None:
            return {"bootstrap_servers": self.bootstrap_servers}
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "ssl_cafile": str(self.pki / "ca.crt"),
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "admin",
            "sasl_plain_password": _read_secret(self.pki / "admin" / "scram.password"),
        }

    def _write_config(self) -> Path:
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            log4j = BASE_LOG4J.format(log=self.log_file)
            if self.request_log:
                log4j += REQUEST_LOG4J.format(requests=self.workdir / "requests.log")
            (self.workdir / "log4j2.properties").write_text(log4j)
        except OSError as exc:
            raise OutputError(f"cannot create the broker's files in {self.workdir}: {exc}") from exc
        path = self.workdir / "server.properties"
        rf = min(self.replicas, 3)
        isr = min(rf, 2)
        path.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    f"controller.quorum.voters={self.voters}",
                    *self._listeners(),
                    "controller.listener.names=CONTROLLER",
                    f"log.dirs={self.workdir / 'data'}",
                    # A replica of internal topics on each node (up to 3, of which a write
                    # needs 2); few partitions start faster.
                    f"offsets.topic.replication.factor={rf}",
                    "offsets.topic.num.partitions=3",
                    f"transaction.state.log.replication.factor={rf}",
                    f"transaction.state.log.min.isr={isr}",
                    "transaction.state.log.num.partitions=3",
                    f"share.coordinator.state.topic.replication.factor={rf}",
                    f"share.coordinator.state.topic.min.isr={isr}",
                    *self._replication(rf, isr),
                    *self._threads(self.replicas),
                    "group.initial.rebalance.delay.ms=0",
                    # Topics are made on purpose (topics init); a typo must not make one.
                    "auto.create.topics.enable=false",
                    "log.cleaner.dedupe.buffer.size=16777216",
                    # Deleted topics' files go at once, not a minute later, when the work of
                    # removing hundreds of them would land in the middle of the next test.
                    "log.segment.delete.delay.ms=1000",
                    *(f"{name}={value}" for name, value in self.overrides.items()),
                    "",
                ]
            )
        )
        return path

    @staticmethod
    def _replication(rf: int, isr: int) -> list[str]:
        """A cluster's topics: as many replicas as internal ones, no write acknowledged by all
        in-sync replicas unless they are ``isr`` or more, no leader that missed writes."""
        if rf == 1:
            return []
        return [
            f"default.replication.factor={rf}",
            f"min.insync.replicas={isr}",
            "unclean.leader.election.enable=false",
        ]

    @staticmethod
    def _threads(nodes: int) -> list[str]:
        """Nodes of a local cluster share this host's cores: Kafka's defaults (3 network,
        8 I/O, 10 background threads per node) make them take turns at the CPU, which
        measured as p99 0.69 s against 0.40 s with two of each (3 nodes, 2 cores)."""
        if nodes == 1:
            return []
        return ["num.network.threads=2", "num.io.threads=2", "background.threads=2"]

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until the broker answers clients; stopped, and BrokerSetupError, if not in time."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise BrokerSetupError(f"Kafka exited during start-up:\n{self._tail()}")
            try:
                admin = KafkaAdminClient(**self.admin_config(), request_timeout_ms=5000)
                try:
                    admin.describe_cluster()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.3)
        self.stop()
        raise BrokerSetupError(
            f"Kafka did not answer within {timeout_s}s ({last}):\n{self._tail()}"
        )

    def _tail(self) -> str:
        text = ""
        for name in ("stdout.log", "broker.log"):
            path = self.workdir / name
            if path.exists():
                text += path.read_text(errors="replace")[-3000:]
        return text
