"""Generator checkpoints read back from a shared root: never a file outside the root, never unsafe weights."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dga_engine.generate import checkpoint as ckpt
from dga_engine.generate.model import GraspDiffusionNet
from dga_engine.generate.normalise import POSE_DIM, PoseNormaliser


@pytest.fixture
def saved(layout):
    from tests.helpers import micro_config

    cfg = micro_config()
    model = GraspDiffusionNet(cfg.model)
    norm = PoseNormaliser(lo=-np.ones(POSE_DIM), hi=np.ones(POSE_DIM))
    meta = ckpt.save(layout, 1, cfg, norm, model, None, epoch=3, step=30, data_hash="d" * 16)
    return layout, meta


def _rewrite_meta(layout, **changes) -> str:
    path = f"{ckpt.round_dir(layout, 1)}/{ckpt.CHECKPOINT_FILE}"
    meta = {**json.load(open(path)), **changes}
    with open(path, "w") as fh:
        json.dump(meta, fh)
    return path


def test_a_saved_checkpoint_loads(saved):
    layout, meta = saved
    loaded = ckpt.load(layout, 1)
    assert loaded.epoch == 3 and loaded.meta["weights"] == meta["weights"]


@pytest.mark.parametrize("name", ["../../../victim.pt", "../round-002/weights-000003.pt", "/etc/passwd",
                                  "weights-000003.pt/../../x.pt", "weights-000003.pt\n", 7, None])
def test_weights_named_outside_the_folder_are_never_loaded(saved, tmp_path, name):
    layout, meta = saved
    # a valid weights file outside the root, its checksum written into the tampered checkpoint.json
    folder = ckpt.round_dir(layout, 1)
    data = open(f"{folder}/{meta['weights']}", "rb").read()
    victim = (
        os.path.normpath(os.path.join(folder, str(name)))
        if isinstance(name, str) and not name.startswith("/")
        else None
    )
    if victim:
        os.makedirs(os.path.dirname(victim), exist_ok=True)
        with open(victim, "wb") as fh:
            fh.write(data)
    _rewrite_meta(layout, weights=name, weights_sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(ckpt.CheckpointError, match="not a file of its own folder"):
        ckpt.load(layout, 1)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.read_meta(layout, 1)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_unsafe_weights_are_refused_in_plain_words(saved, tmp_path):
    layout, meta = saved
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"model": _Payload(str(marker))}, buf)
    folder = ckpt.round_dir(layout, 1)
    with open(f"{folder}/{meta['weights']}", "wb") as fh:
        fh.write(buf.getvalue())
    _rewrite_meta(layout, weights_sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load(layout, 1)
    message = str(err.value)
    assert "is unsafe" in message and "was not loaded" in message and "nothing in it ran" in message
    assert "weights_only=False" not in message and "\n" not in message
    assert not marker.exists()


def test_generate_cli_says_so_in_one_line(saved, tmp_path, box_object):
    from dga_engine.cli.main import app

    layout, meta = saved
    buf = io.BytesIO()
    torch.save({"model": _Payload(str(tmp_path / "pwned"))}, buf)
    with open(f"{ckpt.round_dir(layout, 1)}/{meta['weights']}", "wb") as fh:
        fh.write(buf.getvalue())
    _rewrite_meta(layout, weights_sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    res = CliRunner().invoke(app, ["--root", layout.root, "generate", "--round", "1", "--objects", box_object.object_id,
                                   "--per-object", "2"])
    assert res.exit_code == 1, res.output
    assert "is unsafe" in res.output and "weights_only=False" not in res.output and "Traceback" not in res.output
    assert not (tmp_path / "pwned").exists()


def test_malformed_checkpoint_json_is_a_clear_error(saved):
    layout, _ = saved
    _rewrite_meta(layout, weights_sha256=["x"])
    with pytest.raises(ckpt.CheckpointError, match="malformed"):
        ckpt.read_meta(layout, 1)
    with open(f"{ckpt.round_dir(layout, 1)}/{ckpt.CHECKPOINT_FILE}", "w") as fh:
        fh.write("[1, 2]")
    with pytest.raises(ckpt.CheckpointError, match="not a JSON object"):
        ckpt.read_meta(layout, 1)
