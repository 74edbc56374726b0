"""DDPM with eps-prediction, the physics-aware training loss (eq. 9) and the physics-guided sampler (eq. 13-15).

Physics enters through a callable ``physics(x0_hat) -> (B,)`` on the *normalised* estimated clean
pose; the caller closes over everything else (denormalisation, the grasps' rotations, the object
fields). Keeping it a callable keeps this module free of hand and object code.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from dga_engine.generate.config import DiffusionConfig

Tensor = torch.Tensor
PhysicsFn = Callable[[Tensor], Tensor]  # normalised h0_hat (B,27) -> scalar (training) or (B,) (guidance)
EpsFn = Callable[[Tensor, Tensor], Tensor]  # (x_t, t) -> eps


def make_betas(cfg: DiffusionConfig) -> Tensor:
    """(T,) float64 betas for the configured schedule."""
    T = cfg.steps
    if T < 1:
        raise ValueError("diffusion steps must be >= 1")
    if cfg.schedule == "linear":
        return torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
    if cfg.schedule == "cosine":  # Nichol & Dhariwal 2021
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {cfg.schedule!r}: use 'linear' or 'cosine'")


class Diffusion:
    """Schedule tensors (float32, on ``device``) and the forward/reverse processes."""

    def __init__(self, cfg: DiffusionConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.T = cfg.steps
        betas = make_betas(cfg)
        alphas = 1 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        post_var = betas * (1 - ab_prev) / (1 - ab)
        # t = 0 has zero posterior variance; the guided step still needs a radius there, so the clipped
        # variance (DDPM "fixedsmall" log-variance clipping) uses step 1's value at t = 0.
        post_var_clipped = torch.cat([post_var[1:2], post_var[1:]]) if self.T > 1 else betas.clone()
        f = lambda a: a.to(device=device, dtype=torch.float32)  # noqa: E731
        self.betas = f(betas)
        self.alphas_cumprod = f(ab)
        self.sqrt_ab = f(ab.sqrt())
        self.sqrt_1m_ab = f((1 - ab).sqrt())
        self.post_coef_x0 = f(betas * ab_prev.sqrt() / (1 - ab))
        self.post_coef_xt = f((1 - ab_prev) * alphas.sqrt() / (1 - ab))
        self.post_std = f(post_var.clamp_min(0).sqrt())
        self.post_std_clipped = f(post_var_clipped.sqrt())
        self.device = torch.device(device)

    # ---- forward process and estimates -----------------------------------------------------------
    @staticmethod
    def _at(a: Tensor, t: Tensor) -> Tensor:
        return a[t].unsqueeze(-1)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """h_t = sqrt(ab_t) h_0 + sqrt(1 - ab_t) eps  (eq. 8)."""
        return self._at(self.sqrt_ab, t) * x0 + self._at(self.sqrt_1m_ab, t) * noise

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """h0_hat(h_t) = (h_t - sqrt(1 - ab_t) eps_phi) / sqrt(ab_t)."""
        return (xt - self._at(self.sqrt_1m_ab, t) * eps) / self._at(self.sqrt_ab, t)

    def posterior_mean(self, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        return self._at(self.post_coef_x0, t) * x0 + self._at(self.post_coef_xt, t) * xt

    def sample_timesteps(self, batch: int, generator: torch.Generator | None, antithetic: bool) -> Tensor:
        if antithetic:
            half = torch.randint(0, self.T, ((batch + 1) // 2,), generator=generator)
            return torch.cat([half, self.T - 1 - half])[:batch].to(self.device)
        return torch.randint(0, self.T, (batch,), generator=generator).to(self.device)

    # ---- training ----------------------------------------------------------------------------------
    def training_losses(
        self,
        eps_fn: EpsFn,
        x0: Tensor,
        t: Tensor,
        noise: Tensor,
        physics: PhysicsFn | None = None,
    ) -> dict[str, Tensor]:
        """L_simple on the noise and, with ``physics``, the physics terms on h0_hat (eq. 9; batch means).

        Returns {"simple": scalar, "physics": scalar (0 without physics), "x0_hat": (B,27) detached}.
        """
        xt = self.q_sample(x0, t, noise)
        eps = eps_fn(xt, t).float()
        if self.cfg.loss == "l1":
            simple = (eps - noise).abs().mean()
        elif self.cfg.loss == "l2":
            simple = (eps - noise).pow(2).mean()
        else:
            raise ValueError(f"unknown diffusion loss {self.cfg.loss!r}: use 'l1' or 'l2'")
        x0_hat = self.predict_x0(xt, t, eps)
        phys = physics(x0_hat) if physics is not None else torch.zeros((), device=x0.device)
        phys = phys.mean() if phys.ndim else phys
        return {"simple": simple, "physics": phys, "x0_hat": x0_hat.detach()}

    # ---- sampling ----------------------------------------------------------------------------------
    def _clip(self, x0: Tensor) -> Tensor:
        if not self.cfg.clip_x0:
            return x0
        m = 1.0 + self.cfg.clip_margin
        return x0.clamp(-m, m)

    def sample(
        self,
        eps_fn: EpsFn,
        shape: tuple[int, int],
        generator: torch.Generator | None = None,
        physics: PhysicsFn | None = None,
        guidance_rate: float = 1.0,
        grad_through_model: bool = True,
        noise: Callable[[], Tensor] | None = None,
    ) -> Tensor:
        """Ancestral DDPM sampling from h_T ~ N(0, I); with ``physics``, the physics-guided sampler.

        Guided step (eq. 14-15, the spherical Gaussian constraint): with g = grad_{h_t} sum_i alpha_i
        L_PA_i(h0_hat(h_t)) per grasp, r = sqrt(n) sigma_t, d* = -r g/|g|, d_sample = sigma_t z,
        d_m = d_sample + g_r (d* - d_sample), h_{t-1} = mu + r d_m/|d_m|. A grasp whose gradient vanishes
        (nothing near, nothing penetrating) takes the plain DDPM step.

        noise: draws one (B, n) standard normal tensor per call (h_T, then one per step); default: from
        ``generator`` on its device (CPU), so a seed gives the same grasps on any device.
        """
        B, n = shape
        if noise is None:
            noise = lambda: torch.randn(shape, generator=generator)  # noqa: E731
        randn = lambda: noise().to(self.device)  # noqa: E731
        x = randn()
        for step in range(self.T - 1, -1, -1):
            t = torch.full((B,), step, device=self.device, dtype=torch.long)
            z = randn() if step > 0 else torch.zeros(shape, device=self.device)
            if physics is None:
                with torch.no_grad():
                    x0 = self._clip(self.predict_x0(x, t, eps_fn(x, t).float()))
                    x = self.posterior_mean(x0, x, t) + self.post_std[step] * z
                continue
            with torch.enable_grad():
                if grad_through_model:
                    xin = x.detach().requires_grad_(True)
                    x0 = self.predict_x0(xin, t, eps_fn(xin, t).float())
                    (g,) = torch.autograd.grad(physics(x0).sum(), xin)
                else:
                    with torch.no_grad():
                        x0 = self.predict_x0(x, t, eps_fn(x, t).float())
                    x0r = x0.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(physics(x0r).sum(), x0r)
                    g = g / self.sqrt_ab[step]  # d h0_hat / d h_t with eps held fixed
            with torch.no_grad():
                mu = self.posterior_mean(self._clip(x0.detach()), x, t)
                sigma = self.post_std[step]
                r = math.sqrt(n) * self.post_std_clipped[step]
                gn = g.norm(dim=-1, keepdim=True)
                ok = (gn > 1e-12) & torch.isfinite(gn)
                d_star = torch.where(ok, -r * g / gn.clamp_min(1e-12), torch.zeros_like(g))
                d_sample = sigma * z
                rate = torch.where(ok, torch.full_like(gn, guidance_rate), torch.zeros_like(gn))
                d_m = d_sample + rate * (d_star - d_sample)
                dn = d_m.norm(dim=-1, keepdim=True)
                x = mu + torch.where(dn > 1e-12, r * d_m / dn.clamp_min(1e-12), torch.zeros_like(d_m))
        return x.detach()
