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

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,199}$")


class UnsafeNameError(ValueError):
    """An external name would escape the storage root or is not a plain file name."""


def safe_name(name: str) -> str:
    """Return ``name`` unchanged if it is a single, plain path component; raise otherwise.

    Allowed: letters, digits, ``. _ + -``, starting with a letter or digit, at most 200 characters.
    Refused: separators, ``..``, absolute paths, empty or hidden names, control characters.
    """
    if not isinstance(name, str) or not _SAFE.match(name) or ".." in name:
        raise UnsafeNameError(
            f"refusing unsafe name {name!r}: external names must be one plain path component "
            "(letters, digits, '._+-', no separators, no '..'); rename the file or entry"
        )
    return name


def resolve_root(root: str | os.PathLike | None = None) -> str:
    """The storage root in use: the argument, else ``$DGA_ROOT``, else ``./storage``."""
    value = str(root) if root is not None else os.environ.get(ROOT_ENV, DEFAULT_ROOT)
    if "://" in value:
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


@dataclass(frozen=True)
class Layout:
    """Paths under one storage root. Local roots give plain paths; URLs give URLs."""

    root: str

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> "Layout":
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
