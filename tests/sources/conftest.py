"""Fixtures for the source loaders: tiny datasets in each source's exact format (see builders.py)."""

from __future__ import annotations

import pytest

from . import builders  # noqa: E402


@pytest.fixture
def dexgraspnet_root(tmp_path):
    root = tmp_path / "dexgraspnet"
    return root, builders.write_dexgraspnet(root)


@pytest.fixture
def unidexgrasp_root(tmp_path):
    root = tmp_path / "unidexgrasp"
    return root, builders.write_unidexgrasp(root)


@pytest.fixture
def multidex_root(tmp_path):
    root = tmp_path / "multidex"
    return root, builders.write_multidex(root)


@pytest.fixture
def dga_root(tmp_path):
    root = tmp_path / "dga"
    return root, builders.write_dga(root)


@pytest.fixture
def realdex_root(tmp_path):
    root = tmp_path / "realdex"
    truths = builders.write_realdex(root)
    raw = builders.write_realdex_raw(root)
    return root, {**truths, raw.object_key: raw}
