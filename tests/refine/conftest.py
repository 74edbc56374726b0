"""Fixtures of the refine tests (grasps and near misses: :mod:`tests.refine.nearmiss`)."""

from __future__ import annotations

import pytest


@pytest.fixture
def box_asset(object_store, box_object):
    """The shared 5 x 5 x 10 cm box, loaded with its convex part."""
    return object_store.load(box_object.object_id)
