"""The push test in MuJoCo (CPU): one scene per object, one grasp at a time.

Per grasp (all from :class:`~dga_engine.simulate.config.FilterConfig`):

1. reset the scene to the grasp (hand joints and servo targets at the grasp's joints, object at the
   inverse root pose, velocities zero);
2. closing: squeeze targets (:mod:`dga_engine.simulate.closing`: computed here with ``squeeze="jacobian"``,
   or given by the caller - the engine computes ``adam-sign`` targets with the hand model), step
   ``close_time``; the state reached is the *closed state*; ``contact_count`` = hand collision geoms
   touching the object there;
3. push: for each of +x, -x, +y, -y, +z, -z of the object frame (rotated into the hand frame), apply
   ``push_force_per_volume x volume`` newtons for ``push_time`` - at the object's centre of mass, or
   (``push_point="origin"``, as the reference) at its frame origin, i.e. plus the torque of that offset,
   updated every step - starting from a copy of the closed state (or, if ``sequential``, from where
   the previous push ended, without reset, as the reference does). The direction's displacement is the
   distance of the object frame's origin (the reference tracks the object actor's root position) from
   where that push started: its largest value over the states after each step (``displacement="max"``)
   or its value at the end (``"end"``, the reference); it passes below ``max_displacement``. With
   ``early_stop`` (and "max", not sequential) a push ends as soon as the limit is reached (the maximum
   cannot go back below it, so no outcome changes; the recorded value is then the one at the stop).
"""

from __future__ import annotations

import time

import mujoco
import numpy as np

from dga_engine.simulate.backends.base import (
    SimResult,
    SimulationError,
    push_directions,
    quiet_warnings,
    touching_geoms,
)
from dga_engine.simulate.closing import squeeze_targets
from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.scene import Scene, build_scene

_BAD_WARNINGS = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                                  mujoco.mjtWarning.mjWARN_BADQACC, mujoco.mjtWarning.mjWARN_CNSTRFULL,
                                  mujoco.mjtWarning.mjWARN_CONTACTFULL)]


class MujocoSimulator:
    """Runs the push test on one scene; keeps scratch MjData to avoid allocations per grasp."""

    def __init__(self, scene: Scene, config: FilterConfig) -> None:
        self.scene = scene
        self.config = config
        self._closed = mujoco.MjData(scene.model)
        self._work = mujoco.MjData(scene.model)

    def _check(self, d: mujoco.MjData) -> None:
        sc = self.scene
        # MuJoCo resets the data (and warns) when the state blows up; a reset must not pass for a result.
        for w in _BAD_WARNINGS:
            if d.warning[w].number:
                raise SimulationError(f"simulation diverged ({mujoco.mjtWarning(w).name} at t={d.time:.3f} s)")
        v = d.qvel[sc.obj_dof : sc.obj_dof + 3]
        if not np.all(np.isfinite(d.qpos)) or float(v @ v) > self.config.max_object_speed**2:
            speed = float(np.sqrt(v @ v)) if np.all(np.isfinite(v)) else float("nan")
            raise SimulationError(f"simulation diverged (object speed {speed:.3g} m/s at t={d.time:.3f} s)")

    def run(self, translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray, targets: np.ndarray | None = None,
            volume: float | None = None) -> SimResult:
        """Close, then push six ways. rotation: (3, 3) root orientation; joints (24,).

        targets (24,): squeeze targets (None: :func:`squeeze_targets`); volume: m^3 that scales the
        push force (None: the parts' volume).
        """
        cfg, sc, m = self.config, self.scene, self.scene.model
        t0 = time.process_time()
        d = sc.reset(translation, rotation, joints, self._closed)
        if targets is None:
            targets, _ = squeeze_targets(sc, d, joints, cfg)
            mujoco.mj_forward(m, d)  # squeeze_targets overwrote the contact list with its margin query
        steps = 0
        ramp = max(1, int(round(cfg.close_ramp * cfg.close_steps)))
        start = np.asarray(joints, dtype=np.float64)
        m.opt.timestep = cfg.close_timestep
        try:
            for i in range(min(ramp, cfg.close_steps)):
                # targets move from the grasp pose to the squeeze targets over the ramp, then hold
                d.ctrl[:] = start + (targets - start) * ((i + 1) / ramp)
                mujoco.mj_step(m, d)
            if cfg.close_steps > ramp:
                mujoco.mj_step(m, d, nstep=cfg.close_steps - ramp)
        finally:
            m.opt.timestep = cfg.timestep
        steps += cfg.close_steps
        self._check(d)
        contact_count = touching_geoms(sc, d)
        t1 = time.process_time()

        dirs = push_directions(rotation)
        force = cfg.push_force_per_volume * (sc.volume if volume is None else volume)
        limit2 = cfg.max_displacement**2
        early = cfg.stops_early
        track_max = cfg.displacement == "max"
        at_origin = cfg.push_point == "origin"
        disp = np.zeros(6)
        body, a = sc.obj_body, sc.obj_qpos
        w = self._work
        if cfg.sequential:
            mujoco.mj_copyData(w, m, d)
        for k in range(6):
            if not cfg.sequential:
                mujoco.mj_copyData(w, m, d)
            qpos = w.qpos
            x0, y0, z0 = float(qpos[a]), float(qpos[a + 1]), float(qpos[a + 2])
            f = force * dirs[k]
            w.xfrc_applied[body, :3] = f
            best = 0.0
            step = mujoco.mj_step
            if track_max or at_origin:
                for _ in range(cfg.push_steps):  # scalar arithmetic: this loop runs ~240 times per grasp
                    if at_origin:  # the force at the frame origin = at the centre of mass plus its torque
                        w.xfrc_applied[body, 3:] = np.cross(w.xpos[body] - w.xipos[body], f)
                    step(m, w)
                    steps += 1
                    if track_max:
                        dx, dy, dz = qpos[a] - x0, qpos[a + 1] - y0, qpos[a + 2] - z0
                        r2 = dx * dx + dy * dy + dz * dz
                        if r2 > best:
                            best = r2
                            if early and best >= limit2:
                                break
            else:
                step(m, w, nstep=cfg.push_steps)
                steps += cfg.push_steps
            if not track_max:
                dx, dy, dz = qpos[a] - x0, qpos[a + 1] - y0, qpos[a + 2] - z0
                best = dx * dx + dy * dy + dz * dz
            self._check(w)
            w.xfrc_applied[body, :] = 0.0
            disp[k] = np.sqrt(best)
        t2 = time.process_time()
        return SimResult(
            displacement=disp,
            passed=disp < cfg.max_displacement,
            contact_count=contact_count,
            steps=steps,
            timings={"closing": t1 - t0, "push": t2 - t1},
        )


class MujocoBackend:
    """The ``mujoco`` backend: one compiled scene per object and scale (kept for consecutive batches)."""

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        self.name = f"mujoco-{mujoco.__version__}"
        self.stats: dict[str, float] = {"scene": 0.0, "closing": 0.0, "push": 0.0, "steps": 0, "scenes": 0}
        self._key: tuple[str, float] | None = None
        self._sim: MujocoSimulator | None = None

    def simulator(self, key: str, parts, scale: float) -> MujocoSimulator:
        if self._sim is None or self._key != (key, float(scale)):
            t0 = time.process_time()
            self._sim = MujocoSimulator(build_scene(list(parts), scale, self.config), self.config)
            self._key = (key, float(scale))
            self.stats["scene"] += time.process_time() - t0
            self.stats["scenes"] += 1
        return self._sim

    def simulate(self, key, parts, scale, translation, rotation, joints, targets=None,
                 volume=None) -> list[SimResult | BaseException]:
        sim = self.simulator(key, parts, scale)
        out: list[SimResult | BaseException] = []
        with quiet_warnings():
            for i, (t, r, q) in enumerate(zip(translation, rotation, joints)):
                try:
                    res = sim.run(t, r, q, None if targets is None else targets[i], volume)
                except (SimulationError, mujoco.FatalError, ValueError, FloatingPointError) as exc:
                    out.append(exc)
                    continue
                self.stats["closing"] += res.timings["closing"]
                self.stats["push"] += res.timings["push"]
                self.stats["steps"] += res.steps
                out.append(res)
        return out
