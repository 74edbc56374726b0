"""The network: a point-cloud transformer over the object, and a cross-attention denoiser over the pose.

Object encoder (a compact Point-Transformer-style encoder): farthest-point-sampled group centres, the k
nearest points of each centre, a small shared PointNet over each group's points (coordinates relative
to the centre, divided by the group radius, plus normals; max-pooled), the centre's position added,
then transformer layers over the N group tokens -> (B, N, C). The LLM-description feature becomes the
(N+1)-th token through a linear map; a learned null token stands in when an object has none.

Grouping depends only on distances, so it is rotation-invariant: :func:`group_object` runs once per
object and :func:`rotate_groups` rotates the grouped coordinates into each grasp's hand frame.

Denoiser: the 27-D pose becomes ``pose_tokens`` tokens; each block modulates its sublayers by the
timestep (adaptive layer norm), then self-attention over the pose tokens, cross-attention to the object
tokens, and an MLP; the output predicts the noise (eps). Attention is plain matmul + softmax, which on
CPU in bf16 is several times faster than the fused kernels for a handful of tokens (throughput.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dga_engine.generate.config import ModelConfig
from dga_engine.generate.normalise import POSE_DIM
from dga_engine.hand.model import farthest_point_sampling

Tensor = torch.Tensor


# ---- object grouping ---------------------------------------------------------------------------


@dataclass
class ObjectGroups:
    """Grouped object points for O objects (object frame, metres, already scaled).

    centres: (O, N, 3); local: (O, N, k, 3) neighbours minus their centre; normals: (O, N, k, 3).
    """

    centres: Tensor
    local: Tensor
    normals: Tensor

    def to(self, device: torch.device | str) -> ObjectGroups:
        return ObjectGroups(self.centres.to(device), self.local.to(device), self.normals.to(device))

    def __len__(self) -> int:
        return self.centres.shape[0]

    @staticmethod
    def stack(items: list[ObjectGroups]) -> ObjectGroups:
        return ObjectGroups(*(torch.cat([getattr(g, f) for g in items]) for f in ("centres", "local", "normals")))


def group_object(points: np.ndarray, normals: np.ndarray, config: ModelConfig, scale: float = 1.0,
                 start: int = 0) -> ObjectGroups:
    """Deterministic grouping of one object's points (P,3)/(P,3) -> ObjectGroups with O = 1 (``start``:
    the point farthest-point sampling begins at)."""
    points = np.asarray(points, dtype=np.float64) * float(scale)
    normals = np.asarray(normals, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or normals.shape != points.shape or len(points) < config.group_size:
        raise ValueError(
            f"object points must be (P,3) with matching normals and P >= group_size={config.group_size}; got "
            f"{points.shape} and {normals.shape}"
        )
    if len(points) > config.n_points:  # a fixed, evenly spread subset
        keep = farthest_point_sampling(points, config.n_points, start=start % len(points))
        points, normals = points[keep], normals[keep]
    centres_idx = farthest_point_sampling(points, config.n_groups, start=start % len(points))
    centres = points[centres_idx]
    d = np.linalg.norm(centres[:, None, :] - points[None, :, :], axis=-1)  # (N, P)
    nbr = np.argsort(d, axis=1, kind="stable")[:, : config.group_size]
    local = points[nbr] - centres[:, None, :]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32).unsqueeze(0)  # noqa: E731
    return ObjectGroups(as_t(centres), as_t(local), as_t(normals[nbr]))


def rotate_groups(groups: ObjectGroups, index: Tensor, rotation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Groups of objects ``index`` (B,) seen from hands with orientation ``rotation`` (B,3,3): p -> R^T p.

    Returns centres (B,N,3), local (B,N,k,3), normals (B,N,k,3).
    """
    R = rotation.to(groups.centres.dtype)
    c = groups.centres[index] @ R  # row vectors: (R^T p)^T = p^T R
    loc = groups.local[index] @ R.unsqueeze(1)
    nrm = groups.normals[index] @ R.unsqueeze(1)
    return c, loc, nrm


# ---- building blocks ---------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention with plain matmul/softmax (fast for few tokens on CPU, any device)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor | None = None, kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, Lq, D) attends to ``context`` (B, Lk, D) (itself when None), or to precomputed ``kv``."""
        B, Lq, D = x.shape
        h, d = self.heads, D // self.heads
        q = self.q(x).view(B, Lq, h, d).transpose(1, 2)
        k, v = kv if kv is not None else self.keys_values(x if context is None else context)
        attn = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d)), dim=-1)
        out = (self.drop(attn) @ v).transpose(1, 2).reshape(B, Lq, D)
        return self.out(out)

    def keys_values(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Per-head keys and values (B, h, Lk, d) of ``ctx``: precompute them when ctx is fixed."""
        B, Lk, D = ctx.shape
        k, v = self.kv(ctx).view(B, Lk, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return k, v


def _mlp(dim: int, ratio: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ratio, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = _mlp(dim, ratio, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class ObjectEncoder(nn.Module):
    """Grouped object points in the hand frame -> N tokens of width C."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        last = 6
        for w in cfg.point_mlp:
            layers += [nn.Linear(last, w), nn.LayerNorm(w), nn.GELU()]
            last = w
        self.point_mlp = nn.Sequential(*layers)
        self.group_proj = nn.Linear(last + 4, cfg.width)  # pooled feature + centre (3) + radius (1)
        self.layers = nn.ModuleList(
            [EncoderLayer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.encoder_layers)]
        )
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, centres: Tensor, local: Tensor, normals: Tensor) -> Tensor:
        radius = local.norm(dim=-1).amax(-1, keepdim=True).clamp_min(1e-4)  # (B, N, 1)
        feats = torch.cat([local / radius.unsqueeze(-1), normals], -1)  # (B, N, k, 6)
        pooled = self.point_mlp(feats).amax(-2)  # (B, N, w)
        s = self.cfg.coord_scale
        tok = self.group_proj(torch.cat([pooled, centres * s, radius * s], -1))
        for layer in self.layers:
            tok = layer(tok)
        return self.norm(tok)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class DenoiserBlock(nn.Module):
    """adaLN(t) -> self-attention over pose tokens -> cross-attention to object tokens -> MLP."""

    def __init__(self, dim: int, heads: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.n2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.n3 = nn.LayerNorm(dim, elementwise_affine=False)
        self.nctx = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.mlp = _mlp(dim, ratio, dropout)
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))
        nn.init.zeros_(self.mod[1].weight)
        nn.init.zeros_(self.mod[1].bias)

    def context_kv(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        return self.cross_attn.keys_values(self.nctx(ctx))

    def forward(self, x: Tensor, temb: Tensor, ctx: Tensor, kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        m = self.mod(temb).unsqueeze(1).chunk(9, dim=-1)
        x = x + (1 + m[2]) * self.self_attn(self.n1(x) * (1 + m[0]) + m[1])
        kv = kv if kv is not None else self.context_kv(ctx)
        x = x + (1 + m[5]) * self.cross_attn(self.n2(x) * (1 + m[3]) + m[4], kv=kv)
        return x + (1 + m[8]) * self.mlp(self.n3(x) * (1 + m[6]) + m[7])


class GraspDiffusionNet(nn.Module):
    """eps_phi(x_t, O, t): object encoder + semantic token + cross-attention denoiser.

    encode(centres, local, normals, semantic, has_semantic) -> context (B, N+1, C) (computed once per grasp
    and reused for every denoising step); forward(x (B,27), t (B,), context) -> eps (B,27).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D, M = cfg.width, cfg.pose_tokens
        self.encoder = ObjectEncoder(cfg)
        self.semantic_proj = nn.Linear(cfg.semantic_dim, D)
        self.null_token = nn.Parameter(torch.zeros(D))
        nn.init.normal_(self.null_token, std=0.02)
        self.pose_in = nn.Linear(POSE_DIM, M * D)
        self.pose_pos = nn.Parameter(torch.zeros(M, D))
        nn.init.normal_(self.pose_pos, std=0.02)
        self.time_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        self.blocks = nn.ModuleList(
            [DenoiserBlock(D, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.blocks)]
        )
        self.out_norm = nn.LayerNorm(D)
        self.pose_out = nn.Linear(M * D, POSE_DIM)

    def encode(
        self,
        centres: Tensor,
        local: Tensor,
        normals: Tensor,
        semantic: Tensor | None = None,
        has_semantic: Tensor | None = None,
    ) -> Tensor:
        tokens = self.encoder(centres, local, normals)
        B, D = tokens.shape[0], tokens.shape[-1]
        null = self.null_token.to(tokens.dtype).expand(B, D)
        if self.cfg.use_semantic and semantic is not None:
            sem = self.semantic_proj(semantic.to(tokens.dtype))
            present = torch.ones(B, dtype=torch.bool, device=tokens.device) if has_semantic is None else has_semantic
            sem = torch.where(present[:, None], sem, null)
        else:
            sem = null
        return torch.cat([tokens, sem.unsqueeze(1)], 1)

    def context_cache(self, context: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every block's cross-attention keys/values of ``context``: compute once, reuse at every step."""
        return [block.context_kv(context) for block in self.blocks]

    def forward(
        self, x: Tensor, t: Tensor, context: Tensor | None, cache: list[tuple[Tensor, Tensor]] | None = None
    ) -> Tensor:
        """eps for x (B,27) at timesteps t ((B,), or (1,) shared by the batch, which saves the time MLP
        per grasp) given the object context (B, N+1, C) or its :meth:`context_cache`."""
        B = x.shape[0]
        M, D = self.cfg.pose_tokens, self.cfg.width
        h = self.pose_in(x).view(B, M, D) + self.pose_pos
        temb = self.time_mlp(timestep_embedding(t, D).to(h.dtype))
        for i, block in enumerate(self.blocks):
            h = block(h, temb, context, cache[i] if cache is not None else None)
        return self.pose_out(self.out_norm(h).reshape(B, M * D))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
