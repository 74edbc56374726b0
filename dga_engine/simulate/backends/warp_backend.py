"""The ``mujoco-warp`` backend: the same push test with many grasps as parallel worlds on a GPU.

It uses the scene of :mod:`dga_engine.simulate.scene` unchanged (``mujoco_warp.put_model`` of the
compiled MjModel), so the physics model, options and protocol are those of the ``mujoco`` backend:

1. squeeze targets are computed on the CPU per grasp (:mod:`dga_engine.simulate.closing`, a margin
   collision query and Jacobians: ~0.1 ms), exactly as the CPU backend does, or given by the engine
   (``squeeze="adam-sign"``);
2. closing: one world per grasp, ``close_steps`` steps at ``timestep / close_substeps``;
3. pushes: the closed state of each grasp is copied into 6 worlds (one per direction) - or, with
   ``sequential``, the 6 pushes run one after the other in the grasp's own world - and stepped
   ``push_steps`` times at ``timestep``; a small kernel keeps each world's maximum displacement
   (``displacement="end"`` reads the end state instead), and with ``push_point="origin"`` another sets
   the torque of the force about the centre of mass before every step.

Differences from the CPU backend: no early stop (every world runs the full push; the outcome is the
same because the test uses the maximum displacement, but a failing direction records the maximum over
the whole push rather than the value where the CPU run stopped), and GPU arithmetic (floating-point
order, float32) can flip grasps that are on the edge, like any change of simulator settings. Object
damping is part of the compiled model (dof damping), so it needs nothing here.
``contact_count`` is counted on the CPU from the closed state (a MuJoCo collision pass).

Needs ``pip install mujoco-warp`` (it pulls ``warp-lang``); it runs on CPU for debugging but is only
fast on an NVIDIA GPU. The first step compiles Warp kernels (~30 s, cached on disk afterwards).
"""

from __future__ import annotations

import time
from typing import Any

import mujoco
import numpy as np

from dga_engine.simulate.backends.base import (
    BackendUnavailable,
    SimResult,
    SimulationError,
    push_directions,
    quiet_warnings,
    touching_geoms,
)
from dga_engine.simulate.closing import squeeze_targets
from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.scene import Scene, build_scene

INSTALL = ("the mujoco-warp backend needs the mujoco_warp package: pip install 'mujoco-warp>=0.1' "
           "(or pip install 'dga-engine[gpu]'); it is fast only on an NVIDIA GPU with a CUDA driver")


def require_warp() -> tuple[Any, Any]:
    """(warp, mujoco_warp) modules, or BackendUnavailable saying how to install them."""
    try:
        import mujoco_warp as mjw
        import warp as wp
    except ImportError as exc:
        raise BackendUnavailable(f"{INSTALL} ({exc})") from exc
    return wp, mjw


_KERNELS: dict[str, Any] = {}


def _max_disp_kernel(wp):
    """Kernel: best[w] = max(best[w], |qpos[w, a:a+3] - start[w]|)."""
    if "max_disp" not in _KERNELS:

        @wp.kernel
        def max_disp(
            qpos: wp.array2d(dtype=float), adr: int, start: wp.array(dtype=wp.vec3), best: wp.array(dtype=float)
        ):
            w = wp.tid()
            p = wp.vec3(qpos[w, adr], qpos[w, adr + 1], qpos[w, adr + 2])
            dist = wp.length(p - start[w])
            if dist > best[w]:
                best[w] = dist

        _KERNELS["max_disp"] = max_disp
    return _KERNELS["max_disp"]


def _origin_torque_kernel(wp):
    """Kernel: the force on ``body`` acts at its frame origin: xfrc[w, body] = (f, (xpos - xipos) x f)."""
    if "origin_torque" not in _KERNELS:

        @wp.kernel
        def origin_torque(xpos: wp.array2d(dtype=wp.vec3), xipos: wp.array2d(dtype=wp.vec3), body: int,
                          force: wp.array(dtype=wp.vec3), xfrc: wp.array2d(dtype=wp.spatial_vector)):
            w = wp.tid()
            f = force[w]
            tau = wp.cross(xpos[w, body] - xipos[w, body], f)
            xfrc[w, body] = wp.spatial_vector(f[0], f[1], f[2], tau[0], tau[1], tau[2])

        _KERNELS["origin_torque"] = origin_torque
    return _KERNELS["origin_torque"]


class WarpBackend:
    """All grasps of one object (and scale) stepped together, in batches of at most ``max_worlds``."""

    def __init__(self, config: FilterConfig, device: str | None = None, max_worlds: int = 8192) -> None:
        self.wp, self.mjw = require_warp()
        self.config = config
        self.device = device
        self.max_worlds = max_worlds
        self.name = f"mujoco-warp-{getattr(self.mjw, '__version__', 'unknown')}"
        self.stats: dict[str, float] = {"scene": 0.0, "closing": 0.0, "push": 0.0, "steps": 0, "scenes": 0}
        self._key: tuple[str, float] | None = None
        self._scene: Scene | None = None

    # ---- helpers ----------------------------------------------------------------------------------
    def _scene_for(self, key: str, parts, scale: float) -> Scene:
        if self._scene is None or self._key != (key, float(scale)):
            t0 = time.perf_counter()
            self._scene = build_scene(list(parts), scale, self.config)
            self._key = (key, float(scale))
            self.stats["scene"] += time.perf_counter() - t0
            self.stats["scenes"] += 1
        return self._scene

    def _data(self, scene: Scene, nworld: int):
        n_parts = len(scene.obj_geoms)
        # Contacts: at most one per (hand geom, part) pair without multi-point CCD, plus the finger pairs.
        nconmax = int(min(len(scene.hand_geoms) * n_parts, 64 + 4 * n_parts) + scene.model.npair)
        njmax = int(4 * nconmax + 2 * scene.model.njnt + 16)
        return self.mjw.put_data(scene.model, scene.data, nworld=nworld, nconmax=nconmax, njmax=njmax)

    def _assign(self, arr, values: np.ndarray) -> None:
        """Copy host values into a Warp array of the same shape (scalar or vector dtype)."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        arr.assign(self.wp.array(values, dtype=arr.dtype, device=arr.device))

    # ---- the protocol -----------------------------------------------------------------------------
    def simulate(self, key, parts, scale, translation, rotation, joints, targets=None,
                 volume=None) -> list[SimResult | BaseException]:
        scene = self._scene_for(key, parts, scale)
        out: list[SimResult | BaseException] = []
        for s in range(0, len(translation), self.max_worlds):
            sl = slice(s, s + self.max_worlds)
            out.extend(self._batch(scene, translation[sl], rotation[sl], joints[sl],
                                   None if targets is None else targets[sl], volume))
        return out

    def _push(self, mw, d, scene: Scene, forces: np.ndarray) -> np.ndarray:
        """Step ``push_steps`` with ``forces`` (nworld, 3) on the object; each world's displacement (nworld,)."""
        wp, mjw, cfg = self.wp, self.mjw, self.config
        nworld, a, body = forces.shape[0], scene.obj_qpos, scene.obj_body
        xfrc = np.zeros((nworld, scene.model.nbody, 6))
        xfrc[:, body, :3] = forces
        self._assign(d.xfrc_applied, xfrc)
        device = d.qpos.device
        start_np = d.qpos.numpy()[:, a : a + 3].astype(np.float64)
        start = wp.array(start_np.astype(np.float32), dtype=wp.vec3, device=device)
        force_arr = wp.array(forces.astype(np.float32), dtype=wp.vec3, device=device)
        best = wp.zeros(nworld, dtype=float, device=device)
        track_max = cfg.displacement == "max"
        for _ in range(cfg.push_steps):
            if cfg.push_point == "origin":
                wp.launch(
                    _origin_torque_kernel(wp), dim=nworld, inputs=[d.xpos, d.xipos, body, force_arr, d.xfrc_applied]
                )
            mjw.step(mw, d)
            if track_max:
                wp.launch(_max_disp_kernel(wp), dim=nworld, inputs=[d.qpos, a, start, best])
        if track_max:
            return best.numpy().astype(np.float64)
        return np.linalg.norm(d.qpos.numpy()[:, a : a + 3].astype(np.float64) - start_np, axis=1)

    def _batch(self, scene: Scene, translation, rotation, joints, given_targets=None,
               volume=None) -> list[SimResult | BaseException]:
        wp, mjw, cfg, m = self.wp, self.mjw, self.config, scene.model
        n = len(translation)
        t0 = time.perf_counter()
        qpos0 = np.zeros((n, m.nq))
        start_ctrl = np.zeros((n, m.nu))
        targets = np.zeros((n, m.nu))
        with quiet_warnings():
            for i in range(n):
                d = scene.reset(translation[i], rotation[i], joints[i])
                if given_targets is None:
                    targets[i], _ = squeeze_targets(scene, d, joints[i], cfg)
                else:
                    targets[i] = given_targets[i]
                qpos0[i] = d.qpos
                start_ctrl[i] = joints[i]
        mujoco.mj_resetData(m, scene.data)
        mujoco.mj_forward(m, scene.data)

        mw = mjw.put_model(m)
        d = self._data(scene, n)
        self._assign(d.qpos, qpos0)
        self._assign(d.qvel, np.zeros((n, m.nv)))
        ramp = max(1, int(round(cfg.close_ramp * cfg.close_steps)))
        mw.opt.timestep.fill_(cfg.close_timestep)
        for i in range(cfg.close_steps):
            if i < ramp:
                self._assign(d.ctrl, start_ctrl + (targets - start_ctrl) * min(1.0, (i + 1) / ramp))
            mjw.step(mw, d)
        wp.synchronize()
        t1 = time.perf_counter()

        closed = {name: getattr(d, name).numpy().copy() for name in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart")}
        contact_counts = np.zeros(n, dtype=int)
        errors: list[str | None] = [None] * n
        dof = scene.obj_dof
        for i in range(n):
            if not np.all(np.isfinite(closed["qpos"][i])) or not np.all(np.isfinite(closed["qvel"][i])):
                errors[i] = "simulation diverged during closing (non-finite state)"
                continue
            v = closed["qvel"][i, dof : dof + 3]
            if float(v @ v) > cfg.max_object_speed**2:
                errors[i] = f"simulation diverged (object speed {np.sqrt(v @ v):.3g} m/s after closing)"
                continue
            cpu = scene.data
            cpu.qpos[:] = closed["qpos"][i]
            mujoco.mj_kinematics(m, cpu)
            mujoco.mj_collision(m, cpu)
            contact_counts[i] = touching_geoms(scene, cpu)

        dirs = np.stack([push_directions(r) for r in rotation])  # (n, 6, 3)
        force = cfg.push_force_per_volume * (scene.volume if volume is None else volume)
        mw.opt.timestep.fill_(cfg.timestep)
        disp = np.zeros((n, 6))
        steps = cfg.close_steps
        if cfg.sequential:
            for k in range(6):
                disp[:, k] = self._push(mw, d, scene, force * dirs[:, k])
                steps += cfg.push_steps
            final_q = d.qpos.numpy()
        else:
            d6 = self._data(scene, 6 * n)
            for name, value in closed.items():
                if value.size:
                    self._assign(getattr(d6, name), np.repeat(value, 6, axis=0))
            disp = self._push(mw, d6, scene, force * dirs.reshape(6 * n, 3)).reshape(n, 6)
            steps += 6 * cfg.push_steps
            final_q = d6.qpos.numpy().reshape(n, 6, -1)
        wp.synchronize()
        t2 = time.perf_counter()
        self.stats["closing"] += t1 - t0
        self.stats["push"] += t2 - t1
        self.stats["steps"] += steps * n

        out: list[SimResult | BaseException] = []
        for i in range(n):
            if errors[i] is None and not (np.all(np.isfinite(disp[i])) and np.all(np.isfinite(final_q[i]))):
                errors[i] = "simulation diverged during the pushes (non-finite state)"
            if errors[i] is not None:
                out.append(SimulationError(errors[i]))
                continue
            out.append(SimResult(displacement=disp[i], passed=disp[i] < cfg.max_displacement,
                                 contact_count=int(contact_counts[i]), steps=steps))
        return out
