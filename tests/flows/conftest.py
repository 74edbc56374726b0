"""Fixtures for the deployment tests: moto's S3 server and a storage root on it (see local_services.py)."""

from __future__ import annotations

import uuid

import pytest

from .local_services import S3_KEY, S3_SECRET, s3_env, start_moto


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server on a free port of 127.0.0.1, for the module's tests; stopped afterwards."""
    svc, endpoint = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield endpoint
    finally:
        svc.stop()


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch):
    """``s3://<fresh bucket>/root`` on moto, configured in this process the way the worker environment does it.

    fsspec turns FSSPEC_S3_* into its config when it is imported, which has happened long before this
    fixture, so the same values are also put into ``fsspec.config.conf`` (undone after the test).
    """
    import fsspec

    env = s3_env(s3_endpoint)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint, "key": S3_KEY, "secret": S3_SECRET})
    bucket = f"dga-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(bucket)
    return f"s3://{bucket}/root"
