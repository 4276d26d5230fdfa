"""Apache Kafka's official jars, fetched once from Maven Central by Maven (``kafka/pom.xml``)
into ``~/.cache/notice-bus``, and the Java that runs them: what :mod:`local_broker` starts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from notice_bus.errors import BrokerSetupError

KAFKA_VERSION = "4.1.1"
_POM = Path(__file__).resolve().parents[3] / "kafka" / "pom.xml"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "notice-bus"


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerSetupError(
            "Java 17 or newer is needed to run the local Kafka broker, and no `java` is on PATH."
            " Install it (Debian: apt-get install openjdk-17-jre-headless), or set"
            " KAFKA_BOOTSTRAP_SERVERS to an existing cluster."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)', out)
    if m is None or int(m.group(1)) < 17:
        raise BrokerSetupError(f"Kafka {KAFKA_VERSION} needs Java 17 or newer; {java} says: {out}")
    return java


def resolve_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder holding Kafka's jars and their dependencies, fetched once with Maven."""
    libs = cache_dir() / f"kafka-{version}" / "libs"
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerSetupError(
            "Maven is needed once, to fetch Kafka's jars from Maven Central, and no `mvn` is on"
            " PATH. Install it (Debian: apt-get install maven), or set KAFKA_BOOTSTRAP_SERVERS."
        )
    if not _POM.is_file():
        raise BrokerSetupError(f"{_POM} is missing; run notice-bus from its source tree")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(_POM),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BrokerSetupError(
            f"Maven could not fetch Kafka {version}: {(done.stdout + done.stderr)[-2000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".complete").touch()
    return libs
