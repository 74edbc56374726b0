"""Objects and grasps as the generator sees them: grouped point clouds, semantic features, folded poses."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from dga_engine.dataset.schema import pose_arrays
from dga_engine.generate.config import ModelConfig
from dga_engine.generate.model import ObjectGroups, group_object
from dga_engine.generate.normalise import pose_vector
from dga_engine.layout import Layout
from dga_engine.objects.store import ObjectAsset, ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


def semantic_feature(layout: Layout, object_id: str, dim: int) -> np.ndarray | None:
    """The object's LLM-description feature (dim,), or None when it has none or it cannot be computed.

    A feature of another width than the model's (a different text encoder) is treated as absent, with a
    warning, rather than failing the batch.
    """
    try:
        from dga_engine.describe import semantic_feature as _feature
    except ImportError:  # the describe stage is not installed in this build
        return None
    try:
        vec = _feature(layout, object_id)
    except ObjectNotFound:
        raise
    except Exception as exc:  # an encoder that cannot load must not stop generation: use the null token
        log.warning("semantic feature of %s unavailable (%s); using the null token", object_id, exc)
        return None
    if vec is None:
        return None
    vec = np.asarray(vec, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim:
        log.warning(
            "semantic feature of %s has width %d, the model expects %d; using the null token",
            object_id,
            vec.shape[0],
            dim,
        )
        return None
    return vec


@dataclass
class ObjectBank:
    """O (object, scale) entries: grouped points for the encoder, raw points for physics, semantics.

    keys: [(object_id, scale)]; groups: ObjectGroups with O entries; semantic: (O, S); has_semantic: (O,).
    assets: the loaded ObjectAssets by object id (for physics fields).
    """

    keys: list[tuple[str, float]]
    groups: ObjectGroups
    semantic: torch.Tensor
    has_semantic: torch.Tensor
    assets: dict[str, ObjectAsset]

    def index(self, object_id: str, scale: float) -> int:
        return self.keys.index((object_id, float(scale)))

    def variants(self, cfg: ModelConfig, k: int, jitter: float, seed: int) -> ObjectGroups:
        """``k`` groupings per entry (k x O, entry-major) of resampled points for augmentation: each takes a
        random subset of the object's dense surface points (with Gaussian ``jitter``, metres), so the
        encoder never sees the same tokens twice and cannot memorise its few training objects."""
        rng = np.random.default_rng(seed)
        out = []
        for object_id, scale in self.keys:
            a = self.assets[object_id]
            for _ in range(k):
                pick = rng.choice(len(a.dense_points), size=min(len(a.dense_points), 2 * cfg.n_points), replace=False)
                pts = a.dense_points[pick] + rng.normal(scale=jitter / max(scale, 1e-9), size=(len(pick), 3))
                out.append(group_object(pts, a.dense_normals[pick], cfg, scale, start=int(rng.integers(len(pick)))))
        return ObjectGroups.stack(out)

    @classmethod
    def build(
        cls, layout: Layout, keys: list[tuple[str, float]], cfg: ModelConfig, use_semantic: bool = True,
        assets: dict[str, ObjectAsset] | None = None,
    ) -> ObjectBank:
        store = ObjectStore(layout)
        assets = dict(assets or {})
        groups, sems, has = [], [], []
        for object_id, scale in keys:
            if object_id not in assets:
                assets[object_id] = store.load(object_id, with_parts=False)
            a = assets[object_id]
            groups.append(group_object(a.points, a.normals, cfg, scale))
            vec = semantic_feature(layout, object_id, cfg.semantic_dim) if (use_semantic and cfg.use_semantic) else None
            has.append(vec is not None)
            sems.append(vec if vec is not None else np.zeros(cfg.semantic_dim, np.float32))
        if not keys:
            raise ValueError("no objects to build an object bank from")
        return cls(
            keys=[(o, float(s)) for o, s in keys],
            groups=ObjectGroups.stack(groups),
            semantic=torch.as_tensor(np.stack(sems)),
            has_semantic=torch.as_tensor(np.asarray(has, dtype=bool)),
            assets=assets,
        )


@dataclass
class TrainingSet:
    """Grasps ready for training. x: (N,27) unnormalised folded poses; R: (N,3,3); obj: (N,) bank index."""

    x: np.ndarray
    R: np.ndarray
    obj: np.ndarray
    bank: ObjectBank
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def from_table(cls, layout: Layout, table: pa.Table, cfg: ModelConfig) -> TrainingSet:
        """Fold a grasp table's poses into the hand frame and group its objects.

        Rows whose object is missing from the store or whose pose is not finite are skipped and counted
        (``skipped``); the rest train.
        """
        if table.num_rows == 0:
            raise ValueError("no grasps to train on: run the seed round (or curate a source) first")
        arrays = pose_arrays(table)
        object_ids = table.column("object_id").to_pylist()
        scales = arrays["object_scale"].astype(np.float64)
        store = ObjectStore(layout)
        skipped = {"object_missing": 0, "invalid_pose": 0}
        present = {o: store.exists(o) for o in set(object_ids)}
        finite = (
            np.isfinite(arrays["translation"]).all(1)
            & np.isfinite(arrays["rotation"]).all(1)
            & np.isfinite(arrays["joints"]).all(1)
            & (np.linalg.norm(arrays["rotation"], axis=1) > 1e-6)
            & np.isfinite(scales) & (scales > 0)
        )
        keep = np.array([present[o] for o in object_ids], dtype=bool)
        skipped["object_missing"] = int((~keep).sum())
        skipped["invalid_pose"] = int((keep & ~finite).sum())
        keep &= finite
        if not keep.any():
            raise ValueError(
                f"none of the {table.num_rows} grasps can train: {skipped}; ingest their objects or check the shards"
            )
        idx = np.flatnonzero(keep)
        keys = sorted({(object_ids[i], round(float(scales[i]), 6)) for i in idx})
        bank = ObjectBank.build(layout, keys, cfg)
        lookup = {k: j for j, k in enumerate(bank.keys)}
        obj = np.array([lookup[(object_ids[i], round(float(scales[i]), 6))] for i in idx], dtype=np.int64)
        x, R = pose_vector(arrays["translation"][idx], arrays["rotation"][idx], arrays["joints"][idx])
        if any(skipped.values()):
            log.warning("training skips grasps: %s", skipped)
        return cls(x=x, R=R, obj=obj, bank=bank, skipped=skipped)
