"""Fixtures of the store's tests: the grasp-table factory of :mod:`tests.helpers` and a dataset."""

from __future__ import annotations

import pytest

from tests.helpers import make_grasps, make_rejects


@pytest.fixture
def grasps():
    return make_grasps


@pytest.fixture
def dataset(layout):
    from dga_engine.dataset.store import Dataset

    return Dataset(layout)


@pytest.fixture
def rejects_of():
    return make_rejects
