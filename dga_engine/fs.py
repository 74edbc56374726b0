"""File access under a storage root: local folders and fsspec URLs, with atomic writes.

Local writes go to a hidden temporary name in the same folder, are fsynced, then renamed over the
target (``os.replace`` is atomic on POSIX), so a reader sees the old file or the new one, never half
of one. Object stores (``s3://``) make each put atomic on their own; remote writes are spooled to a
local temporary file and put only when the writer finished without an error.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec

from dga_engine.layout import strip_file_scheme

# errnos that mean the storage refused a write (full, quota, read-only, no permission): not the input's
# fault, and every later write would fail the same way, so stages stop on them instead of recording the
# item at hand as bad.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError of :data:`STORAGE_ERRNOS`."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def local_path(path: str) -> str | None:
    """The plain path of a local ``path`` (``file://`` stripped); None for other URLs."""
    return None if "://" in path and not path.startswith("file://") else strip_file_scheme(path)



def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``path`` and the path as that filesystem names it."""
    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs, paths[0]


def exists(path: str) -> bool:
    local = local_path(path)
    if local is not None:
        return os.path.exists(local)
    fs, p = filesystem(path)
    return fs.exists(p)


def makedirs(path: str) -> None:
    local = local_path(path)
    if local is not None:
        os.makedirs(local, exist_ok=True)
        return
    fs, p = filesystem(path)
    fs.makedirs(p, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Base names directly under ``path`` (empty when it does not exist), sorted."""
    local = local_path(path)
    if local is not None:
        return sorted(os.listdir(local)) if os.path.isdir(local) else []
    fs, p = filesystem(path)
    if not fs.exists(p):
        return []
    return sorted(os.path.basename(x.rstrip("/")) for x in fs.ls(p, detail=False))


def size(path: str) -> int:
    """Size in bytes of the file at ``path`` (FileNotFoundError when there is none)."""
    local = local_path(path)
    if local is not None:
        return os.path.getsize(local)
    fs, p = filesystem(path)
    return int(fs.size(p))


def read_bytes(path: str) -> bytes:
    local = local_path(path)
    if local is not None:
        return Path(local).read_bytes()
    fs, p = filesystem(path)
    with fs.open(p, "rb") as fh:
        return fh.read()


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path).decode("utf-8"))


@contextmanager
def atomic_open(path: str) -> Iterator[Any]:
    """Open ``path`` for binary writing; the file appears under its name only if the block succeeds."""
    local = local_path(path)
    if local is None:
        # An object-store put is atomic, but an fsspec file object is not: it uploads what was written when
        # its ``with`` block exits, even when the block raised. So spool to a local temporary file and put
        # it only after the block succeeded; a failed block leaves the old object (or none) in place.
        fs, p = filesystem(path)
        with tempfile.NamedTemporaryFile(prefix=".dga-upload-", suffix=".tmp") as fh:
            yield fh
            fh.flush()
            fs.put_file(fh.name, p)
        return
    directory = os.path.dirname(local) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(local)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, local)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_json(path: str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def remove(path: str) -> None:
    local = local_path(path)
    if local is not None:
        if os.path.exists(local):
            os.remove(local)
        return
    fs, p = filesystem(path)
    if fs.exists(p):
        fs.rm(p)
