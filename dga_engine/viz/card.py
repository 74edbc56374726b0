"""The dataset card: ``datasets/<name>/README.md`` that the Hugging Face Hub and ``datasets.load_dataset`` read.

The YAML header's ``configs:`` name file globs, not files, so they stay valid when shards are rewritten,
compacted or split: accepted grasps (``data/*.parquet``, the default config), rejects with their reason
(``rejects/*.parquet``) and unfiltered candidates (``candidates/**/*.parquet``). Each config has one schema
(GRASP_SCHEMA, REJECT_SCHEMA, GRASP_SCHEMA). The body states the conventions, the filter protocol and its
version, the hand model and its hash, counts per source/round/reason, the licences by source, and figures
(PNG under ``figures/``).

Memory: counts come from DuckDB aggregates (``Dataset.query``); the histograms read at most
``sample_rows`` rows of four columns; candidates are counted one file at a time; the grasp grid renders one
object at a time.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dga_engine import fs
from dga_engine.conventions import POSE_CONVENTION
from dga_engine.dataset.schema import REJECT_REASONS, SCHEMA_VERSION
from dga_engine.dataset.store import Dataset
from dga_engine.objects.store import ObjectNotFound, ObjectStore

CARD_FILE = "README.md"
FIGURES_DIR = "figures"
CONFIG_GLOBS = {"grasps": "data/*.parquet", "rejects": "rejects/*.parquet", "candidates": "candidates/**/*.parquet"}
# Licences of the grasps themselves, by source (what each source's licence says; objects have their own).
SOURCE_LICENCES = {
    "dexgraspnet": "CC BY-NC 4.0",
    "unidexgrasp": "CC BY-NC 4.0",
    "multidex": "see MultiDex/GenDexGrasp (object meshes: ContactDB, YCB)",
    "realdex": "see RealDex (research use)",
    "dga": "see the DexGrasp-Anything release and the dataset each file derives from",
    "synthesis": "produced by dga-engine (no third-party grasp licence; the dataset owner chooses)",
    "generator": "produced by dga-engine (no third-party grasp licence; the dataset owner chooses)",
}


def _non_commercial(licence: str) -> bool:
    text = licence.upper().replace("-", " ")
    return "NC" in text.split() or "NON COMMERCIAL" in text or "NONCOMMERCIAL" in text or " BY NC" in f" {text}"


@functools.lru_cache(maxsize=1)
def hand_model_hash() -> tuple[str, str]:
    """(sha256 of the ShadowHand MJCF files and meshes in gymnasium-robotics, its version)."""
    from dga_engine.hand.mjcf import assets_dir

    base = assets_dir()
    h = hashlib.sha256()
    files = sorted((base / "hand").glob("*.xml")) + sorted((base / "stls" / "hand").glob("*"))
    for f in files:
        h.update(f.relative_to(base).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest(), importlib.metadata.version("gymnasium-robotics")


@dataclass
class CardReport:
    path: str
    figures: list[str] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    candidates: int = 0
    non_commercial: bool = False
    licence: str = "other"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _q(ds: Dataset, sql: str) -> pa.Table | None:
    try:
        return ds.query(sql)
    except Exception:  # a view with no files behind it (no rejects yet)
        return None


def _rows(t: pa.Table | None) -> list[dict[str, Any]]:
    return [] if t is None else t.to_pylist()


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _figures(ds: Dataset, stats: dict[str, Any], sample_rows: int) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    per_object = stats["per_object"][:40]
    if per_object:
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
        axes[0].bar(range(len(per_object)), [r["n"] for r in per_object], color="#009E73")
        axes[0].set_title(f"accepted grasps per object (top {len(per_object)})")
        axes[0].set_xlabel("object (by count)")
        cats = sorted(stats["per_category"].items(), key=lambda kv: -kv[1])[:25]
        axes[1].barh([c for c, _ in cats][::-1], [n for _, n in cats][::-1], color="#0072B2")
        axes[1].set_title("accepted grasps per category")
        out["grasps_per_object.png"] = _png(fig)
        plt.close(fig)
    acc = stats["acceptance"]
    if acc:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        labels = [f"{r['source']} r{r['round']}" for r in acc]
        ax.bar(labels, [100.0 * r["rate"] for r in acc], color="#E69F00")
        ax.set_ylabel("accepted (%)")
        ax.set_ylim(0, 100)
        ax.set_title("filter acceptance per source and round")
        ax.tick_params(axis="x", rotation=30)
        out["acceptance.png"] = _png(fig)
        plt.close(fig)
    cols = "pen_hand_object_mm AS ph, pen_object_hand_mm AS po, contact_count AS c, list_max(displacement) * 1000 AS d"
    acc_t = _q(ds, f"SELECT {cols} FROM grasps USING SAMPLE {int(sample_rows)} ROWS")
    rej_t = _q(ds, f"SELECT {cols} FROM rejects WHERE displacement IS NOT NULL USING SAMPLE {int(sample_rows)} ROWS")
    if acc_t is not None and acc_t.num_rows:
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
        for ax, (col, title) in zip(axes, [("ph", "hand into object (mm)"), ("po", "object into hand (mm)"),
                                           ("d", "largest push displacement (mm)"), ("c", "contacts after closing")]):
            for t, label, colour in ((acc_t, "accepted", "#009E73"), (rej_t, "rejected", "#D55E00")):
                if t is None or not t.num_rows:
                    continue
                v = np.asarray(t.column(col).to_numpy(zero_copy_only=False), dtype=np.float64)
                v = v[np.isfinite(v)]
                if len(v):
                    ax.hist(v, bins=30, alpha=0.6, label=label, color=colour)
            ax.set_title(title)
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend()
        out["metrics.png"] = _png(fig)
        plt.close(fig)
    return out


def _grid(ds: Dataset, stats: dict[str, Any], count: int, tile: int) -> bytes | None:
    from PIL import Image

    from dga_engine.viz.render import View, object_loader, render_grid
    from dga_engine.viz.select import load_grasps

    tables = []
    for r in stats["per_object"][:count]:
        t = load_grasps(ds, "accepted", object_id=r["object_id"], limit=1)
        if t.num_rows:
            tables.append(t)
    if not tables:
        return None
    table = pa.concat_tables(tables)
    image = render_grid(
        table, object_loader(ds.layout), View(width=tile, height=tile), colour_by_verdict=False, labels=False
    )
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def collect(ds: Dataset) -> dict[str, Any]:
    """Every count the card shows (DuckDB aggregates; candidates counted file by file)."""
    accepted = _rows(_q(ds, "SELECT source, round, count(*) AS n FROM grasps GROUP BY ALL ORDER BY ALL"))
    rejected = _rows(_q(ds, "SELECT source, round, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY ALL"))
    per_object = _rows(_q(ds, "SELECT object_id, count(*) AS n FROM grasps GROUP BY ALL ORDER BY n DESC, object_id"))
    protocols = _rows(
        _q(ds, "SELECT protocol_version, sim_backend, count(*) AS n FROM grasps GROUP BY ALL ORDER BY n DESC")
    )
    candidates: dict[str, int] = {}
    for source in ds.candidate_sources():
        candidates[source] = sum(ds.candidates(source, keys=[k]).num_rows for k in ds.candidate_keys(source))
    acc_by = {(r["source"], r["round"]): r["n"] for r in accepted}
    rej_by: dict[tuple, int] = {}
    for r in rejected:
        rej_by[(r["source"], r["round"])] = rej_by.get((r["source"], r["round"]), 0) + r["n"]
    acceptance = [{"source": s, "round": k, "accepted": acc_by.get((s, k), 0), "rejected": rej_by.get((s, k), 0),
                   "rate": acc_by.get((s, k), 0) / max(1, acc_by.get((s, k), 0) + rej_by.get((s, k), 0))}
                  for s, k in sorted(set(acc_by) | set(rej_by))]
    store = ObjectStore(ds.layout)
    per_category: dict[str, int] = {}
    object_licences: dict[str, int] = {}
    for r in per_object:
        try:
            meta = store.meta(r["object_id"])
        except (ObjectNotFound, ValueError):
            cat, lic = "(object not in the store)", "unknown"
        else:
            cat = (meta.categories[0] if meta.categories else meta.label) or "(unlabelled)"
            lic = f"{meta.licence} ({meta.source})"
        per_category[cat] = per_category.get(cat, 0) + r["n"]
        object_licences[lic] = object_licences.get(lic, 0) + 1
    return {"accepted": accepted, "rejected": rejected, "per_object": per_object, "protocols": protocols,
            "candidates": candidates, "acceptance": acceptance, "per_category": per_category,
            "object_licences": object_licences}


def write_card(ds: Dataset, *, render: bool = True, grid_count: int = 8, tile: int = 256,
               sample_rows: int = 100_000) -> CardReport:
    """Write ``README.md`` and ``figures/*.png`` into the dataset folder; returns what was written."""
    stats = collect(ds)
    figures = _figures(ds, stats, sample_rows)
    if render:
        grid = _grid(ds, stats, grid_count, tile)
        if grid is not None:
            figures["grasps_grid.png"] = grid
    for name, data in figures.items():
        fs.write_bytes(ds.p(f"{FIGURES_DIR}/{name}"), data)

    source_lic, nc = _licences(stats)
    licence = "cc-by-nc-4.0" if nc else "other"
    n_acc = sum(r["n"] for r in stats["accepted"])
    n_rej = sum(r["n"] for r in stats["rejected"])
    n_cand = sum(stats["candidates"].values())
    yaml = _front_matter(ds.name, licence, n_rej, n_cand)
    lines = (_intro(ds.name, stats, n_acc, n_rej, n_cand, nc) + _conventions() + _protocol(stats) + _counts(stats)
             + _licence_tables(stats, source_lic) + _figure_links(figures))
    text = "\n".join(yaml) + "\n\n" + "\n".join(lines)
    fs.write_bytes(ds.p(CARD_FILE), text.encode("utf-8"))
    return CardReport(path=ds.p(CARD_FILE), figures=[ds.p(f"{FIGURES_DIR}/{n}") for n in figures], accepted=n_acc,
                      rejected=n_rej, candidates=n_cand, non_commercial=nc, licence=licence)


def _licences(stats: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """Licence per grasp source, and whether any source or object licence is non-commercial."""
    sources = sorted(
        {r["source"] for r in stats["accepted"]} | {r["source"] for r in stats["rejected"]} | set(stats["candidates"])
    )
    source_lic = {s: SOURCE_LICENCES.get(s, "unknown: check the source") for s in sources}
    nc = any(_non_commercial(v) for v in source_lic.values()) or any(
        _non_commercial(k) for k in stats["object_licences"]
    )
    return source_lic, nc


def _front_matter(ds_name: str, licence: str, n_rej: int, n_cand: int) -> list[str]:
    """The Hub's YAML header: licence, tags and one config per table kind present."""
    yaml = [
        "---",
        f"license: {licence}",
        f"pretty_name: dga-engine dataset {ds_name}",
        "task_categories:",
        "- robotics",
        "tags:",
        "- dexterous-grasping",
        "- shadow-hand",
        "- mujoco",
        "- dga-engine",
        "configs:",
        "- config_name: grasps",
        "  default: true",
        "  data_files:",
        "  - split: train",
        f"    path: {CONFIG_GLOBS['grasps']}",
    ]
    if n_rej:
        yaml += ["- config_name: rejects", "  data_files:", "  - split: train", f"    path: {CONFIG_GLOBS['rejects']}"]
    if n_cand:
        yaml += [
            "- config_name: candidates",
            "  data_files:",
            "  - split: train",
            f"    path: {CONFIG_GLOBS['candidates']}",
        ]
    yaml.append("---")
    return yaml


def _intro(ds_name: str, stats: dict[str, Any], n_acc: int, n_rej: int, n_cand: int, nc: bool) -> list[str]:
    """Title, counts, the non-commercial notice and how to load the tables."""
    lines = [f"# {ds_name}: ShadowHand grasps built by dga-engine", ""]
    lines += [
        f"{n_acc} accepted grasps on {len(stats['per_object'])} objects, {n_rej} rejected grasps with their reason, "
        f"{n_cand} candidates not filtered yet (grasp schema v{SCHEMA_VERSION}, card written "
        f"{_dt.datetime.now(_dt.UTC).date().isoformat()}).",
        "",
    ]
    if nc:
        lines += [
            "**Non-commercial use only.** Some sources (or objects) of this dataset are licensed CC BY-NC; "
            "a dataset that contains them can only be shared and used under the non-commercial terms as a whole.",
            "",
        ]
    lines += ["## Load it", "", "```python", "from datasets import load_dataset",
              f"grasps = load_dataset('path/to/datasets/{ds_name}')  # accepted grasps (default config)"]
    if n_rej:
        lines.append(f"rejects = load_dataset('path/to/datasets/{ds_name}', 'rejects')  # with reason, detail")
    if n_cand:
        lines.append(f"candidates = load_dataset('path/to/datasets/{ds_name}', 'candidates')  # unfiltered")
    lines += ["```", "", "The files are plain Parquet: DuckDB, polars or pyarrow read `data/*.parquet` directly; "
              "`dga-engine shards verify` checks them against their manifests.", ""]
    return lines


def _conventions() -> list[str]:
    """The pose conventions and the hand model's files and hash."""
    hand_hash, gr_version = hand_model_hash()
    lines: list[str] = []
    lines += ["## Conventions", "", _md_table(["what", "convention"], [
        ["hand", POSE_CONVENTION["hand"]],
        ["root frame", POSE_CONVENTION["root_frame"]],
        ["translation", POSE_CONVENTION["translation_units"]],
        ["rotation", POSE_CONVENTION["rotation_encoding"]],
        ["joints", f"{POSE_CONVENTION['joint_units']}, order {', '.join(POSE_CONVENTION['joint_order'])}"],
        ["object frame", POSE_CONVENTION["object_frame"]],
        ["penetration", "millimetres"], ["displacement", "metres per push direction +x, -x, +y, -y, +z, -z"],
    ]), ""]
    lines += ["## Hand model", "", f"ShadowHand MJCF of gymnasium-robotics {gr_version} (`envs/assets/hand/robot.xml`, "
              f"`shared.xml`, `shared_asset.xml`, meshes `envs/assets/stls/hand/`), read from the installed package. "
              f"sha256 of those files: `{hand_hash}`.", ""]
    return lines


def _protocol(stats: dict[str, Any]) -> list[str]:
    """The filter protocol (this engine's defaults) and the protocol versions found in the grasps."""
    from dga_engine.simulate.config import FilterConfig

    config = FilterConfig()
    lines: list[str] = []
    lines += [
        "## Filter protocol",
        "",
        f"Physics filter in MuJoCo: fingers closed on the object, then six pushes along ±x, ±y, ±z of the object "
        f"frame; "
        f"a direction passes when the object moves less than {config.max_displacement * 100:g} cm; accepted = "
        f"{config.directions_required} of 6 directions (Suc.6) and penetration below {config.max_pen_hand_object_mm:g} "
        f"mm "
        f"(hand into object) and {config.max_pen_object_hand_mm:g} mm (object into hand). Default protocol version of "
        f"this engine: `{config.protocol_version}`.",
        "",
    ]
    if stats["protocols"]:
        lines += [_md_table(["protocol version", "backend", "grasps"],
                            [[r["protocol_version"], r["sim_backend"], r["n"]] for r in stats["protocols"]]), ""]
    return lines


def _counts(stats: dict[str, Any]) -> list[str]:
    """Acceptance per source and round, rejects per reason, candidates per source."""
    lines: list[str] = []
    lines += ["## Counts", "", "Accepted grasps and acceptance per source and round:", "",
              _md_table(["source", "round", "accepted", "rejected", "acceptance"],
                        [[r["source"], r["round"], r["accepted"], r["rejected"], f"{100 * r['rate']:.1f}%"]
                         for r in stats["acceptance"]]), ""]
    if stats["rejected"]:
        reasons: dict[str, int] = {}
        for r in stats["rejected"]:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + r["n"]
        lines += [
            "Rejects per reason:",
            "",
            _md_table(
                ["reason", "grasps"],
                [
                    [k, reasons[k]]
                    for k in sorted(reasons, key=lambda k: REJECT_REASONS.index(k) if k in REJECT_REASONS else 99)
                ],
            ),
            "",
        ]
    if stats["candidates"]:
        lines += [
            "Candidates waiting for the filter:",
            "",
            _md_table(["source", "grasps"], sorted(stats["candidates"].items())),
            "",
        ]
    return lines


def _licence_tables(stats: dict[str, Any], source_lic: dict[str, str]) -> list[str]:
    """Licence per grasp source and object count per object licence."""
    lines: list[str] = []
    lines += [
        "## Licences",
        "",
        "Grasps, by source:",
        "",
        _md_table(["source", "licence"], sorted(source_lic.items())),
        "",
        "Objects, by licence:",
        "",
        _md_table(["licence (object source)", "objects"], sorted(stats["object_licences"].items())),
        "",
    ]
    return lines


def _figure_links(figures: dict[str, bytes]) -> list[str]:
    """One captioned image link per figure written."""
    lines: list[str] = []
    if figures:
        lines += ["## Figures", ""]
        captions = {"grasps_grid.png": "Accepted grasps, one per object (MuJoCo offscreen render)",
                    "grasps_per_object.png": "Grasps per object and per category",
                    "acceptance.png": "Acceptance per source and round",
                    "metrics.png": "Penetration, displacement and contacts (accepted vs rejected)"}
        for name in ("grasps_grid.png", "grasps_per_object.png", "acceptance.png", "metrics.png"):
            if name in figures:
                lines += [f"![{captions[name]}]({FIGURES_DIR}/{name})", ""]
    return lines
