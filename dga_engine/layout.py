"""The storage root's layout: every path the engine reads or writes is named here, once.

A root is a local folder (default ``./storage`` or ``$DGA_ROOT``) or any fsspec URL (``s3://bucket/dga``).
Names that come from outside (Objaverse uids, source object codes, archive members) pass through
:func:`safe_name` before they become part of a path, so nothing escapes the root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "./storage"
ROOT_ENV = "DGA_ROOT"
DEFAULT_DATASET = "dga"

OBJECTS_DIR = "objects"
QUARANTINE_DIR = "objects/_quarantine"
CACHE_DIR = "cache"
SOURCES_DIR = "sources"
DATASETS_DIR = "datasets"
RUNS_DIR = "runs"
MODELS_DIR = "models"

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,199}")  # used with fullmatch: '$' would allow a final newline


class UnsafeNameError(ValueError):
    """An external name would escape the storage root or is not a plain file name."""


class RootError(ValueError):
    """The storage root cannot be used (empty, a file, an unknown URL protocol); the message says what to do."""


def strip_file_scheme(path: str) -> str:
    """``path`` without a leading ``file://`` (other URLs and plain paths unchanged)."""
    return path[len("file://"):] if path.startswith("file://") else path


def safe_name(name: str) -> str:
    """Return ``name`` unchanged if it is a single, plain path component; raise otherwise.

    Allowed: letters, digits, ``. _ + -``, starting with a letter or digit, at most 200 characters.
    Refused: separators, ``..``, absolute paths, empty or hidden names, control characters.
    """
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or ".." in name:
        raise UnsafeNameError(
            f"refusing unsafe name {name!r}: external names must be one plain path component "
            "(letters, digits, '._+-', no separators, no '..'); rename the file or entry"
        )
    return name


def resolve_root(root: str | os.PathLike | None = None) -> str:
    """The storage root in use: the argument, else ``$DGA_ROOT``, else ``./storage``.

    Raises :class:`RootError` for a root that cannot be meant: empty (which would silently mean the current
    directory), holding a NUL or a newline, an existing file, or a URL whose protocol fsspec does not know
    (or whose package is not installed).
    """
    value = str(root) if root is not None else os.environ.get(ROOT_ENV, DEFAULT_ROOT)
    if not value.strip():
        raise RootError(f"the storage root is empty (--root '' or {ROOT_ENV}=''): name a folder or an fsspec URL, "
                        f"or leave it unset for {DEFAULT_ROOT}")
    if any(c in value for c in "\x00\n\r"):
        raise RootError(f"the storage root {value!r} holds a NUL or line break: name a folder or an fsspec URL")
    if "://" in value and not value.startswith("file://"):
        _check_protocol(value)
        return value.rstrip("/")
    local = strip_file_scheme(value)
    if not local.strip():
        raise RootError(f"the storage root {value!r} names no folder: give file:///absolute/path or a plain path")
    try:
        path = Path(local).expanduser().resolve()
        is_file = path.exists() and not path.is_dir()
    except OSError as exc:  # e.g. a component longer than the file system allows
        raise RootError(f"cannot use the storage root {local!r}: {exc.strerror or exc}") from None
    if is_file:
        raise RootError(f"the storage root {path} is a file, not a folder: point --root (or {ROOT_ENV}) at a folder")
    return ("file://" + str(path)) if value.startswith("file://") else str(path)


def _check_protocol(url: str) -> None:
    import fsspec

    *chained, target = url.split("::")  # fsspec chains: simplecache::s3://bucket/prefix
    protocol, _, rest = target.partition("://")
    if not rest.strip("/"):
        raise RootError(f"the storage root {url!r} names no bucket or folder: use e.g. {protocol}://bucket/prefix")
    for name in [*chained, protocol]:
        try:
            fsspec.get_filesystem_class(name)
        except ValueError:
            raise RootError(f"the storage root {url!r} uses the unknown protocol {name!r}: use a folder or an fsspec "
                            "URL such as s3://bucket/prefix") from None
        except ImportError as exc:
            install = _EXTRAS.get(name)
            fix = f"pip install 'dga-engine[{install}]'" if install else f"install the fsspec backend it names ({exc})"
            raise RootError(f"the storage root {url!r} needs a package that is not installed: {fix}") from None


# Protocols whose fsspec backend is an extra of dga-engine (pyproject.toml).
_EXTRAS = {"s3": "s3", "s3a": "s3"}


@dataclass(frozen=True)
class Layout:
    """Paths under one storage root. Local roots give plain paths; URLs give URLs."""

    root: str

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> Layout:
        return cls(resolve_root(root))

    @property
    def is_local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file://")

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def objects(self) -> str:
        return self.join(OBJECTS_DIR)

    def object_dir(self, object_id: str) -> str:
        return self.join(OBJECTS_DIR, safe_name(object_id))

    def quarantine(self) -> str:
        return self.join(QUARANTINE_DIR)

    def cache(self, kind: str) -> str:
        return self.join(CACHE_DIR, safe_name(kind))

    def source(self, name: str) -> str:
        return self.join(SOURCES_DIR, safe_name(name))

    def dataset(self, name: str = DEFAULT_DATASET) -> str:
        return self.join(DATASETS_DIR, safe_name(name))

    def runs(self) -> str:
        return self.join(RUNS_DIR)

    def models(self) -> str:
        return self.join(MODELS_DIR)
