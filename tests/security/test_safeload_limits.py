"""Source files that declare more than they hold: refused before anything is allocated, never a crash.

The crafted files are loaded one after the other in one fresh interpreter, so a crash (numpy segfaults
on some crafted states) or a huge allocation shows up as a missing result or as growth of the child's
peak memory instead of taking pytest down.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from . import payloads

_CHILD = r"""
import json, resource, sys
from dga_engine.sources import safeload
loader = {".npy": safeload.load_npy, ".npz": safeload.load_npz, ".pt": safeload.load_torch,
          ".pkl": safeload.load_pickle}
import torch  # imported up front, so its own memory does not count as a load's
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        loader[path[path.rindex("."):]](path)
        out = {"error": None}
    except safeload.SourceFileError as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    out["grew_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    out["path"] = path
    print(json.dumps(out), flush=True)
"""

BUILDERS = {
    "bytearray.npy": lambda p: payloads.write_object_npy(p, payloads.bytearray_of(1_300_000_000)),
    "reconstruct_O8.npy": lambda p: payloads.write_object_npy(p, payloads.reconstruct_of(300_000_000, "O8")),
    "reconstruct_f8.npy": lambda p: payloads.write_object_npy(p, payloads.reconstruct_of(300_000_000, "f8")),
    "state_f8.npy": lambda p: payloads.write_object_npy(p, payloads.float_array_declared(300_000_000)),
    "short_list_2.npy": lambda p: payloads.write_object_npy(p, payloads.object_array_short_list(2)),
    "short_list_big.npy": lambda p: payloads.write_object_npy(p, payloads.object_array_short_list(300_000_000)),
    "pointer.npy": lambda p: payloads.write_object_npy(p, payloads.pointer_scalar()),
    "ndarray_called.npy": lambda p: payloads.write_object_npy(p, payloads.ndarray_called(10**9)),
    "bomb.npz": lambda p: payloads.write_npz_bomb(p, 96 << 20),
    "bomb.pt": lambda p: payloads.write_pt_bomb(p, 96 << 20),
    "short_list.pt": lambda p: payloads.write_pt_with_pickle(p, (b"(K\x01K\x02e", b"(K\x01e")),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("crafted")
    paths = [str(BUILDERS[name](folder / name)) for name in BUILDERS]
    res = subprocess.run([sys.executable, "-c", _CHILD, *paths], capture_output=True, text=True, timeout=300)
    out = {}
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[r["path"].rsplit("/", 1)[-1]] = r
    out["_status"] = {"returncode": res.returncode, "stderr": res.stderr[-2000:]}
    return out


def result(results: dict, name: str) -> dict:
    assert name in results, f"the loader crashed on {name} (child exit status {results['_status']})"
    return results[name]


def _refused(out: dict, *words: str, max_mb: float = 48.0) -> None:
    assert out["error"] == "UnsafeSourceFile", out
    for w in words:
        assert w in out["message"], out
    assert out["grew_mb"] < max_mb, f"the refused load still took {out['grew_mb']:.0f} MB"


def test_bytearray_of_a_size_is_refused(results, tmp_path):
    assert len(payloads.write_object_npy(tmp_path / "a.npy", payloads.bytearray_of(1_300_000_000)).read_bytes()) < 400
    _refused(result(results, "bytearray.npy"), "bytearray")


@pytest.mark.parametrize("name", ["reconstruct_O8.npy", "reconstruct_f8.npy", "state_f8.npy"])
def test_declared_array_sizes_beyond_the_file_are_refused(results, name):
    _refused(result(results, name), "more than the file can hold")


@pytest.mark.parametrize("name", ["short_list_2.npy", "short_list_big.npy"])
def test_object_array_with_a_short_list_is_refused_not_a_crash(results, name):
    _refused(result(results, name))


def test_crafted_dtype_cannot_turn_bytes_into_pointers(results):
    _refused(result(results, "pointer.npy"), "dtype")


def test_ndarray_is_not_callable_from_a_pickle(results):
    out = result(results, "ndarray_called.npy")
    assert out["error"] in ("SourceFileError", "UnsafeSourceFile") and out["grew_mb"] < 48, out


@pytest.mark.parametrize("name", ["bomb.npz", "bomb.pt"])
def test_zip_bombs_are_refused_before_inflating(results, name):
    _refused(result(results, name), "zip bomb", max_mb=32)


def test_object_array_short_list_inside_a_torch_file(results):
    out = result(results, "short_list.pt")
    assert out["error"] == "UnsafeSourceFile" and "2 elements comes with 1" in out["message"], out


def test_real_files_still_load(tmp_path):
    from dga_engine.sources import safeload

    arr = np.empty(3, dtype=object)
    arr[:] = [{"qpos": {"a": 1.0}, "scale": np.float64(0.1)}, {"x": np.arange(5, dtype=np.float32)}, [np.zeros((2, 2))]]
    np.save(tmp_path / "g.npy", arr, allow_pickle=True)
    out = safeload.load_npy(tmp_path / "g.npy")
    assert type(out) is np.ndarray and out[0]["scale"] == 0.1
    assert type(out[1]["x"]) is np.ndarray and out[1]["x"].tolist() == [0, 1, 2, 3, 4]
    assert type(out[2][0]) is np.ndarray
    np.savez_compressed(tmp_path / "z.npz", a=np.zeros(100_000), q=arr)
    z = safeload.load_npz(tmp_path / "z.npz")
    assert z["a"].shape == (100_000,) and z["q"][0]["qpos"]["a"] == 1.0
    import torch

    torch.save({"metadata": [{"scale": np.float64(2.0), "a": np.ones(3), "t": torch.ones(2)}]}, tmp_path / "t.pt")
    m = safeload.load_torch(tmp_path / "t.pt")["metadata"][0]
    assert m["scale"] == 2.0 and type(m["a"]) is np.ndarray and m["t"].tolist() == [1.0, 1.0]
