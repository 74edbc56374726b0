"""The model in the loop has something to contribute: trained on a few grasps of one box, its samples on an unseen
box sit closer to the training grasps, and its polished grasps pass the filter more often, than those of an
untrained model with the same pose normaliser (which samples the whole space between the training grasps).
The guided sampler and polish alone already rescue a third of an untrained model's candidates on a box."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import trimesh

pytestmark = pytest.mark.slow


def _symmetric_copies(t, quat, q, n, rng):
    """n copies of a grasp of the 5 x 5 x 10 cm box in its symmetric orientations, slightly perturbed."""
    from scipy.spatial.transform import Rotation

    sym = [Rotation.from_euler("z", 90 * k, degrees=True) * Rotation.from_euler("x", 180 * f, degrees=True)
           for k in range(4) for f in range(2)]
    r0 = Rotation.from_quat(np.roll(np.asarray(quat), -1))  # scipy: xyzw
    ts, qs, js = [], [], []
    for i in range(n):
        s = sym[i % len(sym)]
        ts.append(s.apply(t) + rng.normal(scale=0.0005, size=3))
        qs.append(np.roll((s * r0).as_quat(), 1))
        js.append(np.asarray(q) + rng.normal(scale=0.01, size=24))
    return np.array(ts), np.array(qs), np.array(js)


def test_trained_model_beats_an_untrained_one_on_an_unseen_box(layout, object_store, box_object, cfg):
    from dga_engine.dataset.schema import pose_arrays, pose_table
    from dga_engine.dataset.store import Dataset
    from dga_engine.generate.stage import generate
    from dga_engine.generate.train import train
    from dga_engine.hand import default_hand
    from dga_engine.objects.store import write_simple_object
    from dga_engine.refine import RefineConfig, run_refine
    from dga_engine.simulate import run_filter
    from tests.refine.nearmiss import BOX_GRASPS

    rng = np.random.default_rng(0)
    # five distinct grasps (so the pose normaliser spans the space between them), 16 copies of each
    copies = [_symmetric_copies(t0, quat0, q0, 16, rng) for t0, quat0, q0 in BOX_GRASPS]
    t, quat, q = (np.concatenate([c[k] for c in copies]) for k in range(3))
    hand = default_hand()
    q = np.clip(q, hand.lower.numpy(), hand.upper.numpy())
    table = pose_table(
        box_object.object_id, t, quat, q, source="synthesis", source_record_id=[str(i) for i in range(len(t))]
    )
    unseen = write_simple_object(
        object_store, trimesh.creation.box(extents=[0.06, 0.05, 0.11]), "box 6x5x11 cm"
    ).object_id

    cfg.train.epochs = 400  # 800 steps: fewer leave the micro model's samples close to an untrained one's
    cfg.train.ema_decay = 0.0  # an average over so few steps would still carry the initial weights
    cfg.train.val_fraction = 0.0  # one training object: nothing to hold out
    cfg.sample.steps = 10
    train(layout, 1, cfg, table=table)
    train(layout, 2, cfg, epochs=0, table=table)  # the same architecture and normaliser, untrained
    share, nearest = {}, {}
    for round_, name in ((1, "trained"), (2, "untrained")):
        # the model alone (no guidance): how far its joint angles are from the nearest training grasp's
        generate(layout, round_, 32, [unseen], sample=replace(cfg.sample, guidance=False), dataset=name + "-model")
        gen = pose_arrays(Dataset(layout, name + "-model").candidates("generator"))
        nn = np.sqrt(((gen["joints"][:, None, :] - q[None]) ** 2).sum(-1)).min(1)
        nearest[name] = float(np.median(nn))
        # the loop as the build runs it: guided sampling, polish, filter
        generate(layout, round_, 32, [unseen], sample=cfg.sample, dataset=name)
        run_refine(layout, "generator", RefineConfig.preset("polish"), dataset=name)
        summary = run_filter(layout, "generator", dataset=name, refined=True)
        share[name] = summary.accepted / summary.total
    assert nearest["trained"] < 0.8 * nearest["untrained"], nearest
    assert share["trained"] >= 0.4 and share["trained"] > share["untrained"] + 0.1, share
