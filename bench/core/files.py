"""Files and folders that are complete or absent: written beside their final name, then renamed.

A reader (or a rerun after a kill) sees the old version or the new one, never a part;
a failed write leaves no staging file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(handle)``: into a staging file beside it, flushed to disk, then renamed over it.

    Creates the parent folder. On any failure the staging file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def staging_folder(final: Path) -> Iterator[Path]:
    """A new empty folder beside ``final`` to fill; removed on exit unless renamed (to ``final``) inside the block."""
    final = Path(final)
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
