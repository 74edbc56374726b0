"""Rotation conversions, batched, in torch (differentiable) — the one place the engine converts rotations.

Conventions, stated once:
- matrices act on column vectors: ``p_world = R @ p_local + t``;
- quaternions are **wxyz** (scalar first), unit length; :func:`matrix_to_quat` returns ``w >= 0``;
- the 6D form is the **first two columns** of the matrix, concatenated ``[R[:,0], R[:,1]]`` (as the DGA
  reference code and MultiDex store it); :func:`rot6d_to_matrix` re-orthonormalises by Gram-Schmidt, so
  unnormalised inputs are accepted;
- axis-angle is a 3-vector ``axis * angle`` (radians);
- Euler angles follow transforms3d's axes strings; only static-frame ``'sxyz'`` (DexGraspNet's WRJR) is
  needed: ``R = Rz(c) @ Ry(b) @ Rx(a)`` for angles ``(a, b, c)``.

All functions take ``(..., k)`` tensors and broadcast over leading dimensions.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def _normalise(v: Tensor, eps: float = 1e-12) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_to_matrix(q: Tensor) -> Tensor:
    """(..., 4) wxyz -> (..., 3, 3). The quaternion is normalised first."""
    q = _normalise(q)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 4) wxyz with ``w >= 0`` (numerically robust branch selection)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate quaternions, each stable where its own component is large.
    cands = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )
    diag = torch.stack([m00 + m11 + m22, m00, m11, m22], -1)
    best = diag.argmax(-1, keepdim=True)
    q = torch.gather(cands, -2, best.unsqueeze(-1).expand(best.shape[:-1] + (1, 4))).squeeze(-2)
    q = _normalise(q)
    return torch.where(q[..., :1] < 0, -q, q)


def rot6d_to_matrix(d6: Tensor) -> Tensor:
    """(..., 6) first two columns -> (..., 3, 3) by Gram-Schmidt."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = _normalise(a1)
    b2 = _normalise(a2 - (b1 * a2).sum(-1, keepdim=True) * b1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(m: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 6): the first column then the second."""
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """(..., 3) axis*angle -> (..., 3, 3) (Rodrigues; smooth at zero angle)."""
    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = theta2.clamp_min(1e-24).sqrt()
    small = theta2 < 1e-12
    # sin(t)/t and (1-cos t)/t^2 with Taylor fallbacks near zero.
    s = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    c = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    return eye + s[..., None] * k + c[..., None] * (k @ k)


def matrix_to_axis_angle(m: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3) axis*angle with angle in [0, pi]."""
    q = matrix_to_quat(m)
    w = q[..., :1].clamp(-1.0, 1.0)
    xyz = q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w)
    scale = torch.where(sin_half < 1e-8, 2.0 / w.clamp_min(1e-8), angle / sin_half.clamp_min(1e-12))
    return xyz * scale


def _rx(a: Tensor) -> Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(a.shape + (3, 3))


def _ry(a: Tensor) -> Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(a.shape + (3, 3))


def _rz(a: Tensor) -> Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(a.shape + (3, 3))


_AXIS = {"x": _rx, "y": _ry, "z": _rz}


def euler_to_matrix(angles: Tensor, axes: str = "sxyz") -> Tensor:
    """(..., 3) -> (..., 3, 3) for transforms3d-style axes: 's' static (extrinsic) or 'r' rotating (intrinsic).

    ``'sxyz'``: rotate about world x by a, then world y by b, then world z by c: ``Rz(c) Ry(b) Rx(a)``.
    ``'rxyz'``: rotate about body x, then the new y, then the new z: ``Rx(a) Ry(b) Rz(c)``.
    """
    if len(axes) != 4 or axes[0] not in "sr" or any(a not in "xyz" for a in axes[1:]):
        raise ValueError(f"unsupported Euler axes {axes!r}: expected e.g. 'sxyz' or 'rzyx'")
    mats = [_AXIS[ax](angles[..., i]) for i, ax in enumerate(axes[1:])]
    if axes[0] == "s":
        return mats[2] @ mats[1] @ mats[0]
    return mats[0] @ mats[1] @ mats[2]


def matrix_to_euler_sxyz(m: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3) static xyz angles (a, b, c) with ``R = Rz(c) Ry(b) Rx(a)``; b in [-pi/2, pi/2]."""
    b = torch.asin((-m[..., 2, 0]).clamp(-1.0, 1.0))
    a = torch.atan2(m[..., 2, 1], m[..., 2, 2])
    c = torch.atan2(m[..., 1, 0], m[..., 0, 0])
    return torch.stack([a, b, c], -1)


def random_rotations(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> Tensor:
    """(n, 3, 3) rotations uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return quat_to_matrix(q)
