"""Sampling grasps from a trained generator, with or without physics guidance (paper Sec. 3.4).

:class:`GraspSampler` holds a checkpoint's model on one device. For each requested grasp it draws a
hand orientation R (uniform on SO(3)), rotates the object into the hand frame, encodes it once, and
runs the reverse diffusion over the 27-D folded pose; guidance evaluates SPF/ERF/SRF of h0_hat on the
object's signed-distance grid every step. Requests for several objects are packed into batches of
``SampleConfig.batch_size`` grasps, so small per-object counts still fill the device.

The network runs under bf16 autocast by default (on CPU and CUDA); forward kinematics and the physics
terms always run in float32, since bf16 positions would be off by millimetres.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from dga_engine.generate.checkpoint import Checkpoint
from dga_engine.generate.config import SampleConfig
from dga_engine.generate.data import ObjectBank
from dga_engine.generate.device import default_device
from dga_engine.generate.diffusion import Diffusion
from dga_engine.generate.guide import PoseObjectives
from dga_engine.generate.model import rotate_groups
from dga_engine.generate.normalise import unfold
from dga_engine.hand import default_hand, rotations
from dga_engine.layout import Layout

Tensor = torch.Tensor


def object_seed(base: int, round_: int, key: str) -> int:
    """A 63-bit seed from (base seed, round, key): the same request always draws the same noise."""
    digest = hashlib.sha256(f"{base}\x1f{round_}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class Samples:
    """n sampled grasps in the object frame (float32 numpy) and the bank index of each one's object.

    translation (n,3) metres; rotation (n,4) quaternion wxyz; joints (n,24) radians; obj (n,) int;
    seconds: wall time of the sampling (network + guidance), excluding object loading.
    """

    translation: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray
    obj: np.ndarray
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)


class GraspSampler:
    """A checkpoint's generator on one device, ready to sample (optionally guided) grasps."""

    def __init__(self, checkpoint: Checkpoint, config: SampleConfig | None = None, device: torch.device | str | None = None) -> None:
        self.checkpoint = checkpoint
        self.config = replace(config) if config is not None else replace(checkpoint.config.sample)
        self.device = torch.device(device) if device is not None else default_device()
        self.model = checkpoint.model.to(self.device).eval()  # guidance asks autograd for d/dx only
        self.normaliser = checkpoint.normaliser
        self.diffusion = Diffusion(checkpoint.config.diffusion, self.device).respaced(self.config.steps)
        # the shared CPU hand; the physics terms make (and cache) their own copy for other devices
        self.hand = default_hand()
        self.lower = self.hand.lower.to(self.device, torch.float64)
        self.upper = self.hand.upper.to(self.device, torch.float64)
        if self.config.autocast not in ("bf16", "fp32"):
            raise ValueError(f"autocast must be 'bf16' or 'fp32', got {self.config.autocast!r}")
        if self.config.rotation != "uniform":
            raise ValueError(f"unknown rotation sampling {self.config.rotation!r}: only 'uniform' is implemented")
        if self.config.sampler not in ("ddpm", "dpm-solver++"):
            raise ValueError(f"unknown sampler {self.config.sampler!r}: use 'ddpm' or 'dpm-solver++'")

    def _autocast(self):
        if self.config.autocast == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def bank(self, layout: Layout, object_ids: list[str], scale: float | None = None) -> ObjectBank:
        """Load and group these objects at ``scale`` (default: the config's object_scale)."""
        s = float(self.config.object_scale if scale is None else scale)
        return ObjectBank.build(layout, [(o, s) for o in object_ids], self.checkpoint.config.model)

    @torch.no_grad()
    def _encode(self, bank_groups, sem, has, obj: Tensor, R: Tensor) -> Tensor:
        centres, local, normals = rotate_groups(bank_groups, obj, R)
        with self._autocast():
            return self.model.encode(centres, local, normals, sem[obj], has[obj])

    def plan(self, counts: list[int]) -> list[list[tuple[int, int, int]]]:
        """Pack per-entry grasp counts into batches of at most batch_size: [[(entry, start, n), ...], ...].

        An entry's grasps stay in one batch when they fit (else they fill whole batches of their own), so
        an entry's noise, drawn from its own generator, does not depend on which entries share its batch.
        """
        bs = self.config.batch_size
        if bs < 1:
            raise ValueError("batch_size must be >= 1")
        batches: list[list[tuple[int, int, int]]] = []
        current: list[tuple[int, int, int]] = []
        used = 0
        for e, n in enumerate(counts):
            for start in range(0, n, bs):
                k = min(bs, n - start)
                if used + k > bs:
                    batches.append(current)
                    current, used = [], 0
                current.append((e, start, k))
                used += k
        if current:
            batches.append(current)
        return batches

    def sample(self, bank: ObjectBank, counts: list[int], seeds: list[int], guidance: bool | None = None) -> Samples:
        """Sample ``counts[e]`` grasps of bank entry e, with entry e's randomness seeded by ``seeds[e]``.

        Each entry draws its hand orientations (uniform on SO(3)) and then all its diffusion noise from
        its own generator, so the same seed gives the same grasps whatever else is sampled alongside.
        """
        cfg = self.config
        guidance = cfg.guidance if guidance is None else guidance
        if len(counts) != len(bank.keys) or len(seeds) != len(counts):
            raise ValueError(f"need one count and one seed per bank entry ({len(bank.keys)}), got {len(counts)} and {len(seeds)}")
        gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
        R_entry = [rotations.random_rotations(n, g) for n, g in zip(counts, gens)]
        groups = bank.groups.to(self.device)
        sem, has = bank.semantic.to(self.device), bank.has_semantic.to(self.device)
        physics = None
        if guidance and cfg.weights.any():
            physics = PoseObjectives(bank, self.normaliser, cfg.weights, hand=self.hand, device=self.device,
                                     field="grid", grid_resolution=cfg.sdf_resolution)
        xs, Rs, objs = [], [], []
        t0 = time.perf_counter()
        for batch in self.plan(list(counts)):
            o = torch.cat([torch.full((k,), e, dtype=torch.long) for e, _, k in batch])
            R = torch.cat([R_entry[e][start : start + k] for e, start, k in batch])
            o_dev, R_dev = o.to(self.device), R.to(self.device)
            ctx = self._encode(groups, sem, has, o_dev, R_dev)
            with torch.no_grad(), self._autocast():
                cache = self.model.context_cache(ctx)  # the object is fixed: its keys/values too

            def eps_fn(x: Tensor, t: Tensor, cache=cache) -> Tensor:
                with self._autocast():
                    return self.model(x, t[:1], None, cache)  # one timestep for the whole batch

            def noise(batch=batch) -> Tensor:
                return torch.cat([torch.randn(k, 27, generator=gens[e]) for e, _, k in batch])

            phys = (lambda x0n, R=R_dev, o=o_dev: physics.per_grasp(x0n, R, o)) if physics is not None else None  # noqa: E731
            if cfg.sampler == "dpm-solver++":
                if phys is not None:
                    raise ValueError("dpm-solver++ samples unguided: turn guidance off, or use the ddpm sampler (respaced "
                                     "with SampleConfig.steps) for physics-guided sampling")
                x = self.diffusion.sample_dpm(eps_fn, (len(o), 27), noise)
            else:
                x = self.diffusion.sample(eps_fn, (len(o), 27), None, phys, cfg.guidance_rate, cfg.grad_through_model,
                                          noise=noise)
            xs.append(x)
            Rs.append(R)
            objs.append(o)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        if not xs:
            z = np.zeros((0,), np.float32)
            return Samples(z.reshape(0, 3), z.reshape(0, 4), z.reshape(0, 24), np.zeros(0, np.int64), seconds)
        pose = self.normaliser.denormalise(torch.cat(xs).double())
        R64 = torch.cat(Rs).double().to(self.device)
        t = unfold(pose[:, :3], R64)
        q = pose[:, 3:]
        if cfg.clamp_joints:
            q = torch.maximum(torch.minimum(q, self.upper), self.lower)
        quat = rotations.matrix_to_quat(R64)
        n = int(sum(counts))
        return Samples(
            translation=t.float().cpu().numpy(), rotation=quat.float().cpu().numpy(), joints=q.float().cpu().numpy(),
            obj=torch.cat(objs).numpy(), seconds=seconds, stats={"grasps": n, "guidance": physics is not None},
        )
