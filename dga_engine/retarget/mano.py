"""The MANO hand model: read safely from the user's licensed ``MANO_RIGHT.pkl``, posed by ``smplx``.

MANO is licensed (registration at https://mano.is.tue.mpg.de) and never shipped or downloaded here: the
user names the file with ``--mano-model PATH`` or ``$DGA_MANO_MODEL``. The release file is a Python 2
pickle of chumpy objects; it is read with the engine's restricted unpickler
(:func:`dga_engine.sources.safeload.load_chumpy_pickle`: chumpy arrays become numpy arrays, anything else
is refused), checked against MANO's shapes, and handed to ``smplx.MANO`` as a pre-loaded data structure,
so no default unpickler ever reads it.

:class:`ManoHand` poses the right hand as GRAB does (PCA hand pose with ``n_comps`` components,
``flat_hand_mean=True``, optionally the subject's own template) and returns the 21 keypoints
(:mod:`dga_engine.retarget.keypoints`). Memory: the model is ~4 MB; posing runs in batches of
``batch_frames`` (vertices 778 x 3 float32 per frame).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from dga_engine.retarget.keypoints import FINGERTIP_VERTICES, MANO_TO_MEDIAPIPE
from dga_engine.sources.safeload import SourceFileError, load_chumpy_pickle

MANO_ENV = "DGA_MANO_MODEL"
MANO_FILE = "MANO_RIGHT.pkl"
HOW_TO_GET = (f"the MANO hand model is licensed and not shipped: register at https://mano.is.tue.mpg.de, download "
              f"'Models & Code' (mano_v1_2.zip) and pass its models/{MANO_FILE} with --mano-model PATH or ${MANO_ENV}")

# The arrays smplx's MANO reads, with the release file's shapes (shapedirs may hold more components).
SHAPES: dict[str, tuple[int, ...]] = {
    "v_template": (778, 3), "f": (1538, 3), "J_regressor": (16, 778), "weights": (778, 16), "posedirs": (778, 3, 135),
    "shapedirs": (778, 3, 10), "kintree_table": (2, 16), "hands_components": (45, 45), "hands_mean": (45,),
}  # fmt: skip


class ManoModelMissing(RuntimeError):
    """No usable MANO model file; the message says what to get and where to put it."""


def mano_model_path(path: str | os.PathLike | None = None) -> Path:
    """The MANO file from ``path``, else ``$DGA_MANO_MODEL`` (a file, or a folder holding MANO_RIGHT.pkl)."""
    given = path or os.environ.get(MANO_ENV)
    if not given:
        raise ManoModelMissing(f"no MANO model given: {HOW_TO_GET}")
    p = Path(given).expanduser()
    if p.is_dir():
        p = p / MANO_FILE
    if not p.is_file():
        raise ManoModelMissing(f"MANO model {p} not found: {HOW_TO_GET}")
    return p


def load_mano_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """The model arrays (numpy; J_regressor scipy CSC) from a MANO file, shape-checked; SourceFileError if not MANO."""
    path = str(path)
    raw = load_chumpy_pickle(path)
    missing = [k for k in SHAPES if k not in raw]
    if missing:
        raise SourceFileError(path, f"not a MANO model file: missing {missing}")
    out: dict[str, Any] = {}
    for key, shape in SHAPES.items():
        value = raw[key]
        if key != "J_regressor":
            value = np.asarray(value)
            if value.dtype.kind not in "fiu":
                raise SourceFileError(path, f"{key} holds {value.dtype}, not numbers")
        if key == "shapedirs" and value.ndim == 3 and value.shape[:2] == shape[:2] and value.shape[2] >= shape[2]:
            value = value[:, :, : shape[2]]
        if tuple(value.shape) != shape:
            raise SourceFileError(path, f"{key} has shape {tuple(value.shape)}, MANO's is {shape}")
        out[key] = value
    if out["f"].min() < 0 or out["f"].max() >= 778:
        raise SourceFileError(path, "faces index vertices outside the 778 of MANO")
    parents = out["kintree_table"][0].astype(np.int64)
    if not all(0 <= parents[j] < j for j in range(1, 16)):
        raise SourceFileError(path, "kintree_table is not a tree over MANO's 16 joints")
    return out


class ManoHand:
    """The right MANO hand (smplx) with one template; :meth:`keypoints` poses it.

    arrays: from :func:`load_mano_arrays`; v_template: (778, 3) the subject's own template (GRAB's
    ``rhand.vtemp``), else MANO's mean; n_comps: PCA components of the hand pose; flat_hand_mean: True
    as GRAB uses it (the pose is relative to a flat hand, not MANO's mean pose).
    """

    def __init__(self, arrays: dict[str, Any], v_template: np.ndarray | None = None, n_comps: int = 24,
                 flat_hand_mean: bool = True, batch_frames: int = 512) -> None:
        import smplx
        import torch
        from smplx.utils import Struct

        if not 1 <= n_comps <= 45:
            raise ValueError(f"n_comps must be 1..45, got {n_comps}")
        kwargs: dict[str, Any] = {}
        if v_template is not None:
            v = np.asarray(v_template, dtype=np.float64)
            if v.shape != (778, 3) or not np.isfinite(v).all():
                raise ValueError(f"a MANO template needs 778 finite vertices, got shape {v.shape}")
            kwargs["v_template"] = torch.as_tensor(v, dtype=torch.float32)
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note on MANO's 10 shape components
            self.layer = smplx.MANO("MANO_RIGHT.pkl", is_rhand=True, data_struct=Struct(**arrays), use_pca=n_comps < 45,
                                    num_pca_comps=n_comps, flat_hand_mean=flat_hand_mean, batch_size=1, **kwargs)
        self.n_comps = n_comps
        self.batch_frames = batch_frames

    def keypoints(self, global_orient: np.ndarray, hand_pose: np.ndarray, transl: np.ndarray) -> np.ndarray:
        """(T, 21, 3) float64 keypoints (MediaPipe order) for T poses: axis-angle root, PCA hand pose, translation."""
        import torch

        go = np.asarray(global_orient, dtype=np.float32).reshape(-1, 3)
        t = len(go)
        hp = np.asarray(hand_pose, dtype=np.float32).reshape(t, -1)
        tr = np.asarray(transl, dtype=np.float32).reshape(t, 3)
        if hp.shape[1] != self.n_comps:
            raise ValueError(f"hand_pose has {hp.shape[1]} components, the model was built for {self.n_comps}")
        out = np.zeros((t, 21, 3))
        with torch.no_grad():
            for i in range(0, t, self.batch_frames):
                sl = slice(i, i + self.batch_frames)
                b = len(go[sl])
                res = self.layer(global_orient=torch.from_numpy(go[sl]), hand_pose=torch.from_numpy(hp[sl]),
                                 transl=torch.from_numpy(tr[sl]), betas=torch.zeros(b, self.layer.num_betas))
                joints = torch.cat([res.joints, res.vertices[:, list(FINGERTIP_VERTICES)]], dim=1)
                out[sl] = joints[:, list(MANO_TO_MEDIAPIPE)].double().numpy()
        return out
