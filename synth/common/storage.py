"""Where datasets live: a local folder or any fsspec URL (``s3://``, ``gs://``, ``memory://``, ...).

One small interface for the few operations a dataset needs, so writers, readers and jobs do not
care where their files are. Local folders (plain paths and ``file://`` URLs) keep the full
guarantees of :mod:`synth.common.files`: a file is written to a temporary name and renamed into place.
On object stores (S3, GCS, Azure, memory) an object becomes visible only when its upload is
complete, so each file is written straight to its key: readers never see half a file, but there is
no rename, and a folder is not a thing that exists on its own. Other fsspec filesystems get a
temporary key and a move. fsspec is imported only when a URL is used.
"""

from __future__ import annotations

import os
import posixpath
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .files import atomic_path, json_bytes, remove_temporaries, write_atomic

# stores where one upload is one atomic commit of the whole object
ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory", "oss", "r2"})


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL other than ``file://`` (which is a local path)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def as_location(location: str | Path) -> Path | str:
    """A URL stays a string (``pathlib`` would fold its ``//``); anything else becomes a ``Path``."""
    return str(location) if is_url(location) else Path(location)


def local_path(location: str | Path) -> Path:
    """A local path given as a path or a ``file://`` URL."""
    text = str(location)
    return Path(text[len("file://"):]) if text.startswith("file://") else Path(text)


class Store:
    """A folder at ``location``: a local path, a ``file://`` URL or any fsspec URL. Paths given to
    its methods are relative to the folder and use ``/``."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        if is_url(location):
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(self.location)
            self.root = root.rstrip("/")
            self.local: Path | None = None
        else:
            self.fs = None
            self.root = str(local_path(location))
            self.local = Path(self.root)

    def __reduce__(self) -> tuple[Any, tuple[str]]:  # shipped to workers by location
        return Store, (self.location,)

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    def __str__(self) -> str:
        return self.location

    @property
    def where(self) -> Path | str:
        """The folder as results report it: a local path, or the URL."""
        return self.local if self.local is not None else self.location

    @property
    def protocols(self) -> set[str]:
        """The names of the store's fsspec protocol (``{"file"}`` for a local folder)."""
        protocol = self.fs.protocol if self.fs is not None else "file"
        return {protocol} if isinstance(protocol, str) else set(protocol)

    @property
    def atomic_put(self) -> bool:
        return bool(self.protocols & ATOMIC_PUT)

    def path(self, relative: str = "") -> str:
        """The full path (local) or the filesystem path (URL) of ``relative``."""
        if self.local is not None:
            return str(self.local / relative) if relative else self.root
        return posixpath.join(self.root, relative) if relative else self.root

    def url(self, relative: str = "") -> str:
        """``relative`` as the user would write it: a local path, or a URL with the store's scheme."""
        if self.local is not None:
            return self.path(relative)
        return self.location.rstrip("/") + ("/" + relative if relative else "")

    # reading
    def exists(self, relative: str = "") -> bool:
        if self.local is not None:
            return Path(self.path(relative)).exists()
        return self.fs.exists(self.path(relative))

    def is_file(self, relative: str) -> bool:
        if self.local is not None:
            return Path(self.path(relative)).is_file()
        return self.fs.isfile(self.path(relative))

    def is_dir(self, relative: str = "") -> bool:
        if self.local is not None:
            return Path(self.path(relative)).is_dir()
        return self.fs.isdir(self.path(relative))

    def read_bytes(self, relative: str) -> bytes:
        if self.local is not None:
            return Path(self.path(relative)).read_bytes()
        return self.fs.cat_file(self.path(relative))

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode("utf-8")

    def open(self, relative: str, mode: str = "rb") -> IO:
        if self.local is not None:
            return open(self.path(relative), mode)
        return self.fs.open(self.path(relative), mode)

    def files(self, folder: str = "") -> list[str]:
        """Every file under ``folder`` (recursively), relative to the store's root, sorted."""
        if self.local is not None:
            base = Path(self.path(folder))
            if not base.is_dir():
                return []
            return sorted(p.relative_to(self.local).as_posix() for p in base.rglob("*") if p.is_file())
        base = self.path(folder)
        if not self.fs.isdir(base):
            return []
        prefix = self.root + "/"
        return sorted(p[len(prefix):] if p.startswith(prefix) else p for p in self.fs.find(base))

    def glob(self, folder: str, pattern: str) -> list[str]:
        """Files directly in ``folder`` whose names match ``pattern``, relative to the root, sorted."""
        import fnmatch

        if self.local is not None:
            base = Path(self.path(folder))
            return sorted(p.relative_to(self.local).as_posix() for p in base.glob(pattern) if p.is_file()) if base.is_dir() else []
        base = self.path(folder)
        if not self.fs.isdir(base):
            return []
        names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False)]
        return sorted(posixpath.join(folder, n) for n in names if fnmatch.fnmatch(n, pattern))

    def is_empty(self) -> bool:
        """Whether the folder is missing or holds nothing."""
        if self.local is not None:
            return not self.local.is_dir() or not any(self.local.iterdir())
        return not self.is_dir() or not self.fs.ls(self.root, detail=False)

    def size(self, relative: str) -> int:
        if self.local is not None:
            return Path(self.path(relative)).stat().st_size
        return int(self.fs.size(self.path(relative)))

    # writing
    def make_folder(self, relative: str = "") -> None:
        """Create a folder (object stores have none: nothing to do)."""
        if self.local is not None:
            Path(self.path(relative)).mkdir(parents=True, exist_ok=True)
        elif not self.atomic_put:
            self.fs.makedirs(self.path(relative), exist_ok=True)

    def write_atomic(self, relative: str, data: bytes) -> None:
        """Write a whole file so that no reader ever sees part of it."""
        if self.local is not None:
            write_atomic(self.path(relative), data)
        else:
            self._put(relative, lambda key: self.fs.pipe_file(key, data))

    def _put(self, relative: str, put: Callable[[str], None]) -> None:
        """Write a remote file with ``put(key)``: straight to its key where one upload is atomic,
        else to a temporary key in its (made) folder that is then moved into place."""
        target = self.path(relative)
        if self.atomic_put:
            put(target)
            return
        folder = posixpath.dirname(target)
        self.fs.makedirs(folder, exist_ok=True)  # a file system (unlike an object store) has folders to make
        tmp = posixpath.join(folder, f".tmp-{os.getpid()}-{posixpath.basename(target)}")
        put(tmp)
        self.fs.mv(tmp, target)

    def write_json(self, relative: str, data: Any, default: Callable[[Any], Any] | None = None) -> None:
        self.write_atomic(relative, json_bytes(data, default))

    def append(self, relative: str, text: str) -> None:
        """Append to a text file: in place on a local disk; elsewhere (object stores cannot append)
        the file is read and written whole, so callers append in batches."""
        if self.local is not None:
            with open(self.path(relative), "a", encoding="utf-8") as handle:
                handle.write(text)
            return
        old = self.read_bytes(relative) if self.exists(relative) else b""
        self.write_atomic(relative, old + text.encode("utf-8"))

    def upload(self, local: str | Path, relative: str) -> None:
        """Move a finished local file into the store atomically (the local file is consumed)."""
        if self.local is not None:
            target = Path(self.path(relative))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, target)
            return
        self._put(relative, lambda key: self.fs.put_file(str(local), key))
        os.unlink(local)

    @contextmanager
    def staged(self, relative: str) -> Iterator[Path]:
        """A local file to write ``relative`` into: renamed (local) or uploaded (elsewhere) when the
        block ends without an error, removed otherwise. For files written piece by piece."""
        if self.local is not None:
            with atomic_path(self.path(relative)) as tmp:
                yield tmp
            return
        import tempfile

        handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=posixpath.splitext(relative)[1])
        os.close(handle)
        try:
            yield Path(tmp)
            self.upload(tmp, relative)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def replace(self, source: str, target: str) -> None:
        if self.local is not None:
            os.replace(self.path(source), self.path(target))
        else:
            self.fs.mv(self.path(source), self.path(target))

    def remove(self, relative: str) -> None:
        if self.local is not None:
            Path(self.path(relative)).unlink(missing_ok=True)
        elif self.fs.exists(self.path(relative)):
            self.fs.rm(self.path(relative))

    def remove_all(self) -> None:
        """Delete the folder and everything in it."""
        import shutil

        if self.local is not None:
            if self.local.exists():
                shutil.rmtree(self.local)
        elif self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)

    def remove_temporaries(self) -> None:
        """Delete the temporary files an interrupted run left behind."""
        if self.local is not None:
            if self.local.is_dir():
                remove_temporaries(self.local)
            return
        for relative in self.files():
            if posixpath.basename(relative).startswith(".tmp-"):
                self.remove(relative)


def check_output_folder(folder: "str | Path | Store", marker: str, what: str) -> bool:
    """Refuse to write into a folder that holds something else: a non-empty folder without ``marker``
    (the file our own output leaves there) is the user's. Returns whether ``marker`` is there (an
    earlier output to resume or replace)."""
    store = as_store(folder)
    if store.local is not None and store.local.exists() and not store.local.is_dir():
        raise NotADirectoryError(f"output {folder} is a file, not a folder; choose a new --out")
    if store.exists(marker):
        return True
    if not store.is_empty():
        raise FileExistsError(f"output folder {folder} is not empty and holds no {what}; choose a new --out")
    return False


def as_store(location: "str | Path | Store") -> Store:
    return location if isinstance(location, Store) else Store(location)
