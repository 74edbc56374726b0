"""Network, normalisation and diffusion pieces: shapes, devices, invariances, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dga_engine.generate.config import DiffusionConfig, GeneratorConfig, paper_config, preset, tiny_config
from dga_engine.generate.diffusion import Diffusion
from dga_engine.generate.model import GraspDiffusionNet, group_object, rotate_groups
from dga_engine.generate.normalise import POSE_DIM, PoseNormaliser, fold, pose_vector, unfold
from dga_engine.hand import default_hand
from dga_engine.hand.rotations import quat_to_matrix, random_rotations
from tests.helpers import micro_config

from .helpers import palm_poses


def _cloud(n=300, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3)) * [0.03, 0.02, 0.05]
    return p, p / np.linalg.norm(p, axis=1, keepdims=True)


def test_network_shapes_and_semantic_token():
    cfg = micro_config().model
    net = GraspDiffusionNet(cfg)
    g = group_object(*_cloud(), cfg)
    assert g.centres.shape == (1, cfg.n_groups, 3) and g.local.shape == (1, cfg.n_groups, cfg.group_size, 3)
    B = 5
    R = random_rotations(B, torch.Generator().manual_seed(0))
    c, loc, nrm = rotate_groups(g, torch.zeros(B, dtype=torch.long), R)
    sem = torch.randn(B, cfg.semantic_dim)
    has = torch.tensor([True, False, True, False, True])
    ctx = net.encode(c, loc, nrm, sem, has)
    assert ctx.shape == (B, cfg.n_groups + 1, cfg.width)
    # absent semantics use the learned null token
    assert torch.allclose(ctx[1, -1], ctx[3, -1]) and not torch.allclose(ctx[0, -1], ctx[1, -1])
    eps = net(torch.randn(B, POSE_DIM), torch.randint(0, 20, (B,)), ctx)
    assert eps.shape == (B, POSE_DIM) and torch.isfinite(eps).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(torch.randn(B, POSE_DIM), torch.randint(0, 20, (B,)), ctx).shape == (B, POSE_DIM)
    # the sampler's shortcuts: cached cross-attention keys/values and one timestep for the whole batch
    x = torch.randn(B, POSE_DIM)
    full = net(x, torch.full((B,), 7), ctx)
    assert torch.allclose(net(x, torch.tensor([7]), None, net.context_cache(ctx)), full, atol=1e-5)


def test_grouping_is_rotation_equivariant():
    """Grouping once and rotating the groups equals grouping the rotated cloud (the per-grasp shortcut)."""
    cfg = micro_config().model
    p, n = _cloud()
    R = random_rotations(1, torch.Generator().manual_seed(3))[0].double()
    g = group_object(p, n, cfg)
    c, loc, nrm = rotate_groups(g, torch.zeros(1, dtype=torch.long), R.float().unsqueeze(0))
    direct = group_object(p @ R.numpy(), n @ R.numpy(), cfg)  # points p -> R^T p as row vectors
    assert torch.allclose(c[0], direct.centres[0], atol=1e-5)
    assert torch.allclose(loc[0], direct.local[0], atol=1e-5)


def test_fold_matches_forward_kinematics():
    """Hand points of (t, R, q) in the object frame = R x (hand points of (R^T t, I, q))."""
    hand = default_hand()
    p = palm_poses(4, seed=1)
    R = quat_to_matrix(torch.as_tensor(p["rotation"]))
    t, q = torch.as_tensor(p["translation"]), torch.as_tensor(p["joints"])
    x, R2 = pose_vector(p["translation"], p["rotation"], p["joints"])
    world = hand.surface_points(hand.forward_kinematics(t, R, q))
    folded = hand.surface_points(hand.forward_kinematics(torch.as_tensor(x[:, :3]), torch.eye(3).expand(4, 3, 3), q))
    assert torch.allclose(world, folded @ R.transpose(1, 2), atol=1e-5)
    assert torch.allclose(unfold(fold(t, R), R), t, atol=1e-6)


def test_normaliser_bounds_round_trip_and_constant_columns():
    hand = default_hand()
    p = palm_poses(50)
    x, _ = pose_vector(p["translation"], p["rotation"], p["joints"])
    norm = PoseNormaliser.from_data(x, hand.lower.numpy(), hand.upper.numpy())
    xn = norm.normalise(torch.as_tensor(x, dtype=torch.float64))
    assert xn.abs().max() <= 1.0 and xn.abs().max() > 0.85  # data inside, margin small
    assert torch.allclose(norm.denormalise(xn), torch.as_tensor(x, dtype=torch.float64), atol=1e-9)
    # the wrist joints are constant (0) in this data: the range stays finite and inside the limits
    assert np.all(norm.hi > norm.lo)
    assert np.all(norm.lo[3:] >= hand.lower.numpy() - 1e-6) and np.all(norm.hi[3:] <= hand.upper.numpy() + 1e-6)
    again = PoseNormaliser.from_dict(norm.to_dict())
    assert np.array_equal(again.lo, norm.lo) and np.array_equal(again.hi, norm.hi)
    with pytest.raises(ValueError):
        PoseNormaliser.from_data(np.full((3, 27), np.nan), hand.lower.numpy(), hand.upper.numpy())


def test_diffusion_schedule_and_x0_identity():
    d = Diffusion(DiffusionConfig())
    assert d.betas[0].item() == pytest.approx(1e-4) and d.betas[-1].item() == pytest.approx(1e-2)
    x0 = torch.randn(6, 27)
    noise = torch.randn(6, 27)
    t = torch.arange(6) * 19
    xt = d.q_sample(x0, t, noise)
    assert torch.allclose(d.predict_x0(xt, t, noise), x0, atol=1e-5)
    assert Diffusion(DiffusionConfig(schedule="cosine")).alphas_cumprod[-1] < 1e-3
    with pytest.raises(ValueError):
        Diffusion(DiffusionConfig(schedule="nope"))


def test_config_round_trip_and_presets():
    for cfg in (tiny_config(), paper_config(), micro_config()):
        again = GeneratorConfig.from_dict(cfg.to_dict())
        assert again == cfg and again.model_hash() == cfg.model_hash()
    longer = tiny_config()
    longer.train.epochs += 10
    assert longer.model_hash() == tiny_config().model_hash()  # training longer resumes
    assert paper_config().model.width == 512 and paper_config().diffusion.steps == 100
    assert paper_config().sample.weights.erf == 0.3 and tiny_config().train.physics.erf == 1.0  # reference weights
    assert tiny_config().sample.weights.erf == 0.3 and tiny_config().sample.steps == 20  # polish removes the depth
    with pytest.raises(ValueError):
        preset("huge")
    with pytest.raises(ValueError):
        GeneratorConfig.from_dict({"model": {"bogus": 1}})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_network_runs_on_cuda():
    cfg = micro_config().model
    net = GraspDiffusionNet(cfg).cuda()
    g = group_object(*_cloud(), cfg).to("cuda")
    R = random_rotations(3).cuda()
    ctx = net.encode(*rotate_groups(g, torch.zeros(3, dtype=torch.long, device="cuda"), R))
    out = net(torch.randn(3, 27, device="cuda"), torch.zeros(3, dtype=torch.long, device="cuda"), ctx)
    assert out.device.type == "cuda"


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_guided_step_is_the_spherical_constraint_and_t0_takes_no_guided_move(rate):
    """Eq. 14-15 on a two-step chain: the guided move has length r = sqrt(n) sigma_t and direction
    d_sample + rate (d* - d_sample) with d* = -r g/|g|; at t = 0 sigma is 0, so the sample is the posterior mean."""
    d = Diffusion(DiffusionConfig()).respaced(2)
    n = 27
    gen = torch.Generator().manual_seed(0)
    h_T, z = torch.randn(1, n, generator=gen), torch.randn(1, n, generator=gen)
    draws = iter([h_T, z])
    a = torch.linspace(-1, 1, n).unsqueeze(0)  # physics = <a, h0_hat>: its gradient in h0_hat is a everywhere
    x = d.sample(lambda x, t: torch.zeros_like(x), (1, n), physics=lambda x0: (x0 * a).sum(-1),
                 guidance_rate=rate, noise=lambda: next(draws))

    one, zero = torch.ones(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    mu = d.posterior_mean(d.predict_x0(h_T, one, torch.zeros_like(h_T)), h_T, one)
    sigma = d.post_std[1]
    r = math.sqrt(n) * sigma
    d_star = -r * a / a.norm()  # the gradient in h_t is a / sqrt(alpha_bar): same direction
    d_m = sigma * z + rate * (d_star - sigma * z)
    h_1 = mu + r * d_m / d_m.norm()
    assert (h_1 - mu).norm().item() == pytest.approx(r.item(), rel=1e-5)
    assert d.post_std[0].item() == 0.0
    expected = d.posterior_mean(d.predict_x0(h_1, zero, torch.zeros_like(h_1)), h_1, zero)
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
