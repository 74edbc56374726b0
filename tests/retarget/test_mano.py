"""The MANO file: read from a chumpy pickle by the restricted unpickler, refused when crafted, posed by smplx."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import scipy.sparse

from dga_engine.retarget.keypoints import FINGERTIP_VERTICES, MANO_TO_MEDIAPIPE
from dga_engine.retarget.mano import MANO_ENV, ManoHand, ManoModelMissing, load_mano_arrays, mano_model_path
from dga_engine.sources.safeload import SourceFileError, UnsafeSourceFile, load_chumpy_pickle

from .mano_builders import chumpy_standins, mano_layer, pose_mano, synthetic_mano, write_chumpy_pickle


@pytest.fixture(scope="module")
def model():
    return synthetic_mano()


def _dense(a):
    return a.toarray() if scipy.sparse.issparse(a) else np.asarray(a)


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_pickle_loads_as_numpy(tmp_path, model, protocol):
    path = write_chumpy_pickle(tmp_path / "MANO_RIGHT.pkl", model.arrays, protocol=protocol)
    raw = path.read_bytes()
    assert (
        b"chumpy.ch" in raw
        and b"chumpy.reordering" in raw
        and b"scipy.sparse.csc" in raw
        and b"numpy.core.multiarray" in raw
    )
    arrays = load_mano_arrays(path)
    assert {k: tuple(v.shape) for k, v in arrays.items()} == {
        "v_template": (778, 3),
        "f": (1538, 3),
        "J_regressor": (16, 778),
        "weights": (778, 16),
        "posedirs": (778, 3, 135),
        "shapedirs": (778, 3, 10),
        "kintree_table": (2, 16),
        "hands_components": (45, 45),
        "hands_mean": (45,),
    }
    assert scipy.sparse.issparse(arrays["J_regressor"])
    for key, value in arrays.items():
        np.testing.assert_array_equal(_dense(value), _dense(model.arrays[key]), err_msg=key)
    assert load_chumpy_pickle(path)["bs_style"] == "lbs"  # plain values pass through


def test_mano_hand_keypoints_are_smplx_joints_and_tip_vertices(tmp_path, model):
    arrays = load_mano_arrays(write_chumpy_pickle(tmp_path / "MANO_RIGHT.pkl", model.arrays))
    template = model.arrays["v_template"] * 0.95
    hand = ManoHand(arrays, template, n_comps=24, batch_frames=3)  # batches of 3: the batching is exercised
    rng = np.random.default_rng(1)
    go, hp, tr = rng.normal(size=(7, 3)), rng.normal(size=(7, 24)), rng.normal(scale=0.1, size=(7, 3))
    kp = hand.keypoints(go, hp, tr)
    verts, expected = pose_mano(mano_layer(model, template), go, hp, tr)
    np.testing.assert_allclose(kp, expected, atol=1e-6)
    # Keypoint 4/8/12/16/20 are the fingertip vertices; 0 the wrist joint.
    np.testing.assert_allclose(kp[:, [4, 8, 12, 16, 20]], verts[:, list(FINGERTIP_VERTICES)], atol=1e-6)
    assert MANO_TO_MEDIAPIPE[0] == 0 and sorted(MANO_TO_MEDIAPIPE) == list(range(21))
    with pytest.raises(ValueError, match="components"):
        hand.keypoints(go, hp[:, :6], tr)


class _Payload:
    """Unpickled by the default unpickler, this creates ``path`` (a directory)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_crafted_model_file_is_refused_and_its_payload_never_runs(tmp_path, model):
    marker = tmp_path / "payload-ran"
    with chumpy_standins() as (Ch, _):
        evil = dict(model.arrays, v_template=Ch(model.arrays["v_template"]), hands_mean=_Payload(str(marker)))
        body = pickle.dumps(evil, protocol=2)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(body)
    with pytest.raises(UnsafeSourceFile, match="mkdir") as err:
        load_mano_arrays(path)
    assert "MANO_RIGHT.pkl" in str(err.value) and not marker.exists()
    # A chumpy-looking class the real file does not use is refused too.
    with chumpy_standins() as (Ch, _):
        body = pickle.dumps({"v_template": Ch(np.zeros((778, 3)))}, protocol=2)
    path.write_bytes(body.replace(b"cchumpy.ch\nCh\n", b"cchumpy.ch_ops\nCh\n"))  # protocol 2 GLOBALs are text
    with pytest.raises(UnsafeSourceFile, match="chumpy.ch_ops.Ch"):
        load_chumpy_pickle(path)


def test_not_a_mano_file(tmp_path, model):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({**model.arrays, "posedirs": np.zeros((778, 3, 10))}))
    with pytest.raises(SourceFileError, match="posedirs has shape"):
        load_mano_arrays(path)
    path.write_bytes(pickle.dumps(model.arrays)[:5000])
    with pytest.raises(SourceFileError, match="truncated"):
        load_mano_arrays(path)


def test_missing_model_says_what_to_get(tmp_path, monkeypatch):
    monkeypatch.delenv(MANO_ENV, raising=False)
    with pytest.raises(ManoModelMissing) as err:
        mano_model_path(None)
    msg = str(err.value)
    assert "\n" not in msg and "mano.is.tue.mpg.de" in msg and "register" in msg and "MANO_RIGHT.pkl" in msg
    assert "--mano-model" in msg and MANO_ENV in msg
    with pytest.raises(ManoModelMissing, match="not found"):
        mano_model_path(tmp_path / "nowhere.pkl")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"x")
    monkeypatch.setenv(MANO_ENV, str(tmp_path))  # a folder holding the file works, as with smplx
    assert mano_model_path(None) == tmp_path / "MANO_RIGHT.pkl"
