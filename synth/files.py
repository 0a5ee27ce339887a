"""Atomic file writes: a file is either absent or complete, never half-written, and gets the same
permissions as any other file the process creates (temporary files are made private, 0600)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _created_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends
    without an error and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _created_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_output_folder(folder: str | Path, marker: str, what: str) -> bool:
    """Refuse to write into a folder that holds something else: a non-empty folder without ``marker``
    (the file our own output leaves there) is the user's. Returns whether ``marker`` is there (an
    earlier output to resume or replace)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output {folder} is a file, not a folder; choose a new --out")
    if (folder / marker).exists():
        return True
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"output folder {folder} is not empty and holds no {what}; choose a new --out")
    return False
