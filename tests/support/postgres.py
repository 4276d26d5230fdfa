"""A throwaway PostgreSQL cluster from the local binaries (initdb + pg_ctl), as pytest-postgresql
does: a temporary data folder, a free port on 127.0.0.1, trust authentication, stopped at the end.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from notice_bus.runtime.local_broker import free_port


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


class LocalPostgres:
    def __init__(self) -> None:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError(
                "PostgreSQL's initdb/pg_ctl were not found. Install them (Debian: apt-get install"
                " postgresql), or set NOTICE_BUS_TEST_DATABASE_URL to an existing server."
            )
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="notice-bus-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._user: str | None = "postgres" if os.geteuid() == 0 else None
        if self._user:
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        self._run(
            [
                self._initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        )
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300 -c shared_buffers=256MB"
        )
        self._run(
            [
                self._pg_ctl,
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.dir / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        return self.url

    def stop(self) -> None:
        if self.data.exists():
            self._run([self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, cmd: list[str], check: bool = True) -> None:
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir)
        if check and done.returncode != 0:
            log = self.dir / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}{tail}")
