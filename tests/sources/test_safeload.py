"""Safe loading of the sources' pickles: allowlisted classes load, anything else is refused without running."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from dga_engine.sources import safeload
from dga_engine.sources.safeload import SourceFileError, UnsafeSourceFile


class _Exploit:
    """Unpickling this with the default unpickler creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _grasp_array() -> np.ndarray:
    arr = np.empty(2, dtype=object)
    arr[0] = {"qpos": {"WRJTx": 0.1, "robot0:FFJ3": 0.2}, "scale": np.float64(0.06)}
    arr[1] = {"qpos": {"WRJTx": -0.1}, "scale": np.float32(0.1), "energy": np.zeros(3, dtype=np.float32)}
    return arr


def test_numpy2_object_npy_loads(tmp_path):
    path = tmp_path / "code.npy"
    np.save(path, _grasp_array(), allow_pickle=True)
    assert b"numpy._core" in path.read_bytes()  # written by numpy 2
    out = safeload.load_npy(path)
    assert out.shape == (2,) and out[0]["qpos"]["robot0:FFJ3"] == 0.2 and out[0]["scale"] == np.float64(0.06)
    np.testing.assert_array_equal(out[1]["energy"], np.zeros(3, dtype=np.float32))


def test_numpy1_spelling_loads(tmp_path):
    """Files written by numpy 1 name numpy.core.multiarray; they load the same."""
    from .builders import save_object_npy

    path = tmp_path / "old.npy"
    save_object_npy(path, _grasp_array(), protocol=3, numpy1=True)
    assert b"numpy.core.multiarray" in path.read_bytes() and b"numpy._core" not in path.read_bytes()
    assert safeload.load_npy(path)[0]["scale"] == np.float64(0.06)
    save_object_npy(path, _grasp_array(), protocol=2, numpy1=True)  # protocol 2 spells bytes via _codecs.encode
    assert safeload.load_npy(path)[1]["energy"].shape == (3,)


def test_plain_npy_and_pickle_containers(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(safeload.load_npy(tmp_path / "a.npy"), np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    np.testing.assert_array_equal(safeload.load_npy(tmp_path / "f.npy"), np.arange(6.0).reshape(2, 3))
    from collections import OrderedDict

    obj = {"pcs": OrderedDict(a=np.ones((4, 6), np.float32)), "s": {1, 2}, "t": (1.0, 2j)}
    for proto in (2, 3, 4, 5):
        (tmp_path / "x.pkl").write_bytes(pickle.dumps(obj, protocol=proto))
        out = safeload.load_pickle(tmp_path / "x.pkl")
        assert out["s"] == {1, 2} and out["t"] == (1.0, 2j) and out["pcs"]["a"].shape == (4, 6)


@pytest.mark.parametrize("kind", ["npy", "npz", "pkl", "pt"])
def test_exploit_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = _Exploit(str(marker))
    path = tmp_path / f"evil.{kind}"
    if kind == "npy":
        arr = np.empty(1, dtype=object)
        arr[0] = {"qpos": payload, "scale": 0.1}
        np.save(path, arr, allow_pickle=True)
        load = safeload.load_npy
    elif kind == "npz":
        q = np.empty((), dtype=object)
        q[()] = payload
        np.savez(path, qpos=q, scale=np.float32(10.0))
        load = safeload.load_npz
    elif kind == "pkl":
        path.write_bytes(pickle.dumps({"obj": payload}))
        load = safeload.load_pickle
    else:
        torch.save({"metadata": [payload]}, path)
        load = safeload.load_torch
    assert not marker.exists()
    with pytest.raises(UnsafeSourceFile) as err:
        load(path)
    assert "evil" in str(err.value) and "mkdir" in str(err.value)
    assert not marker.exists()


def test_torch_files_load_with_numpy_scalars(tmp_path):
    path = tmp_path / "release.pt"
    meta = [{"rotations": torch.eye(3), "translations": torch.zeros(3), "joint_positions": torch.zeros(24),
             "object_name": "x", "scale": np.float64(0.1)}]
    torch.save({"info": {"num_per_object": {"x": 1}}, "metadata": meta}, path)
    out = safeload.load_torch(path)
    assert out["metadata"][0]["scale"] == 0.1 and torch.equal(out["metadata"][0]["rotations"], torch.eye(3))


@pytest.mark.parametrize("kind", ["npy", "npz", "pkl", "pt"])
def test_truncated_files_name_the_file(tmp_path, kind):
    path = tmp_path / f"bad.{kind}"
    if kind == "npy":
        np.save(path, _grasp_array(), allow_pickle=True)
        load = safeload.load_npy
    elif kind == "npz":
        np.savez(path, a=np.zeros(100))
        load = safeload.load_npz
    elif kind == "pkl":
        path.write_bytes(pickle.dumps({"a": np.zeros(10)}))
        load = safeload.load_pickle
    else:
        torch.save({"a": torch.zeros(10)}, path)
        load = safeload.load_torch
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SourceFileError) as err:
        load(path)
    assert str(path) in str(err.value)
    assert not isinstance(err.value, UnsafeSourceFile)


def test_malformed_inputs(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(SourceFileError, match="not a valid .npy"):
        safeload.load_npy(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(SourceFileError, match="junk.npz"):
        safeload.load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "short.npy", np.zeros(100))
    data = (tmp_path / "short.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-8])
    with pytest.raises(SourceFileError, match="truncated .npy"):
        safeload.load_npy(tmp_path / "short.npy")
    with pytest.raises(SourceFileError, match="cannot read"):
        safeload.load_npy(tmp_path / "missing.npy")
    # a zip member that is itself broken names the member
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as zf:
        zf.writestr("qpos.npy", b"\x93NUMPY garbage")
    with pytest.raises(SourceFileError, match=r"m.npz\[qpos.npy\]"):
        safeload.load_npz(tmp_path / "m.npz")


def test_allowlist_is_small():
    assert all(name.split(".")[0] in {"numpy", "collections", "builtins", "__builtin__", "_codecs"}
               for name in safeload.ALLOWED_GLOBALS)
    assert "builtins.eval" not in safeload.ALLOWED_GLOBALS and "posix.system" not in safeload.ALLOWED_GLOBALS
