"""The ``isaacgym`` backend: the push test in Isaac Gym Preview 4 (PhysX), the reference simulator.

NOT RUN HERE: Isaac Gym is not on PyPI, needs an NVIDIA GPU and Python <= 3.8, and was not available
where dga-engine is developed and tested. The code follows the Preview 4 API (gymapi/gymtorch) and the
tests only check the parts that do not need it (job files, the clear error without it).

Because dga-engine needs Python >= 3.11, the Isaac Gym half lives in a standalone script,
:mod:`dga_engine.simulate.backends.isaacgym_worker` (Python 3.6-3.8 syntax, no dga_engine imports). This side:

1. computes the squeeze targets with MuJoCo exactly as the other backends (same protocol);
2. writes a job folder: the filter's hand MJCF (servos removed; Isaac Gym drives DOFs with PD targets),
   the object as a URDF of its convex parts (scaled), grasps, targets and push directions;
3. runs the worker in-process when ``import isaacgym`` works here, else with the interpreter named by
   ``$DGA_ISAACGYM_PYTHON`` (a Python 3.8 environment with Isaac Gym installed);
4. reads back displacements and the closed state, and counts touching geoms with MuJoCo.

Settings map as follows: dt = ``timestep / close_substeps`` for the whole run (Isaac Gym's step is
fixed per simulation; push steps are scaled so the push lasts ``push_time``), PD stiffness ``kp``,
damping ``2 dampratio sqrt(kp * 0.001)`` (the finger joints' armature), effort ``force_limit``,
friction, density and object damping as configured (PhysX's own rigid-body damping), the push force
at the centre of mass or the body origin (``push_point``), the displacement's maximum or end value,
TGS with 8 position / 0 velocity iterations. Squeeze targets come from the engine (``adam-sign``) or
from MuJoCo here (``jacobian``). The ``dga-reference`` preset's MuJoCo-specific numbers (kp, closing
substeps) are used as they are: this backend runs the preset, not DGA's script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np

from dga_engine.hand.mjcf import JOINT_NAMES, PREFIX
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
from dga_engine.simulate.scene import Scene, _hand_spec_for, build_scene, hand_settings, object_pose

PYTHON_ENV = "DGA_ISAACGYM_PYTHON"
INSTALL = (
    "the isaacgym backend needs NVIDIA Isaac Gym Preview 4, which is not on PyPI: download "
    "IsaacGym_Preview_4_Package.tar.gz from https://developer.nvidia.com/isaac-gym, create a Python 3.8 "
    "environment (Isaac Gym supports Python 3.6-3.8 only) with numpy and torch, run "
    "'pip install -e isaacgym/python' in it, and point dga-engine at that interpreter with "
    f"{PYTHON_ENV}=/path/to/python3.8 (it needs an NVIDIA GPU; Preview 4 is deprecated and reported not to run "
    "on RTX 50-series or H100). Without a GPU use --backend mujoco"
)
WORKER = Path(__file__).with_name("isaacgym_worker.py")


def _in_process() -> bool:
    return importlib.util.find_spec("isaacgym") is not None


def require_isaacgym() -> str:
    """'inprocess' or the worker interpreter path; BackendUnavailable with install steps otherwise."""
    if _in_process():
        return "inprocess"
    python = os.environ.get(PYTHON_ENV)
    if python:
        if not Path(python).exists():
            raise BackendUnavailable(f"{PYTHON_ENV}={python} does not exist; {INSTALL}")
        return python
    raise BackendUnavailable(INSTALL)


def hand_mjcf(config: FilterConfig) -> str:
    """The filter scene's hand as MJCF for Isaac Gym's importer (no actuators; absolute mesh paths)."""
    spec = _hand_spec_for(hand_settings(config)).copy()
    for a in list(spec.actuators):
        spec.delete(a)
    return spec.to_xml()


def object_urdf(parts, scale: float, folder: Path) -> str:
    """Write the scaled convex parts as OBJ files and return a one-link URDF that uses them."""
    (folder / "parts").mkdir(parents=True, exist_ok=True)
    blocks = []
    for i, part in enumerate(parts):
        mesh = part.copy()
        mesh.apply_scale(scale)
        rel = f"parts/part_{i:03d}.obj"
        mesh.export(folder / rel)
        geo = f'<geometry><mesh filename="{rel}" scale="1 1 1"/></geometry>'
        blocks.append(f"<visual>{geo}</visual><collision>{geo}</collision>")
    return ('<?xml version="1.0"?>\n<robot name="object"><link name="object">'
            + "".join(blocks) + "</link></robot>\n")


class IsaacGymBackend:
    """Runs each object's grasps as one Isaac Gym simulation with one env per grasp."""

    def __init__(self, config: FilterConfig, device: str = "cuda:0") -> None:
        self.runner = require_isaacgym()
        self.config = config
        self.device = device
        self.name = "isaacgym-preview4"
        self.stats: dict[str, float] = {"scene": 0.0, "closing": 0.0, "push": 0.0, "steps": 0, "scenes": 0}

    def write_job(self, folder: Path, scene: Scene, parts, scale, translation, rotation, joints, targets=None,
                  volume=None) -> None:
        """Everything the worker needs, in ``folder`` (see isaacgym_worker's docstring)."""
        cfg = self.config
        n = len(translation)
        given = targets
        targets = np.zeros((n, 24))
        pos = np.zeros((n, 3))
        quat_xyzw = np.zeros((n, 4))
        with quiet_warnings():
            for i in range(n):
                if given is None:
                    d = scene.reset(translation[i], rotation[i], joints[i])
                    targets[i], _ = squeeze_targets(scene, d, joints[i], cfg)
                else:
                    targets[i] = given[i]
                p, q = object_pose(translation[i], rotation[i])
                pos[i], quat_xyzw[i] = p, np.r_[q[1:], q[0]]
        (folder / "hand.xml").write_text(hand_mjcf(cfg))
        (folder / "object.urdf").write_text(object_urdf(parts, scale, folder))
        dirs = np.stack([push_directions(r) for r in rotation])
        np.savez(
            folder / "grasps.npz",
            obj_pos=pos,
            obj_quat_xyzw=quat_xyzw,
            joints=np.asarray(joints, dtype=np.float64),
            targets=targets,
            dirs=dirs,
            dof_names=np.array([PREFIX + j for j in JOINT_NAMES]),
        )
        dt = cfg.close_timestep
        job = {
            "hand_file": "hand.xml",
            "object_file": "object.urdf",
            "device": self.device,
            "dt": dt,
            "close_steps": cfg.close_steps,
            "push_steps": int(round(cfg.push_time / dt)),
            "sequential": cfg.sequential,
            "force": cfg.push_force_per_volume * (scene.volume if volume is None else volume),
            "push_point": cfg.push_point,
            "displacement": cfg.displacement,
            "linear_damping": cfg.object_linear_damping,
            "angular_damping": cfg.object_angular_damping,
            "density": cfg.density,
            "friction": cfg.friction,
            "kp": cfg.kp,
            "kd": 2.0 * cfg.dampratio * float(np.sqrt(cfg.kp * 0.001)),
            "force_limit": cfg.force_limit,
            "position_iterations": 8,
            "velocity_iterations": 0,
        }
        (folder / "job.json").write_text(json.dumps(job, indent=2))

    def _run(self, folder: Path) -> None:
        if self.runner == "inprocess":
            sys.path.insert(0, str(WORKER.parent))
            try:
                import isaacgym_worker  # type: ignore[import-not-found]
            finally:
                sys.path.pop(0)
            isaacgym_worker.run_job(str(folder))
            return
        proc = subprocess.run([self.runner, str(WORKER), str(folder)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"Isaac Gym worker failed ({self.runner}): {proc.stderr.strip()[-2000:]}")

    def simulate(self, key, parts, scale, translation, rotation, joints, targets=None,
                 volume=None) -> list[SimResult | BaseException]:
        t0 = time.perf_counter()
        scene = build_scene(list(parts), scale, self.config)
        self.stats["scene"] += time.perf_counter() - t0
        self.stats["scenes"] += 1
        with tempfile.TemporaryDirectory(prefix="dga-isaacgym-") as tmp:
            folder = Path(tmp)
            self.write_job(folder, scene, parts, scale, translation, rotation, joints, targets, volume)
            t1 = time.perf_counter()
            self._run(folder)
            self.stats["push"] += time.perf_counter() - t1
            with np.load(folder / "result.npz") as r:
                disp, closed_q, closed_obj, error = r["displacement"], r["closed_qpos"], r["closed_obj"], r["error"]
        out: list[SimResult | BaseException] = []
        d = scene.data
        for i in range(len(translation)):
            if error[i]:
                out.append(SimulationError("Isaac Gym state became non-finite"))
                continue
            d.qpos[scene.hand_qpos] = closed_q[i]
            d.qpos[scene.obj_qpos : scene.obj_qpos + 3] = closed_obj[i, :3]
            x, y, z, w = closed_obj[i, 3:7]
            d.qpos[scene.obj_qpos + 3 : scene.obj_qpos + 7] = [w, x, y, z]
            mujoco.mj_kinematics(scene.model, d)
            mujoco.mj_collision(scene.model, d)
            out.append(SimResult(displacement=disp[i], passed=disp[i] < self.config.max_displacement,
                                 contact_count=touching_geoms(scene, d)))
        return out
