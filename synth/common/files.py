"""Atomic file writes: a file is either absent or complete, never half-written, and gets the same
permissions as any other file the process creates (temporary files are made private, 0600)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def _created_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temporary(path: Path) -> tuple[int, str]:
    """An open, private temporary file beside ``path`` (its folder made when missing): named after
    the process and the target, which is cheaper than a random name; random when that one is taken."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{os.getpid()}-{path.name}"
    try:
        return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o600), str(tmp)
    except FileExistsError:
        return tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)


def _discard(tmp: str) -> None:
    if os.path.exists(tmp):
        os.unlink(tmp)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends
    without an error and is removed otherwise."""
    path = Path(path)
    fd, tmp = _temporary(path)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _created_mode())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (as :func:`atomic_path` does, through the temporary file's own handle)."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), _created_mode())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def json_bytes(data: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Indented, key-sorted JSON: the one layout of every JSON file written."""
    return (json.dumps(data, indent=2, sort_keys=True, default=default) + "\n").encode()


def write_json(path: Path, data: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Write indented, key-sorted JSON atomically."""
    write_atomic(path, json_bytes(data, default))


def remove_temporaries(root: Path) -> None:
    """Delete the temporary files an interrupted run left behind."""
    for tmp in root.rglob(".tmp-*"):
        if tmp.is_file():
            tmp.unlink()


def link_file(source: Path, target: Path) -> None:
    """``target`` as a symbolic link to ``source``, or a copy where links cannot be made."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(Path(source).resolve(), target)
    except OSError:
        shutil.copy2(source, target)
