"""The fuzz run, in a child process of ``test_fuzz.py``: random bytes and random records into every source
loader and into ``filter_table``. Prints one JSON summary line; a crash shows up as the child's exit status.

    python -m tests.security.fuzz_driver WORKDIR SEED CASES

Under WORKDIR: ``src/<source>`` (valid tiny sources, then mutated copies), ``root`` (the storage root),
``cwd`` (the working directory while fuzzing) and ``tmp`` ($TMPDIR); only ``root`` may gain files.
"""

from __future__ import annotations

import json
import math
import random
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

# Values a hostile or broken file may hold where a number, a name or an array is expected.
_NAMES = ["", ".", "..", "../x", "/etc/passwd", "a/../../b", "x" * 5000, "a\nb", "a\x00b", "ä", "con", "a b", "+", "-x"]
_NUMBERS = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, 1e300, -1e300, math.inf, -math.inf, math.nan, 2**63, -(2**63), 5, True]


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 2 else 5)
    if kind == 0:
        return rng.choice(_NUMBERS)
    if kind == 1:
        return rng.uniform(-10, 10)
    if kind == 2:
        return rng.choice(_NAMES)
    if kind == 3:
        return None
    if kind == 4:
        return np.asarray(rng.choice([_NUMBERS[:3], [[1.0]], np.zeros((3, 3)), np.full(24, np.nan), np.eye(3) * 5]))
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 6:
        return {
            rng.choice(_NAMES + ["qpos", "scale", "rotations"]): _value(rng, depth + 1) for _ in range(rng.randrange(4))
        }
    if kind == 7:
        return np.asarray(rng.random(), dtype=rng.choice([np.float32, np.float64, np.int64]))
    return tuple(_value(rng, depth + 1) for _ in range(rng.randrange(4)))


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    how = rng.randrange(4)
    if how == 0 or not data:
        return rng.randbytes(rng.randrange(4096))
    if how == 1:
        return data[: rng.randrange(len(data))]
    if how == 2:
        out = bytearray(data)
        for _ in range(rng.randrange(1, 17)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    a, b = sorted(rng.randrange(len(data)) for _ in range(2))
    return data[:a] + data[b:] + data[a:b]


# ---- random records in each source's own container format -------------------------------------------------


def _dexgraspnet_records(rng: random.Random, path: Path) -> None:
    from dga_engine.sources.kinematics import source_hand
    from tests.sources.builders import save_object_npy

    keys = source_hand("dexgraspnet_mjcf").joint_order + ["WRJTx", "WRJTy", "WRJTz", "WRJRx", "WRJRy", "WRJRz"]
    arr = np.empty(rng.randrange(1, 6), dtype=object)
    for i in range(len(arr)):
        qpos = {k: (_value(rng) if rng.random() < 0.3 else rng.uniform(-1, 1)) for k in keys if rng.random() < 0.95}
        arr[i] = rng.choice([{"qpos": qpos, "scale": _value(rng)}, {"qpos": qpos, "scale": 0.1}, _value(rng)])
    save_object_npy(path, arr)


def _release_records(rng: random.Random, path: Path) -> None:
    import torch

    meta = []
    for _ in range(rng.randrange(1, 6)):
        rec = {
            "rotations": torch.tensor(
                rng.choice(
                    [
                        np.eye(3),
                        np.eye(3) * 5,
                        np.zeros((3, 3)),
                        np.diag([1.0, 1, -1]),
                        np.full((3, 3), np.nan),
                        np.zeros(4),
                    ]
                ),
                dtype=torch.float32,
            ),
            "translations": torch.tensor(
                rng.choice([[0.0, 0, 0.3], [1e9, 0, 0], [np.inf, 0, 0], [0.0]]), dtype=torch.float32
            ),
            "joint_positions": torch.tensor([rng.uniform(-1, 1) for _ in range(rng.choice([24, 22, 0]))]),
            "object_name": rng.choice(_NAMES + ["core-cup-0a1b2c3d4e5f60718293a4b5c6d7e8f9"]),
            "scale": rng.choice(_NUMBERS),
        }
        for k in list(rec):
            if rng.random() < 0.15:
                rec[k] = _value(rng) if rng.random() < 0.5 else rec.pop(k)
        meta.append(rec if rng.random() < 0.9 else _value(rng))
    torch.save({"info": {}, "metadata": meta if rng.random() < 0.9 else _value(rng)}, path)


def _multidex_records(rng: random.Random, path: Path) -> None:
    import torch

    meta = []
    for _ in range(rng.randrange(1, 6)):
        q = torch.tensor(
            [
                rng.uniform(-1, 1) if rng.random() < 0.9 else rng.choice(_NUMBERS)
                for _ in range(rng.choice([33, 33, 9, 0]))
            ]
        )
        meta.append(
            rng.choice(
                [
                    (q, rng.choice(_NAMES + ["contactdb+cube_small"]), "shadowhand"),
                    (
                        q,
                        torch.tensor(rng.choice([np.eye(3), np.zeros((3, 3))]), dtype=torch.float32),
                        rng.choice(_NAMES),
                    ),
                    (q, _value(rng), _value(rng)),
                    _value(rng),
                ]
            )
        )
    torch.save({"info": {}, "metadata": meta}, path)


def _unidexgrasp_records(rng: random.Random, path: Path) -> None:
    qpos = np.empty((), dtype=object)
    qpos[()] = _value(rng) if rng.random() < 0.5 else {"WRJTx": _value(rng), "robot0:FFJ3": 0.1}
    members = {
        "qpos": qpos,
        "scale": np.asarray(rng.choice([10.0, 0.0, -1.0, np.nan, [1.0, 2.0]])),
        "plane": np.zeros(4),
    }
    for k in list(members):
        if rng.random() < 0.2:
            members.pop(k)
    np.savez(path, **members)


def _realdex_records(rng: random.Random, path: Path) -> None:
    t = rng.randrange(0, 5)
    shapes = {
        "qpos": (t, 22),
        "hand_transl": (t, 3),
        "hand_orient": (t, 3),
        "object_transl": (t, 3),
        "object_orient": (t, 3),
    }
    members = {}
    for k, shape in shapes.items():
        if rng.random() < 0.1:
            continue
        shape = shape if rng.random() < 0.85 else (t + 1,)
        members[k] = np.asarray(rng.choice([np.zeros(shape), np.full(shape, np.nan), np.full(shape, 1e30),
                                            np.random.default_rng(rng.randrange(99)).normal(size=shape)]))
    members["object_points"] = np.zeros((rng.choice([0, 7]), 3))
    np.savez(path, **members)


# source -> (builder of a valid tree, unit file patterns to mutate, writer of random records for one unit file)
def _sources():
    from tests.sources import builders

    return {
        "dexgraspnet": (builders.write_dexgraspnet, "dataset/*.npy", _dexgraspnet_records),
        "unidexgrasp": (builders.write_unidexgrasp, "DFCData/poses/*/*/*.npz", _unidexgrasp_records),
        "multidex": (builders.write_multidex, "*/shadowhand/*.pt", _multidex_records),
        "dga": (builders.write_dga, "*/*.pt", _release_records),
        "realdex": (lambda root: (builders.write_realdex(root), builders.write_realdex_raw(root)), "raw/*/*.npz",
                    _realdex_records),
    }


def _check_result(result) -> None:
    """A loaded unit is only ever batches of finite, proper poses."""
    for b in result.batches:
        n = len(b)
        assert b.translation.shape == (n, 3) and b.rotation.shape == (n, 3, 3) and b.joints.shape == (n, 24)
        assert np.isfinite(b.translation).all() and np.isfinite(b.rotation).all() and np.isfinite(b.joints).all()
        det = np.linalg.det(b.rotation) if n else np.ones(0)
        assert np.allclose(det, 1.0, atol=1e-2), det
        assert (b.mesh_scale > 0).all() and np.isfinite(b.mesh_scale).all()


def fuzz_sources(work: Path, rng: random.Random, cases: int, out: dict) -> None:
    from dga_engine.sources.curate import CurateConfig, make_loader
    from dga_engine.sources.safeload import SourceFileError

    for source, (build, pattern, records) in _sources().items():
        valid = work / "src" / f"{source}-valid"
        build(valid)
        files = sorted(valid.glob(pattern))
        assert files, (source, pattern)
        for k in range(cases):
            tree = work / "src" / source
            shutil.rmtree(tree, ignore_errors=True)
            shutil.copytree(valid, tree)
            victim = tree / files[k % len(files)].relative_to(valid)
            if k % 2:
                records(rng, victim)
                how = "records"
            else:
                victim.write_bytes(_mutate_bytes(rng, victim.read_bytes()))
                how = "bytes"
            loader = make_loader(source, tree, CurateConfig())
            for unit in loader.units():
                t0 = time.process_time()
                try:
                    result = loader.load_unit(unit)
                    _check_result(result)
                    for b in result.batches:
                        loader.object(b.object_key)
                    outcome = "ok"
                except SourceFileError:
                    outcome = "refused"
                except Exception as exc:  # noqa: BLE001 - this is what the fuzz looks for
                    out["failures"].append(f"{source} {how} case {k} unit {unit}: {type(exc).__name__}: {exc}\n"
                                           + traceback.format_exc(limit=-3))
                    outcome = "failed"
                out["slowest_s"] = max(out["slowest_s"], time.process_time() - t0)
                out["cases"][f"{source}:{outcome}"] = out["cases"].get(f"{source}:{outcome}", 0) + 1


def fuzz_curate(work: Path, rng: random.Random, out: dict) -> None:
    """Whole curate runs on mutated sources (several units broken at once): reports, never raises."""
    from dga_engine.layout import Layout
    from dga_engine.sources.curate import CurateConfig, CurateError, curate

    layout = Layout.at(work / "root")
    for source, (_build, pattern, records) in _sources().items():
        tree = work / "src" / source
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(work / "src" / f"{source}-valid", tree)
        for i, victim in enumerate(sorted(tree.glob(pattern))):
            if i % 2 == 0:
                records(rng, victim)
        before = {p: p.stat().st_mtime_ns for p in tree.rglob("*")}
        try:
            report = curate(layout, source, CurateConfig(path=str(tree), verify_samples=8))
            out["cases"][f"curate-{source}:ok"] = report.units_total
        except CurateError:
            out["cases"][f"curate-{source}:refused"] = 1
        except Exception as exc:  # noqa: BLE001
            out["failures"].append(f"curate {source}: {type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=-4))
        after = {p: p.stat().st_mtime_ns for p in tree.rglob("*")}
        if after != before:
            out["failures"].append(f"curate {source} changed its source folder: {sorted(set(after) ^ set(before))[:5]}")


def fuzz_filter(work: Path, rng: random.Random, rows: int, out: dict) -> None:
    import trimesh

    from dga_engine.dataset.schema import REJECT_REASONS, pose_arrays, pose_table
    from dga_engine.layout import Layout
    from dga_engine.objects.store import ObjectStore, write_simple_object
    from dga_engine.simulate.engine import filter_table

    layout = Layout.at(work / "root")
    box = write_simple_object(ObjectStore(layout), trimesh.creation.box(extents=[0.05, 0.05, 0.10]), "fuzz box")
    ids = [box.object_id] * 6 + ["obj-0000000000000000", "../../etc", "a\nb", "", "x" * 300]
    g = np.random.default_rng(rng.randrange(1 << 30))

    def column(n: int, k: int, typical: float) -> np.ndarray:
        a = g.normal(size=(n, k)) * typical
        odd = g.random((n, k)) < 0.08
        a[odd] = g.choice(np.array([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30, 1e-30]), size=int(odd.sum()))
        return a

    from tests.helpers import CAGE_Q, CAGE_QUAT, CAGE_T

    n, half = rows, rows // 2
    quat, trans, joints = column(n, 4, 1.0), column(n, 3, 0.05) + CAGE_T, column(n, 24, 0.4)
    quat[:half] = CAGE_QUAT  # the first half near a grasp that holds, so the simulator sees them too
    trans[:half] = np.asarray(CAGE_T) + g.normal(size=(half, 3)) * 0.002
    joints[:half] = np.asarray(CAGE_Q) + g.normal(size=(half, 24)) * 0.01
    scale = np.where(g.random(n) < 0.7, 1.0, g.choice(np.array([0.0, -1.0, 1e-30, 1e30, np.nan, 0.5, 50.0]), size=n))
    table = pose_table([ids[i % len(ids)] for i in range(n)], trans, quat, joints, source="fuzz",
                       source_record_id=[f"r{i}" for i in range(n)], object_scale=scale)
    t0 = time.process_time()
    try:
        res = filter_table(layout, table)
        reasons = res.column("reason").to_pylist()
        assert res.num_rows == n and all(r is None or r in REJECT_REASONS for r in reasons)
        accepted = np.array([r is None for r in reasons])
        q = pose_arrays(res)["rotation"][accepted]
        assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5) and (q[:, 0] >= 0).all()
        for r in set(reasons):
            out["cases"][f"filter:{r}"] = reasons.count(r)
    except Exception as exc:  # noqa: BLE001
        out["failures"].append(f"filter_table: {type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=-4))
    out["filter_s"] = time.process_time() - t0
    for bad in (table.drop_columns(["translation"]), table.set_column(2, "object_scale", table.column("object_id"))):
        try:
            filter_table(layout, bad)
            out["failures"].append("filter_table accepted a table that is not GRASP_SCHEMA")
        except ValueError:
            out["cases"]["filter:bad-table-refused"] = out["cases"].get("filter:bad-table-refused", 0) + 1


def main(workdir: str, seed: int, cases: int) -> None:
    import os

    work = Path(workdir)
    for sub in ("src", "root", "cwd", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    os.chdir(work / "cwd")
    import torch  # noqa: F401 - loaded before the baseline, so its own memory does not count

    from dga_engine.hand.model import default_hand

    default_hand()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = random.Random(seed)
    out: dict = {"failures": [], "cases": {}, "slowest_s": 0.0}
    t0 = time.process_time()
    fuzz_sources(work, rng, cases, out)
    fuzz_curate(work, rng, out)
    fuzz_filter(work, rng, 48, out)
    out["cpu_s"] = time.process_time() - t0
    out["grew_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
