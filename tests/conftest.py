"""Shared fixtures: a temporary storage root and small objects built in the real on-disk format."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The suite's own Prefect home (database, profiles), inherited by the CLI subprocesses: a database under ~/.prefect
# migrated by another Prefect version on the same machine would stop every temporary API server at startup.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="dga-tests-prefect-home-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def layout(tmp_path):
    from dga_engine.layout import Layout

    return Layout.at(tmp_path / "root")


@pytest.fixture
def object_store(layout):
    from dga_engine.objects.store import ObjectStore

    return ObjectStore(layout)


@pytest.fixture
def box_object(object_store):
    """A 5 x 5 x 10 cm box (convex: its own single part) in the object store; returns its ObjectMeta."""
    import trimesh

    from dga_engine.objects.store import write_simple_object

    return write_simple_object(object_store, trimesh.creation.box(extents=[0.05, 0.05, 0.10]), "box 5x5x10 cm")
