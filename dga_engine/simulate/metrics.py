"""The paper's evaluation metrics over filtered grasps: Suc.1, Suc.6, Pen, Div, object success.

Input: any table with GRASP_SCHEMA's filter fields (the output of ``filter_table``, accepted shards,
rejects, or their concatenation); the ``reason`` column is optional.

- ``suc1`` / ``suc6``: fraction of *simulated* grasps (non-null ``suc6``) that held in at least one / all
  six push directions. Grasps rejected before simulation (invalid pose, missing object, and - unless
  ``simulate_penetrating`` - penetration) are not in the denominator; ``n_simulated`` says how many are.
  With ``simulate_penetrating=True`` every valid grasp is simulated, which is the paper's evaluation.
- ``pen_mm``: mean over grasps of the per-grasp maximum depth of hand points inside the object (the
  paper's Pen, ``pen_hand_object_mm``); ``pen_object_hand_mm`` is reported beside it.
- ``div``: diversity as in the reference code: per object, the standard deviation (ddof=1) of each of
  the 24 joint angles over that object's Suc.6 grasps; averaged over joints, then over objects that
  have at least two such grasps (radians).
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

METRIC_KEYS = ("suc1", "suc6", "pen_mm", "div", "object_success")


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
    """Mean per-joint std (ddof=1, radians) over each object's successful grasps, averaged over objects."""
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
    out: dict[str, Any] = {
        "grasps": n,
        "n_simulated": int(simulated.sum()),
        "suc1": _mean(suc1),
        "suc6": _mean(suc6),
        "pen_mm": _mean(ho),
        "pen_object_hand_mm": _mean(oh),
        "div": diversity(joints, ids, ok),
        "objects": len(objects),
        "object_success": (len(succeeded) / len(evaluated)) if evaluated else None,
    }
    if "reason" in table.column_names:
        out["accepted_rate"] = (table.column("reason").null_count / n) if n else None
    return out


def to_json(metrics: dict[str, Any]) -> str:
    return json.dumps(metrics, indent=2, sort_keys=True)


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
        ("Pen (hand into object)", num(metrics.get("pen_mm"), "mm")),
        ("object into hand", num(metrics.get("pen_object_hand_mm"), "mm")),
        ("Div", num(metrics.get("div"), "rad")),
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
