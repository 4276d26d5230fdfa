"""Where throwaway servers (the local broker and cluster) keep their files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: Where a throwaway broker keeps its files: memory. On a disk, the kernel's writeback of the
#: broker's memory-mapped index pages made the next index append wait behind the filesystem's
#: journal, holding produce requests for seconds (README, Performance: the stalls).
_MEMORY = Path("/dev/shm")


def scratch_dir(prefix: str) -> Path:
    """A new temporary folder in memory (tmpfs, ``/dev/shm``) where the machine has one with
    1 GiB free, else in the usual temporary folder."""
    root: Path | None = None
    try:
        if _MEMORY.is_dir() and shutil.disk_usage(_MEMORY).free >= 1 << 30:
            root = _MEMORY
    except OSError:
        root = None
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=prefix))
