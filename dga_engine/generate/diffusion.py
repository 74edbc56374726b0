"""DDPM with eps-prediction, the physics-aware training loss (eq. 9) and the physics-guided sampler (eq. 13-15).

Physics enters through a callable ``physics(x0_hat) -> (B,)`` on the *normalised* estimated clean
pose; the caller closes over everything else (denormalisation, the grasps' rotations, the object
fields). Keeping it a callable keeps this module free of hand and object code.

Fewer sampling steps (``Diffusion.respaced(S)``): the model trained on T steps samples on S of them
(evenly spaced timesteps t_1 < ... < t_S, betas recomputed from their cumulative alphas, as in improved
DDPM's respacing). The sampler is still ancestral DDPM, so the guided step of eq. 13-15 keeps its form.
Unguided sampling can instead use DPM-Solver++(2M) (``sample_dpm``), the reference code's fast option.
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

    def __init__(self, cfg: DiffusionConfig, device: torch.device | str = "cpu", timesteps: Tensor | None = None) -> None:
        self.cfg = cfg
        ab = torch.cumprod(1 - make_betas(cfg), 0)
        if timesteps is None:  # every training step
            timesteps = torch.arange(cfg.steps)
        else:  # a respaced schedule on these training steps (increasing)
            ab = ab[timesteps]
        self.T = len(timesteps)
        self.model_t = timesteps.to(device)  # the training timestep of each sampling step (the network's input)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        betas = 1 - ab / ab_prev
        alphas = 1 - betas
        post_var = betas * (1 - ab_prev) / (1 - ab)  # 0 at the last step: the sample is the posterior mean
        f = lambda a: a.to(device=device, dtype=torch.float32)  # noqa: E731
        self.betas = f(betas)
        self.alphas_cumprod = f(ab)
        self.sqrt_ab = f(ab.sqrt())
        self.sqrt_1m_ab = f((1 - ab).sqrt())
        self.post_coef_x0 = f(betas * ab_prev.sqrt() / (1 - ab))
        self.post_coef_xt = f((1 - ab_prev) * alphas.sqrt() / (1 - ab))
        self.post_std = f(post_var.clamp_min(0).sqrt())
        self.device = torch.device(device)

    def respaced(self, steps: int) -> "Diffusion":
        """The same model's schedule on ``steps`` evenly spaced training timesteps (all of them when
        ``steps`` is 0 or >= T): fewer network evaluations per sample, same trained weights."""
        if steps <= 0 or steps >= self.cfg.steps:
            return self
        t = torch.unique(torch.linspace(0, self.cfg.steps - 1, steps).round().long())
        return Diffusion(self.cfg, self.device, timesteps=t)

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
        (nothing near, nothing penetrating) takes the plain DDPM step. At the last step sigma is 0, so
        r = 0 and the sample is the posterior mean, as in the reference (no extra step along -g).

        noise: draws one (B, n) standard normal tensor per call (h_T, then one per step); default: from
        ``generator`` on its device (CPU), so a seed gives the same grasps on any device.
        """
        B, n = shape
        if noise is None:
            noise = lambda: torch.randn(shape, generator=generator)  # noqa: E731
        randn = lambda: noise().to(self.device)  # noqa: E731
        x = randn()
        for step in range(self.T - 1, -1, -1):
            t = torch.full((B,), int(self.model_t[step]), device=self.device, dtype=torch.long)  # the network's timestep
            i = torch.full((B,), step, device=self.device, dtype=torch.long)  # the schedule's index
            z = randn() if step > 0 else torch.zeros(shape, device=self.device)
            if physics is None:
                with torch.no_grad():
                    x0 = self._clip(self.predict_x0(x, i, eps_fn(x, t).float()))
                    x = self.posterior_mean(x0, x, i) + self.post_std[step] * z
                continue
            with torch.enable_grad():
                if grad_through_model:
                    xin = x.detach().requires_grad_(True)
                    x0 = self.predict_x0(xin, i, eps_fn(xin, t).float())
                    (g,) = torch.autograd.grad(physics(x0).sum(), xin)
                else:
                    with torch.no_grad():
                        x0 = self.predict_x0(x, i, eps_fn(x, t).float())
                    x0r = x0.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(physics(x0r).sum(), x0r)
                    g = g / self.sqrt_ab[step]  # d h0_hat / d h_t with eps held fixed
            with torch.no_grad():
                mu = self.posterior_mean(self._clip(x0.detach()), x, i)
                sigma = self.post_std[step]
                r = math.sqrt(n) * sigma
                gn = g.norm(dim=-1, keepdim=True)
                ok = (gn > 1e-12) & torch.isfinite(gn)
                d_star = torch.where(ok, -r * g / gn.clamp_min(1e-12), torch.zeros_like(g))
                d_sample = sigma * z
                rate = torch.where(ok, torch.full_like(gn, guidance_rate), torch.zeros_like(gn))
                d_m = d_sample + rate * (d_star - d_sample)
                dn = d_m.norm(dim=-1, keepdim=True)
                x = mu + torch.where(dn > 1e-12, r * d_m / dn.clamp_min(1e-12), torch.zeros_like(d_m))
        return x.detach()

    @torch.no_grad()
    def sample_dpm(self, eps_fn: EpsFn, shape: tuple[int, int], noise: Callable[[], Tensor]) -> Tensor:
        """Unguided sampling with DPM-Solver++(2M) (Lu et al. 2022, data prediction, multistep) on this
        schedule's timesteps (use :meth:`respaced` for few steps); deterministic given h_T = ``noise()``."""
        B = shape[0]
        x = noise().to(self.device)
        ab = self.alphas_cumprod.double()
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        lam = torch.log(alpha / sigma)
        prev_x0, prev_h = None, None
        for step in range(self.T - 1, -1, -1):
            t = torch.full((B,), int(self.model_t[step]), device=self.device, dtype=torch.long)
            i = torch.full((B,), step, device=self.device, dtype=torch.long)
            x0 = self._clip(self.predict_x0(x, i, eps_fn(x, t).float()))
            if step == 0:
                return x0
            h = float(lam[step - 1] - lam[step])
            d = x0 if prev_x0 is None else (1 + h / (2 * prev_h)) * x0 - (h / (2 * prev_h)) * prev_x0
            x = float(sigma[step - 1] / sigma[step]) * x - float(alpha[step - 1] * math.expm1(-h)) * d
            prev_x0, prev_h = x0, h
        return x
