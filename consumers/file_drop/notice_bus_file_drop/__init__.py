"""A bureau whose local system is a batch job reading files from a drop folder (``inbox``).

The contract with the batch system:

- One file per notice version, named from the notice id with ``/`` spelt ``-``:
  ``2026-17.v3.notice.json`` for a PUBLISH or UPDATE, holding ``notice_id``, ``version``,
  ``status`` (``"ACTIVE"``), ``requesting_country``, ``published_at`` (ISO 8601, with offset),
  ``target_countries`` and the person's fields; ``2026-17.v4.withdrawal.json`` for a CANCEL,
  holding ``notice_id``, ``version``, ``reason`` and ``published_at``.
- Files are UTF-8 JSON, names unescaped (``ensure_ascii=False``), keys sorted.
- Files are readable by their owner and group only (mode ``0640``, set exactly, whatever the
  umask): give the batch job's user the adapter's group, or the inbox a set-group-id bit. The
  option ``file_mode`` (an octal string such as ``"0644"``, or an integer) sets another mode,
  e.g. for a batch job in another group; notices hold personal data, keep it as narrow as the
  batch job allows.
- A file appears whole or not at all: it is written as ``.<name>.<random>.tmp`` in the inbox
  (the batch system must ignore names starting with ``.``), synced, renamed onto its final name,
  and the directory is synced before ``write``/``withdraw`` return.
- A version may be dropped again after a crash or retry, with identical bytes; the batch system
  must take in a version it already has as a no-op. Versions only ever increase per notice, and
  no version is dropped after a notice's cancellation (the :class:`LedgerSink` ensures both).
  A withdrawal whose ``reason`` is ``"no longer addressed to this country"`` is not final: a
  later version may follow when the notice addresses the country again.

Copy verification lists the inbox (:meth:`FileDrop.entries`): each notice at the highest
version of its files, ACTIVE for a ``.notice.json``, WITHDRAWN for a ``.withdrawal.json``, with
the content hash of the notice file's fields. That is what the system holds only while the batch
job leaves the files it took in where they are: one that removes or moves them must set
``listable = false``, and its copy is then reported UNVERIFIABLE.

A missing inbox at start is a :class:`ConfigError`; a failing inbox later (full, vanished mount,
no permission) is :class:`LocalSystemUnavailable`, and the adapter retries.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from notice_bus.bureau.sinks.local_system import (
    LocalSystem,
    external_id,
    notice_document,
    withdrawal_document,
)
from notice_bus.bureau.sinks.sink import Health
from notice_bus.errors import ConfigError, LocalSystemUnavailable
from notice_bus.wire.digest import Entry, content_hash
from notice_bus.wire.model import NoticeEvent

FORMATS = ("json",)
# The batch job usually runs as another user, in the adapter's group: it must be able to read,
# and nobody else should (a notice is personal data).
DEFAULT_FILE_MODE = 0o640
_DROPPED = re.compile(r"^(?P<id>[^.].*)\.v(?P<version>[0-9]+)\.(?P<kind>notice|withdrawal)\.json$")


class FileDrop(LocalSystem):
    """Drops one JSON file per notice version into ``inbox``; see the module docstring."""

    def __init__(
        self,
        *,
        inbox: str | os.PathLike[str],
        format: str = "json",
        file_mode: str | int = DEFAULT_FILE_MODE,
        listable: bool = True,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(f"file-drop format {format!r} is not supported; use one of {FORMATS}")
        self.inbox = Path(inbox)
        self.format = format
        self.file_mode = _mode(file_mode)
        self.listable = bool(listable)
        if not self.inbox.is_dir():
            what = "is not a directory" if self.inbox.exists() else "does not exist"
            raise ConfigError(f"file-drop inbox {self.inbox} {what}")

    def write(self, notices: Sequence[NoticeEvent]) -> None:
        self._drop([(_file_name(e, "notice"), notice_document(e)) for e in notices])

    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        self._drop([(_file_name(e, "withdrawal"), withdrawal_document(e)) for e in cancels])

    def entries(self) -> Iterator[Entry] | None:
        """Each notice at its highest dropped version (see the module docstring); None when
        ``listable`` is false. Only the file of that version is read."""
        if not self.listable:
            return None
        return self._entries()

    def _entries(self) -> Iterator[Entry]:
        newest: dict[str, tuple[int, str]] = {}  # external id -> (version, file name)
        try:
            with os.scandir(self.inbox) as found:
                for item in found:
                    m = _DROPPED.match(item.name)
                    if m is None:
                        continue
                    version = int(m["version"])
                    held = newest.get(m["id"])
                    # At equal versions the withdrawal wins: a cancel is final.
                    cancel = m["kind"] == "withdrawal"
                    if held is None or held[0] < version or (held[0] == version and cancel):
                        newest[m["id"]] = (version, item.name)
            for version, name in newest.values():
                body = json.loads((self.inbox / name).read_bytes())
                if name.endswith(".withdrawal.json"):
                    yield Entry(body["notice_id"], version, "WITHDRAWN", "")
                else:
                    digest = content_hash(body["requesting_country"], body)
                    yield Entry(body["notice_id"], version, "ACTIVE", digest)
        except OSError as exc:
            raise LocalSystemUnavailable(f"file-drop cannot list {self.inbox}: {exc}") from exc

    def health(self) -> Health:
        try:
            if not self.inbox.is_dir():
                return Health(False, f"inbox {self.inbox} is missing or not a directory")
            if not os.access(self.inbox, os.W_OK | os.X_OK):
                return Health(False, f"inbox {self.inbox} is not writable")
        except (OSError, ValueError) as exc:
            return Health(False, f"inbox {self.inbox}: {exc}")
        return Health(True)

    def _drop(self, files: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not files:
            return
        for name, body in files:
            self._write_atomically(name, _encode(body))
        # The renames are durable only once the directory entry is on disk.
        try:
            fd = os.open(self.inbox, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            except OSError as exc:
                # Some network filesystems cannot sync a directory at all; never retriable.
                if exc.errno != errno.EINVAL:
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise LocalSystemUnavailable(f"file-drop inbox {self.inbox}: {exc}") from exc

    def _write_atomically(self, name: str, data: bytes) -> None:
        final = self.inbox / name
        tmp = self.inbox / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
            try:
                os.fchmod(fd, self.file_mode)  # exactly: the umask would narrow it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError as exc:
            # The temp file may never have been created, or its folder may be gone.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise LocalSystemUnavailable(f"file-drop cannot write {final}: {exc}") from exc


def _mode(value: str | int) -> int:
    """A permission mode from an int or an octal string (``"0640"``, ``"640"``, ``"0o640"``)."""
    if isinstance(value, bool):
        raise ConfigError(f"file-drop file_mode must be octal like '0640', not {value!r}")
    try:
        mode = value if isinstance(value, int) else int(value.strip().removeprefix("0o"), 8)
    except (AttributeError, ValueError) as exc:
        raise ConfigError(f"file-drop file_mode must be octal like '0640', not {value!r}") from exc
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"file-drop file_mode {value!r} is not a permission mode (0 to 0777)")
    return mode


def _file_name(event: NoticeEvent, kind: str) -> str:
    return f"{external_id(event)}.v{event.version}.{kind}.json"


def _encode(body: dict[str, Any]) -> bytes:
    # Sorted keys: a replay of the same version writes the same bytes.
    text = json.dumps(body, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    return text.encode("utf-8")
