"""``dga-engine view``: a local web app (viser) to browse a dataset's grasps in 3D.

Pick dataset -> accepted / rejects / candidates -> source and round (and reject reason) -> object -> grasp;
step through the grasps with the slider or the buttons; the panel shows the verdict, the six push
displacements, both penetrations, the contact count and the refine provenance. "Compare raw" places the
raw candidate a refined grasp came from (``refined_from``, looked up among the dataset's candidates) next
to it, on its own copy of the object. The hand is the ShadowHand's visual meshes posed by the engine's own
forward kinematics (:class:`~dga_engine.hand.model.HandModel`), tinted by verdict; the scene is the object frame.

Serves on 127.0.0.1 only. Memory: the grasps of one object (accepted), or the rejects / the candidates of the
selected source (held while that kind is selected), the object's mesh, the hand's 23 meshes (~40k faces).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dga_engine import fs
from dga_engine.dataset.schema import DIRECTIONS, REJECT_REASONS, pose_arrays
from dga_engine.dataset.store import Dataset
from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.objects.store import ObjectNotFound, ObjectStore
from dga_engine.viz.render import VERDICT_COLOURS
from dga_engine.viz.scene import OBJECT_RGBA, hand_visual_meshes
from dga_engine.viz.select import KINDS, load_grasps, raw_of

log = logging.getLogger(__name__)
ALL = "(all)"
RAW_COLOUR = (150, 150, 160)


def _rgb(rgba) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in rgba[:3])  # type: ignore[return-value]


def _fmt(v: Any, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    return "–" if v is None else f"{v * scale:.{digits}f}{unit}"


def grasp_markdown(row: dict[str, Any]) -> str:
    """The panel text for one grasp row (a dict of its columns, with ``verdict``)."""
    lines = [f"**{row.get('verdict', '')}**  `{row['grasp_id']}`", "",
             f"source `{row['source']}` round {row['round']} scale {row['object_scale']:.3f}"]
    disp = row.get("displacement")
    if disp is not None:
        lines += ["", "| push | " + " | ".join(DIRECTIONS) + " |", "|---|" + "---|" * 6,
                  "| mm | " + " | ".join(f"{1000 * d:.1f}" for d in disp) + " |"]
    lines += ["", f"penetration hand→object {_fmt(row.get('pen_hand_object_mm'), ' mm')}, "
                  f"object→hand {_fmt(row.get('pen_object_hand_mm'), ' mm')}",
              f"contacts {row.get('contact_count') if row.get('contact_count') is not None else '–'}, "
              f"Suc.1 {row.get('suc1')}, Suc.6 {row.get('suc6')}"]
    if row.get("reason"):
        lines += [f"reject reason `{row['reason']}`: {row.get('detail') or ''}"]
    if row.get("refine_status"):
        lines += ["", f"refine `{row.get('refine_preset')}` {row['refine_status']}: joints "
                      f"{_fmt(row.get('refine_joint_change'), ' rad', digits=3)}, root moved "
                      f"{_fmt(row.get('refine_translation_change'), ' mm', 1000.0, 1)}, turned "
                      f"{_fmt(row.get('refine_rotation_change'), ' rad', digits=3)}",
                  f"from `{row.get('refined_from')}`"]
    return "\n".join(lines)


class Viewer:
    """The app's state and scene; :meth:`serve` starts it. One viewer serves every browser tab the same scene."""

    def __init__(self, layout: Layout, dataset: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
        import viser

        self.layout = layout
        self.store = ObjectStore(layout)
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self._lock = threading.RLock()
        self._hand_meshes = hand_visual_meshes()
        self._hand_nodes: dict[str, tuple[list[Any], tuple]] = {}
        self._object_nodes: dict[str, tuple[Any, tuple]] = {}
        self._kind_cache: dict[tuple, pa.Table] = {}
        self.table: pa.Table | None = None  # grasps of the selected object
        names = self.dataset_names()
        if not names:
            raise FileNotFoundError(
                f"no dataset under {layout.dataset(DEFAULT_DATASET).rsplit('/', 1)[0]}: build one first"
            )
        start = dataset if dataset in names else names[0]
        gui = self.server.gui
        self.g_dataset = gui.add_dropdown("dataset", names, initial_value=start)
        self.g_kind = gui.add_dropdown("grasps", list(KINDS), initial_value="accepted")
        self.g_source = gui.add_dropdown("source", [ALL], initial_value=ALL)
        self.g_round = gui.add_dropdown("round", [ALL], initial_value=ALL)
        self.g_reason = gui.add_dropdown("reject reason", [ALL, *REJECT_REASONS], initial_value=ALL, visible=False)
        self.g_object = gui.add_dropdown("object", ["-"], initial_value="-")
        self.g_index = gui.add_slider("grasp", 0, 1, 1, 0)
        self.g_prev = gui.add_button("previous")
        self.g_next = gui.add_button("next")
        self.g_raw = gui.add_checkbox("compare raw (refined_from)", False)
        self.g_info = gui.add_markdown("")
        self.g_dataset.on_update(lambda _: self._on_dataset())
        for h in (self.g_kind, self.g_source, self.g_round, self.g_reason):
            h.on_update(lambda _: self._on_filter())
        self.g_object.on_update(lambda _: self._on_object())
        self.g_index.on_update(lambda _: self.show(int(self.g_index.value)))
        self.g_raw.on_update(lambda _: self.show(int(self.g_index.value)))
        self.g_prev.on_click(lambda _: self.step(-1))
        self.g_next.on_click(lambda _: self.step(+1))
        self.server.initial_camera.position = (0.25, -0.25, 0.18)
        self.server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self.server.initial_camera.up = (0.0, 0.0, 1.0)
        self._on_dataset()

    # ---- data --------------------------------------------------------------------------------------------

    def dataset_names(self) -> list[str]:
        base = self.layout.dataset(DEFAULT_DATASET).rsplit("/", 1)[0]
        return sorted(n for n in fs.listdir(base) if not n.startswith(".") and Dataset(self.layout, n).exists())

    @property
    def ds(self) -> Dataset:
        return Dataset(self.layout, self.g_dataset.value)

    def _filters(self) -> dict[str, Any]:
        src = None if self.g_source.value == ALL else self.g_source.value
        rnd = None if self.g_round.value == ALL else int(self.g_round.value)
        reason = None if self.g_reason.value == ALL or self.g_kind.value != "rejects" else self.g_reason.value
        return {"source": src, "round_": rnd, "reason": reason}

    def _kind_table(self) -> pa.Table:
        """Rejects or candidates of the dataset (cached while selected); accepted grasps: object_id/source/round
        only."""
        kind = self.g_kind.value
        key = (self.g_dataset.value, kind)
        if key not in self._kind_cache:
            self._kind_cache = {}
            ds = self.ds
            if kind == "accepted":
                t = ds.read(columns=["object_id", "source", "round"])
            else:
                t = load_grasps(ds, kind)
            self._kind_cache[key] = t
        return self._kind_cache[key]

    def _on_dataset(self) -> None:
        with self._lock:
            self._kind_cache = {}
            self._on_filter()

    def _on_filter(self) -> None:
        with self._lock:
            self.g_reason.visible = self.g_kind.value == "rejects"
            t = self._kind_table()
            sources = sorted(set(t.column("source").to_pylist()))
            rounds = sorted(set(t.column("round").to_pylist()))
            self._set_options(self.g_source, [ALL, *sources])
            self._set_options(self.g_round, [ALL, *map(str, rounds)])
            f = self._filters()
            sel = t
            if f["source"] is not None:
                sel = sel.filter(pc.equal(sel.column("source"), f["source"]))
            if f["round_"] is not None:
                sel = sel.filter(pc.equal(sel.column("round"), f["round_"]))
            if f["reason"] is not None:
                sel = sel.filter(pc.equal(sel.column("verdict"), f["reason"]))
            objects = sorted(set(sel.column("object_id").to_pylist())) or ["-"]
            self._set_options(self.g_object, objects)
            self._on_object()

    @staticmethod
    def _set_options(handle, options: list[str]) -> None:
        if list(handle.options) != options:
            current = handle.value
            handle.options = options
            handle.value = current if current in options else options[0]

    def _on_object(self) -> None:
        with self._lock:
            oid = self.g_object.value
            if oid == "-":
                self.table = None
                self.g_info.content = "no grasps match"
                self._clear_scene()
                return
            f = self._filters()
            if self.g_kind.value == "accepted":
                t = load_grasps(self.ds, "accepted", object_id=oid, source=f["source"], round_=f["round_"])
            else:
                t = self._kind_table()
                t = t.filter(pc.equal(t.column("object_id"), oid))
                if f["source"] is not None:
                    t = t.filter(pc.equal(t.column("source"), f["source"]))
                if f["round_"] is not None:
                    t = t.filter(pc.equal(t.column("round"), f["round_"]))
                if f["reason"] is not None:
                    t = t.filter(pc.equal(t.column("verdict"), f["reason"]))
            self.table = t
            n = max(1, t.num_rows)
            self.g_index.max = max(1, n - 1)
            self.g_index.value = 0
            self.show(0)

    # ---- scene -------------------------------------------------------------------------------------------

    def _clear_scene(self) -> None:
        for name in list(self._hand_nodes):
            for h in self._hand_nodes.pop(name)[0]:
                h.remove()
        for name in list(self._object_nodes):
            self._object_nodes.pop(name)[0].remove()

    def _object(self, name: str, oid: str, scale: float, offset: np.ndarray) -> None:
        key = (oid, round(scale, 6), tuple(np.round(offset, 6)))
        if name in self._object_nodes and self._object_nodes[name][1] == key:
            return
        try:
            mesh = self.store.load(oid, with_parts=False).mesh
        except (ObjectNotFound, ValueError) as exc:
            self.g_info.content = f"object {oid} cannot be loaded: {exc}"
            return
        handle = self.server.scene.add_mesh_simple(name, np.asarray(mesh.vertices, dtype=np.float32) * scale,
                                                   np.asarray(mesh.faces, dtype=np.int32), color=_rgb(OBJECT_RGBA),
                                                   position=tuple(offset))
        self._object_nodes[name] = (handle, key)

    def _hand(self, name: str, translation, rotation_wxyz, joints, colour: tuple, offset: np.ndarray) -> None:
        import torch

        from dga_engine.hand.model import default_hand
        from dga_engine.hand.rotations import quat_to_matrix

        hand = default_hand()
        with torch.no_grad():
            r = quat_to_matrix(torch.as_tensor(np.asarray(rotation_wxyz, dtype=np.float32))[None])
            fk = hand.forward_kinematics(torch.as_tensor(np.asarray(translation, dtype=np.float32))[None], r,
                                         torch.as_tensor(np.asarray(joints, dtype=np.float32))[None])
        rot, pos = fk.rot[0].double().numpy(), fk.pos[0].double().numpy() + offset
        import mujoco

        nodes, have = self._hand_nodes.get(name, ([], None))
        if have != colour:
            for h in nodes:
                h.remove()
            nodes = [self.server.scene.add_mesh_simple(f"{name}/g{i:02d}", v.astype(np.float32), f, color=colour)
                     for i, (_, v, f) in enumerate(self._hand_meshes)]
            self._hand_nodes[name] = (nodes, colour)
        for h, (link, _, _) in zip(nodes, self._hand_meshes):
            q = np.zeros(4)
            mujoco.mju_mat2Quat(q, np.ascontiguousarray(rot[link]).reshape(-1))
            h.wxyz, h.position = q, pos[link]

    def step(self, delta: int) -> None:
        if self.table is None or self.table.num_rows == 0:
            return
        self.g_index.value = int((int(self.g_index.value) + delta) % self.table.num_rows)

    def show(self, index: int) -> None:
        """Draw grasp ``index`` of the selected object (and its raw candidate when comparing)."""
        with self._lock:
            t = self.table
            if t is None or t.num_rows == 0:
                self.g_info.content = "no grasps match"
                self._clear_scene()
                return
            index = min(max(0, index), t.num_rows - 1)
            row_t = t.slice(index, 1)
            row = row_t.to_pylist()[0]
            arr = pose_arrays(row_t)
            colour = _rgb(VERDICT_COLOURS.get(row.get("verdict") or "", VERDICT_COLOURS["candidate"]))
            self._object("/object", row["object_id"], float(arr["object_scale"][0]), np.zeros(3))
            self._hand("/hand", arr["translation"][0], arr["rotation"][0], arr["joints"][0], colour, np.zeros(3))
            text = f"{index + 1} / {t.num_rows} of `{row['object_id']}`\n\n" + grasp_markdown(row)
            raw_shown = False
            if self.g_raw.value and row.get("refined_from"):
                raw = raw_of(self.ds, row_t)
                if raw.num_rows:
                    ra = pose_arrays(raw.slice(0, 1))
                    offset = np.array([0.0, 0.0, 0.0])
                    offset[0] = 0.35  # side by side along x: far enough apart for a hand's width
                    self._object(
                        "/raw/object", raw.column("object_id")[0].as_py(), float(ra["object_scale"][0]), offset
                    )
                    self._hand(
                        "/raw/hand", ra["translation"][0], ra["rotation"][0], ra["joints"][0], RAW_COLOUR, offset
                    )
                    text += f"\n\nraw candidate (grey, +35 cm along x): `{raw.column('grasp_id')[0].as_py()}`"
                    raw_shown = True
                else:
                    text += f"\n\nraw candidate `{row['refined_from']}` is not among the candidates"
            if not raw_shown:
                for name in [n for n in self._hand_nodes if n.startswith("/raw")]:
                    for h in self._hand_nodes.pop(name)[0]:
                        h.remove()
                for name in [n for n in self._object_nodes if n.startswith("/raw")]:
                    self._object_nodes.pop(name)[0].remove()
            self.g_info.content = text

    def stop(self) -> None:
        self.server.stop()


def serve(layout: Layout, dataset: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> Viewer:
    """Start the viewer (returns at once; the server runs in its own threads)."""
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("DGA_VIEW_ANY_HOST"):
        raise ValueError("the viewer serves on 127.0.0.1 only (set DGA_VIEW_ANY_HOST=1 to bind another address)")
    return Viewer(layout, dataset, host, port)
