"""Pictures of grasps with MuJoCo's own offscreen renderer: one grasp, or a grid of grasps, to PNG.

A tile is drawn from a camera that looks at the object's centre from a fixed direction in the hand's
forearm frame (so every tile of a grid is seen the same way relative to the hand), far enough back to
hold the object and the fingers around it. With ``colour_by_verdict`` the hand is tinted by the grasp's
verdict (:data:`VERDICT_COLOURS`) and each tile is labelled; the object keeps one neutral colour.

Memory: one compiled scene per (object, scale) at a time (the object's mesh plus the hand's 23 visual
meshes, a few MB), one RGB framebuffer per tile, and the grid image (width x height x 3 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import mujoco
import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import REJECT_REASONS, pose_arrays
from dga_engine.viz import gl
from dga_engine.viz.scene import COLLISION_GROUP, VISUAL_GROUP, RenderScene, build_render_scene

# Verdict -> hand colour (RGBA, 0..1). Colour-blind-safe picks (Okabe-Ito) for the common outcomes.
VERDICT_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "accepted": (0.0, 0.62, 0.45, 1.0),  # bluish green
    "candidate": (0.55, 0.57, 0.60, 1.0),  # grey: not filtered yet
    "unstable": (0.90, 0.62, 0.0, 1.0),  # orange
    "penetration_hand_object": (0.84, 0.37, 0.0, 1.0),  # vermillion
    "penetration_object_hand": (0.80, 0.47, 0.65, 1.0),  # reddish purple
    "invalid_pose": (0.34, 0.71, 0.91, 1.0),  # sky blue
    "object_missing": (0.0, 0.0, 0.0, 1.0),
    "sim_error": (0.0, 0.45, 0.70, 1.0),  # blue
}
assert set(REJECT_REASONS) <= set(VERDICT_COLOURS)


@dataclass(frozen=True)
class View:
    """Camera and image size of one tile.

    azimuth/elevation: degrees, MuJoCo's free-camera angles in the forearm frame (z: along the fingers;
    the palm faces -y); the default looks across the palm from the thumb side, slightly from above.
    margin: how much room around the object's bounding sphere, metres (fingers wrap around the object).
    """

    width: int = 480
    height: int = 480
    azimuth: float = 150.0
    elevation: float = -25.0
    margin: float = 0.07
    collision: bool = False  # draw the filter's collision geometry (capsules, convex parts) instead of visual meshes

    def __post_init__(self) -> None:
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise ValueError(f"tile size {self.width}x{self.height} must be within 16..4096 pixels")
        if self.margin < 0:
            raise ValueError("margin must be >= 0")


class Renderer:
    """Renders posed :class:`RenderScene` s offscreen into RGB arrays (one GL context, made on first use)."""

    def __init__(self, view: View = View()) -> None:
        self.view = view
        self._ctx = None
        self._mjr: mujoco.MjrContext | None = None
        self._model: mujoco.MjModel | None = None
        self._scn: mujoco.MjvScene | None = None

    def _bind(self, scene: RenderScene) -> None:
        if self._ctx is None:
            self._ctx = gl.make_context(self.view.width, self.view.height)
        if self._model is not scene.model:
            self._ctx.make_current()
            if self._mjr is not None:
                self._mjr.free()
            self._mjr = mujoco.MjrContext(scene.model, mujoco.mjtFontScale.mjFONTSCALE_100)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
            self._scn = mujoco.MjvScene(scene.model, maxgeom=2000)
            self._model = scene.model

    def camera(self, scene: RenderScene, focus: np.ndarray) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = focus
        fovy = math.radians(float(scene.model.vis.global_.fovy))
        cam.distance = (scene.radius + self.view.margin) / math.sin(fovy / 2)
        cam.azimuth, cam.elevation = self.view.azimuth, self.view.elevation
        return cam

    def render(self, scene: RenderScene, translation, rotation, joints, rgba=None) -> np.ndarray:
        """(H, W, 3) uint8 image of one grasp (root pose in the object frame, 24 joints); ``rgba`` tints the hand."""
        view = self.view
        if view.width > scene.model.vis.global_.offwidth or view.height > scene.model.vis.global_.offheight:
            raise ValueError(f"tile {view.width}x{view.height} is larger than the scene's framebuffer; "
                             "build the scene with a larger size")
        self._bind(scene)
        focus = scene.pose(translation, rotation, joints)
        scene.tint_hand(rgba)
        opt = mujoco.MjvOption()
        opt.geomgroup[:] = 0
        opt.geomgroup[0] = 1  # the object's mesh
        opt.geomgroup[COLLISION_GROUP if view.collision else VISUAL_GROUP] = 1
        if view.collision:
            opt.geomgroup[0] = 0
        mujoco.mjv_updateScene(scene.model, scene.data, opt, None, self.camera(scene, focus),
                               mujoco.mjtCatBit.mjCAT_ALL, self._scn)
        rect = mujoco.MjrRect(0, 0, view.width, view.height)
        self._ctx.make_current()
        mujoco.mjr_render(rect, self._scn, self._mjr)
        rgb = np.empty((view.height, view.width, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(rgb, None, rect, self._mjr)
        return np.flipud(rgb).copy()

    def close(self) -> None:
        if self._mjr is not None:
            self._ctx.make_current()
            self._mjr.free()
            self._mjr = None
        if self._ctx is not None:
            self._ctx.free()
            self._ctx = None
        self._model = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- grasps from tables ---------------------------------------------------------------------------------------


def _label(row: dict) -> str:
    verdict = row.get("verdict") or ""
    return f"{verdict}  {str(row['grasp_id'])[:8]}"


def render_table(table: pa.Table, load_object: Callable[[str], tuple], view: View = View(), *,
                 colour_by_verdict: bool = False, progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """One tile per row of a grasp table (rows in order).

    ``load_object(object_id) -> (mesh, parts)`` gives the object's mesh (and convex parts, for
    ``view.collision``); a scene is compiled once per consecutive run of the same object and scale.
    ``colour_by_verdict`` needs a ``verdict`` column (see :mod:`dga_engine.viz.select`).
    """
    if table.num_rows == 0:
        return []
    arr = pose_arrays(table)
    oids = table.column("object_id").to_pylist()
    verdicts = table.column("verdict").to_pylist() if "verdict" in table.column_names else [None] * table.num_rows
    if colour_by_verdict and "verdict" not in table.column_names:
        raise ValueError("colour_by_verdict needs a 'verdict' column (load the grasps with dga_engine.viz.select)")
    tiles = []
    scene: RenderScene | None = None
    key = None
    with Renderer(view) as renderer:
        for i in range(table.num_rows):
            k = (oids[i], float(arr["object_scale"][i]))
            if k != key:
                mesh, parts = load_object(oids[i])
                scene = build_render_scene(mesh, k[1], parts if view.collision else None, (view.width, view.height))
                key = k
            rgba = VERDICT_COLOURS.get(verdicts[i] or "", VERDICT_COLOURS["candidate"]) if colour_by_verdict else None
            tiles.append(renderer.render(scene, arr["translation"][i], arr["rotation"][i], arr["joints"][i], rgba))
            if progress is not None:
                progress(1)
    return tiles


def grid(tiles: list[np.ndarray], labels: Iterable[str] | None = None, columns: int | None = None,
         border_colours: Iterable[tuple] | None = None, legend: Iterable[str] | None = None) -> np.ndarray:
    """Tiles (equal size) in a grid, optionally labelled, framed in a colour and with a colour legend below."""
    from PIL import Image, ImageDraw, ImageFont

    if not tiles:
        raise ValueError("nothing to draw: no grasps matched")
    h, w = tiles[0].shape[:2]
    n = len(tiles)
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    legend = list(legend or [])
    font = ImageFont.load_default(size=max(12, w // 28))
    line = max(16, w // 20)
    canvas = Image.new("RGB", (cols * w, rows * h + (line + 8 if legend else 0)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    labels = list(labels) if labels is not None else [None] * n
    borders = list(border_colours) if border_colours is not None else [None] * n
    for i, tile in enumerate(tiles):
        x, y = (i % cols) * w, (i // cols) * h
        canvas.paste(Image.fromarray(tile), (x, y))
        if borders[i] is not None:
            c = tuple(int(255 * v) for v in borders[i][:3])
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=c, width=max(3, w // 80))
        if labels[i]:
            draw.text((x + 8, y + 6), labels[i], fill=(20, 20, 20), font=font)
    if legend:
        x, y = 8, rows * h + 4
        for name in legend:
            c = tuple(int(255 * v) for v in VERDICT_COLOURS.get(name, VERDICT_COLOURS["candidate"])[:3])
            draw.rectangle([x, y + 2, x + line - 4, y + line - 2], fill=c)
            draw.text((x + line, y), name, fill=(20, 20, 20), font=font)
            x += line + int(draw.textlength(name, font=font)) + 16
    return np.asarray(canvas)


def render_grid(
    table: pa.Table,
    load_object: Callable[[str], tuple],
    view: View = View(),
    *,
    columns: int | None = None,
    colour_by_verdict: bool = False,
    labels: bool = True,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """A grid image of every row of ``table`` (see :func:`render_table`); a single row gives one tile."""
    tiles = render_table(table, load_object, view, colour_by_verdict=colour_by_verdict, progress=progress)
    verdicts = table.column("verdict").to_pylist() if "verdict" in table.column_names else [None] * table.num_rows
    rows = table.select(["grasp_id"]).to_pylist()
    for r, v in zip(rows, verdicts):
        r["verdict"] = v
    if table.num_rows == 1 and not colour_by_verdict:
        return tiles[0]
    names = [_label(r) for r in rows] if labels else None
    borders = (
        [VERDICT_COLOURS.get(v or "", VERDICT_COLOURS["candidate"]) for v in verdicts] if colour_by_verdict else None
    )
    legend = sorted({v for v in verdicts if v}, key=lambda v: (v != "accepted", v)) if colour_by_verdict else None
    return grid(tiles, names, columns, borders, legend)


def save_png(image: np.ndarray, path) -> None:
    """Write an (H, W, 3) uint8 image as PNG (local path or fsspec URL)."""
    import io

    from PIL import Image

    from dga_engine import fs

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    fs.write_bytes(str(path), buf.getvalue())


def object_loader(layout) -> Callable[[str], tuple]:
    """``load_object`` for :func:`render_table` reading the object store of ``layout`` (mesh and convex parts)."""
    from dga_engine.objects.store import ObjectStore

    store = ObjectStore(layout)

    def load(object_id: str):
        asset = store.load(object_id)
        return asset.mesh, asset.parts

    return load


__all__ = ["View", "Renderer", "VERDICT_COLOURS", "render_table", "render_grid", "grid", "save_png", "object_loader"]
