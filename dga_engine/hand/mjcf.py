"""The ShadowHand MJCF, read from the installed ``gymnasium-robotics`` package (never copied).

The package splits the hand into ``robot.xml`` (bodies), ``shared.xml`` (defaults, contact pairs,
tendons, actuators, sensors) and ``shared_asset.xml`` (meshes, materials). :func:`hand_spec` stitches
them into one model with :class:`mujoco.MjSpec` and moves the hand so that its root body, the
forearm, sits at the world origin with identity orientation. The root frame of every grasp record is
that forearm body frame (see :mod:`dga_engine.hand.model`).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import mujoco

from dga_engine.conventions import JOINT_NAMES  # noqa: F401  (re-exported)

PREFIX = "robot0:"
ROOT_BODY = PREFIX + "forearm"

FINGERTIP_SITES: tuple[str, ...] = ("S_fftip", "S_mftip", "S_rftip", "S_lftip", "S_thtip")


class HandAssetsMissing(RuntimeError):
    pass


def assets_dir() -> Path:
    """``gymnasium_robotics/envs/assets`` of the installed package."""
    # Located without importing the package: importing it registers gymnasium environments and warns.
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or spec.origin is None:
        raise HandAssetsMissing("gymnasium-robotics is not installed: pip install 'gymnasium-robotics>=1.3'")
    path = Path(spec.origin).parent / "envs" / "assets"
    if not (path / "hand" / "robot.xml").exists():
        raise HandAssetsMissing(f"ShadowHand MJCF not found under {path}; reinstall gymnasium-robotics")
    return path


def _inner(xml: str) -> str:
    """The children of a file's top-level <mujoco> element (drops comments and the wrapper)."""
    xml = re.sub(r"<!--.*?-->", "", xml, flags=re.S)
    xml = re.sub(r"<\?xml[^>]*\?>", "", xml)
    m = re.search(r"<mujoco[^>]*>(.*)</mujoco>", xml, flags=re.S)
    if not m:
        raise HandAssetsMissing("unexpected ShadowHand MJCF layout in gymnasium-robotics")
    return m.group(1)


@functools.lru_cache(maxsize=1)
def hand_xml() -> str:
    """One self-contained MJCF string for the hand (absolute mesh paths, no includes)."""
    base = assets_dir()
    hand = base / "hand"
    shared = _inner((hand / "shared.xml").read_text())
    shared_asset = _inner((hand / "shared_asset.xml").read_text())
    robot = _inner((hand / "robot.xml").read_text())
    # Textures and the skybox are for rendering only; drop them so the model has no image files.
    shared_asset = re.sub(r"<texture[^>]*>(</texture>)?", "", shared_asset)
    shared_asset = re.sub(r'\s+texture="[^"]*"', "", shared_asset)
    meshdir = (base / "stls" / "hand").as_posix()
    return (
        "<mujoco model='shadowhand'>"
        f"<compiler angle='radian' coordinate='local' meshdir='{meshdir}'/>"
        f"{shared}<asset>{shared_asset}</asset><worldbody>{robot}</worldbody></mujoco>"
    )


def hand_spec() -> mujoco.MjSpec:
    """A fresh MjSpec of the hand with the forearm frame at the world origin, identity orientation.

    The spec keeps the package's tendons, actuators and sensors; a simulation scene may delete them and
    add one position servo per joint (grasp poses set all 24 joints independently).
    """
    spec = mujoco.MjSpec.from_string(hand_xml())
    mount = spec.body(PREFIX + "hand mount")
    mount.pos = [0.0, 0.0, 0.0]
    mount.alt.euler = [0.0, 0.0, 0.0]
    mount.quat = [1.0, 0.0, 0.0, 0.0]
    forearm = spec.body(ROOT_BODY)
    forearm.pos = [0.0, 0.0, 0.0]
    forearm.quat = [1.0, 0.0, 0.0, 0.0]
    forearm.alt.euler = [0.0, 0.0, 0.0]
    return spec


@functools.lru_cache(maxsize=1)
def hand_model() -> mujoco.MjModel:
    """The compiled hand (cached; treat as read-only)."""
    return hand_spec().compile()
