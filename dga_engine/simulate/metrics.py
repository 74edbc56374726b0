"""The paper's evaluation metrics over filtered grasps: Suc.1, Suc.6, Pen, Div, object success.

Input: any table with GRASP_SCHEMA's filter fields (the output of ``filter_table``, accepted shards,
rejects, or their concatenation); the ``reason`` column is optional, and ``pen_dga_mm`` /
``pen_object_hand_sum_mm`` are null in shards written before schema v2 (Pen is then None).

Pen and Div are computed as DGA's evaluation script computes them (``scripts/grasp_gen_ur/test.py``);
our own measures are reported beside them under their own names:

- ``suc1`` / ``suc6``: fraction of *simulated* grasps (non-null ``suc6``) that held in at least one / all
  six push directions. Grasps rejected before simulation (invalid pose, missing object, and - unless
  ``simulate_penetrating`` - penetration) are not in the denominator; ``n_simulated`` says how many are.
  With ``simulate_penetrating=True`` every valid grasp is simulated, which is the paper's evaluation.
- ``pen_mm`` (the reference's Pen): mean over grasps of ``pen_dga_mm``, the per-grasp maximum
  sign-test depth of the hand's surface points without the forearm against the first 4096 object
  points (:func:`dga_engine.physics.penetration.dga_pen_mm`); None when the table has no such column.
  ``pen_succ_mm``: the same mean over the Suc.6 grasps only (the script logs both).
- ``pen_hand_object_mm`` (ours): mean of the filter's hand-into-object depth (its ``hand_object_inside``
  test, dense points); ``pen_object_hand_mm`` (ours): mean of the object-into-hand maximum depth;
  ``pen_object_hand_sum_mm``: mean of DexGraspNet's summed object-point depth (2048 points).
- ``div`` (the reference's Div): per object, the standard deviation (``np.var``, ddof 0) of each of the
  24 joint angles over that object's Suc.6 grasps - an object with one success counts 0, one with none
  is left out; averaged over objects, then over joints (radians).
  ``div_ddof1`` (ours until now): the same with ddof 1, over objects with at least two successes.
- ``object_success``: fraction of objects with at least one Suc.6 grasp, among the objects that have
  at least one simulated grasp.
- ``accepted_rate``: fraction of all rows with a null ``reason`` (only when the column is present).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import N_JOINTS

METRIC_KEYS = ("suc1", "suc6", "pen_mm", "div", "object_success")  # the paper's, in its tables' order


def _bool(table: pa.Table, name: str) -> np.ndarray:
    """(N,) float: 1/0, NaN where null."""
    col = table.column(name)
    out = np.full(table.num_rows, np.nan)
    values = col.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    out[valid] = values[valid].astype(float)
    return out


def _float(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=float) if col.null_count == 0 else np.array(
        [np.nan if v is None else v for v in col.to_pylist()], dtype=float)


def _mean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else None


def diversity(joints: np.ndarray, object_ids: np.ndarray, ok: np.ndarray) -> float | None:
    """The reference's Div (radians): per object with a success, the per-joint std (ddof 0) of its
    successful grasps (0 for a single one), averaged over those objects, then over joints.

    joints (N, 24), object_ids (N,), ok (N,) bool: which grasps succeeded (Suc.6).
    """
    per_object = [np.sqrt(joints[ok & (object_ids == oid)].var(axis=0)) for oid in np.unique(object_ids[ok])]
    return float(np.stack(per_object).mean(axis=0).mean()) if per_object else None


def diversity_ddof1(joints: np.ndarray, object_ids: np.ndarray, ok: np.ndarray) -> float | None:
    """Mean per-joint std (ddof=1, radians) over each object's successful grasps, averaged over the
    objects with at least two (the engine's Div before it followed the reference; kept for comparison)."""
    per_object = []
    for oid in np.unique(object_ids[ok]):
        q = joints[ok & (object_ids == oid)]
        if len(q) >= 2:
            per_object.append(float(q.std(axis=0, ddof=1).mean()))
    return float(np.mean(per_object)) if per_object else None


def summarise(table: pa.Table) -> dict[str, Any]:
    """Metrics of a filtered grasp table as a JSON-ready dict (None where undefined, e.g. no simulated grasp)."""
    n = table.num_rows
    suc1, suc6 = _bool(table, "suc1"), _bool(table, "suc6")
    simulated = ~np.isnan(suc6)
    ho, oh = _float(table, "pen_hand_object_mm"), _float(table, "pen_object_hand_mm")
    ids = np.asarray(table.column("object_id").to_pylist(), dtype=object)
    joints = (table.column("joints").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, N_JOINTS)
              if n else np.zeros((0, N_JOINTS)))
    ok = simulated & (np.nan_to_num(suc6) == 1)
    objects = sorted(set(ids.tolist()))
    evaluated = set(ids[simulated].tolist())
    succeeded = set(ids[ok].tolist())
    dga = _float(table, "pen_dga_mm") if "pen_dga_mm" in table.column_names else None
    oh_sum = _float(table, "pen_object_hand_sum_mm") if "pen_object_hand_sum_mm" in table.column_names else None
    out: dict[str, Any] = {
        "grasps": n,
        "n_simulated": int(simulated.sum()),
        "suc1": _mean(suc1),
        "suc6": _mean(suc6),
        "pen_mm": None if dga is None else _mean(dga),
        "pen_succ_mm": None if dga is None else _mean(dga[ok]),
        "pen_hand_object_mm": _mean(ho),
        "pen_object_hand_mm": _mean(oh),
        "pen_object_hand_sum_mm": None if oh_sum is None else _mean(oh_sum),
        "div": diversity(joints, ids, ok),
        "div_ddof1": diversity_ddof1(joints, ids, ok),
        "objects": len(objects),
        "object_success": (len(succeeded) / len(evaluated)) if evaluated else None,
    }
    if "reason" in table.column_names:
        out["accepted_rate"] = (table.column("reason").null_count / n) if n else None
    return out


def to_json(metrics: dict[str, Any]) -> str:
    return json.dumps(metrics, indent=2, sort_keys=True)


# What each row of rows() means, in words a newcomer can read (the filter's table and the build summary print it).
LEGEND = {
    "grasps": "grasps judged",
    "simulated": "grasps pushed in the simulator (the rest were rejected before: invalid pose, penetration)",
    "Suc.1": "share of simulated grasps that held the object under a push along at least one of +-x, +-y, +-z",
    "Suc.6": "share of simulated grasps that held it under all six pushes (the paper's success)",
    "Pen (reference)": "mean over grasps of the deepest hand point inside the object (the reference's Pen)",
    "hand into object (filter)": "mean hand-into-object depth the filter tests (default limit 10 mm)",
    "object into hand (filter)": "mean object-into-hand depth the filter tests (default limit 1 mm)",
    "object into hand, summed": "mean summed object-point depth inside the hand (DexGraspNet's measure)",
    "Div (reference)": "grasp diversity: per object, the spread (std) of each joint angle over its Suc.6 grasps, "
                       "averaged (the reference's Div; higher = more varied)",
    "Div (ddof 1)": "the same spread with the sample std, over objects with at least two Suc.6 grasps",
    "objects": "objects judged",
    "object success": "share of objects with at least one Suc.6 grasp",
    "accepted": "share of grasps accepted into the dataset",
}


def rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, formatted value) pairs for a table: rates in %, depths in mm, diversity in rad."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    def num(v, unit):
        return "-" if v is None else f"{v:.3f} {unit}"

    out = [
        ("grasps", str(metrics.get("grasps", 0))),
        ("simulated", str(metrics.get("n_simulated", 0))),
        ("Suc.1", pct(metrics.get("suc1"))),
        ("Suc.6", pct(metrics.get("suc6"))),
        ("Pen (reference)", num(metrics.get("pen_mm"), "mm")),
        ("hand into object (filter)", num(metrics.get("pen_hand_object_mm"), "mm")),
        ("object into hand (filter)", num(metrics.get("pen_object_hand_mm"), "mm")),
        ("object into hand, summed", num(metrics.get("pen_object_hand_sum_mm"), "mm")),
        ("Div (reference)", num(metrics.get("div"), "rad")),
        ("Div (ddof 1)", num(metrics.get("div_ddof1"), "rad")),
        ("objects", str(metrics.get("objects", 0))),
        ("object success", pct(metrics.get("object_success"))),
    ]
    if "accepted_rate" in metrics:
        out.append(("accepted", pct(metrics.get("accepted_rate"))))
    return out


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics as an aligned plain-text table."""
    r = rows(metrics)
    width = max(len(k) for k, _ in r)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in r)
