"""Objaverse (LVIS subset) as an object source, through the ``objaverse`` package (0.1.x).

Selection. For each requested LVIS category, candidates are ordered by a hash of their uid (a fixed,
uniform shuffle), a pool of ``pool_factor * per_category`` is annotated, and ``per_category`` objects are
picked greedily for tag coverage (each pick adds the most tags not yet covered by the whole selection,
ties by hash order). Every category gets the same count (fewer only when it has fewer objects), which
mirrors the paper's "even distribution across 18 categories, broad tag coverage".

Provenance. Each object records its uid (source_id), name, tags, all its LVIS categories and its licence.
Uids are external names: only uids that pass :func:`dga_engine.layout.safe_name` are used; others are
refused (reported in the quarantine list) before anything is downloaded.

Cache. The package keeps its files in ``~/.objaverse/hf-objaverse-v1`` (``object-paths.json.gz``,
``metadata/000-xxx.json.gz``, ``lvis-annotations.json.gz``, ``glbs/000-xxx/<uid>.glb``); ``cache_dir``
points it at another tree (a mirror), and ``download=False`` uses only what the tree already holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dga_engine.layout import Layout, UnsafeNameError, safe_name
from dga_engine.objects.ingest import IngestConfig, IngestItem, IngestReport, ingest_items, write_quarantine

log = logging.getLogger(__name__)

#: The paper selects 18 Objaverse categories but does not list them. Ours: 18 LVIS categories of
#: graspable, hand-sized everyday objects with many Objaverse models each (containers, fruit, tools,
#: utensils, handheld electronics), covering power grasps (bottle, can, mug, flashlight), precision grasps
#: (knife, spoon, toothbrush, screwdriver) and shapes with handles (mug, teapot, hammer, scissors).
PAPER_CATEGORIES: tuple[str, ...] = (
    "mug", "bottle", "cup", "bowl", "can", "teapot",
    "apple", "banana",
    "hammer", "screwdriver", "scissors", "knife", "spoon", "toothbrush", "flashlight",
    "remote_control", "cellular_telephone", "mouse_(computer_equipment)",
)


class ObjaverseError(RuntimeError):
    """The Objaverse cache/mirror cannot answer (missing files offline, unknown categories)."""


@dataclass
class ObjaverseChoice:
    uid: str
    category: str  # the LVIS category it was chosen for
    name: str = ""
    tags: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # every LVIS category listing this uid
    licence: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict)


def _objaverse():
    try:
        import objaverse
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ObjaverseError("the objaverse package is not installed: pip install objaverse") from exc
    return objaverse


@contextlib.contextmanager
def objaverse_cache(cache_dir: str | os.PathLike | None) -> Iterator[Any]:
    """Point the objaverse package at ``cache_dir`` (its ``hf-objaverse-v1`` tree) for the block."""
    ov = _objaverse()
    if cache_dir is None:
        yield ov
        return
    old = ov._VERSIONED_PATH
    ov._VERSIONED_PATH = os.path.abspath(os.fspath(cache_dir))
    try:
        yield ov
    finally:
        ov._VERSIONED_PATH = old


def _need(ov, rel: str, download: bool) -> None:
    path = os.path.join(ov._VERSIONED_PATH, rel)
    if not download and not os.path.exists(path):
        raise ObjaverseError(
            f"{path} is missing and downloads are off: mirror the Objaverse cache there "
            "(hf-objaverse-v1 layout) or allow downloads"
        )


def label_for(category: str) -> str:
    """'mouse_(computer_equipment)' -> 'mouse (computer equipment)'."""
    return category.replace("_", " ").strip()


def _order(uid: str) -> str:
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()


def _tag_names(annotation: dict[str, Any]) -> list[str]:
    out = []
    for t in annotation.get("tags") or []:
        name = t.get("name") if isinstance(t, dict) else t
        if isinstance(name, str) and name:
            out.append(name)
    return out


def select_objaverse(
    categories: Sequence[str],
    per_category: int,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    pool_factor: int = 4,
) -> tuple[list[ObjaverseChoice], list[dict[str, str]], list[str]]:
    """Choose ``per_category`` objects per LVIS category; returns ``(choices, refused, notes)``.

    ``refused`` lists unsafe uids as ``{"path": "objaverse:<uid>", "reason": ...}``.
    """
    if per_category < 1:
        raise ValueError("per_category must be >= 1")
    with objaverse_cache(cache_dir) as ov:
        _need(ov, "lvis-annotations.json.gz", download)
        lvis: dict[str, list[str]] = ov.load_lvis_annotations()
        unknown = [c for c in categories if c not in lvis]
        if unknown:
            import difflib

            hints = {c: difflib.get_close_matches(c, list(lvis), n=3) for c in unknown}
            raise ObjaverseError(
                "unknown LVIS categories: "
                + "; ".join(f"{c!r} (did you mean {', '.join(h) or 'nothing close'}?)" for c, h in hints.items())
            )
        refused: list[dict[str, str]] = []
        refused_seen: set[str] = set()
        uid_cats: dict[str, list[str]] = {}
        for cat, uids in lvis.items():
            for u in uids:
                uid_cats.setdefault(u, []).append(cat)
        _need(ov, "object-paths.json.gz", download)
        object_paths = ov._load_object_paths()
        chosen: list[ObjaverseChoice] = []
        taken: set[str] = set()
        covered: set[str] = set()
        notes: list[str] = []
        for cat in categories:
            candidates = []
            for u in sorted(set(lvis[cat]), key=_order):
                try:
                    safe_name(u)
                except UnsafeNameError:
                    if u not in refused_seen:
                        refused_seen.add(u)
                        refused.append(
                            {
                                "path": f"objaverse:{u}",
                                "reason": f"unsafe uid {u!r} refused: Objaverse uids must be plain names (letters, "
                                "digits, '._+-'); this entry of the annotations is corrupt or hostile",
                            }
                        )
                    continue
                if u in taken or u not in object_paths:
                    continue
                if not download and not os.path.exists(os.path.join(ov._VERSIONED_PATH, object_paths[u])):
                    continue
                candidates.append(u)
            pool = candidates[: max(per_category * pool_factor, per_category)]
            annotations = _annotations(ov, pool, object_paths, download)
            picks: list[str] = []
            remaining = list(pool)
            while remaining and len(picks) < per_category:
                best = max(
                    remaining,
                    key=lambda u: (len(set(_tag_names(annotations.get(u, {}))) - covered), -remaining.index(u)),
                )
                remaining.remove(best)
                picks.append(best)
                covered.update(_tag_names(annotations.get(best, {})))
            if len(picks) < per_category:
                notes.append(f"category {cat!r}: only {len(picks)} usable objects (asked for {per_category})")
            for u in picks:
                a = annotations.get(u, {})
                taken.add(u)
                chosen.append(ObjaverseChoice(
                    uid=u,
                    category=cat,
                    name=str(a.get("name") or ""),
                    tags=_tag_names(a),
                    categories=sorted(uid_cats.get(u, [cat])),
                    licence=str(a.get("license") or "unknown"),
                    extra={k: a[k] for k in ("uri", "viewerUrl") if isinstance(a.get(k), str)},
                ))
    return chosen, refused, notes


def _annotations(ov, uids: list[str], object_paths: dict[str, str], download: bool) -> dict[str, Any]:
    if not uids:
        return {}
    if not download:  # only metadata files already in the tree; never trigger a fetch
        have = [
            u
            for u in uids
            if os.path.exists(os.path.join(ov._VERSIONED_PATH, "metadata", object_paths[u].split("/")[1] + ".json.gz"))
        ]
        if not have:
            return {}
        uids = have
    with contextlib.redirect_stdout(sys.stderr):
        return ov.load_annotations(uids)


def _fetch(ov, uids: list[str], download_processes: int) -> dict[str, str]:
    """Local paths of ``uids`` via ``load_objects``; a failed batch is retried per uid so one bad download
    costs only its own object (it is then quarantined as missing)."""
    if not uids:
        return {}
    # the package prints download progress on stdout: keep stdout clean for --json
    with contextlib.redirect_stdout(sys.stderr):
        try:
            return dict(ov.load_objects(uids, download_processes=max(1, download_processes)))
        except Exception as exc:
            log.warning("objaverse.load_objects failed for the batch (%s); retrying one uid at a time", exc)
        out: dict[str, str] = {}
        for uid in uids:
            try:
                out.update(ov.load_objects([uid], download_processes=1))
            except Exception as exc:
                log.warning("objaverse: %s could not be fetched: %s", uid, exc)
        return out


def ingest_objaverse(
    layout: Layout,
    categories: Sequence[str] | None = None,
    per_category: int = 10,
    processes: int = 1,
    config: IngestConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    download_processes: int = 1,
    progress: Callable[[int], None] | None = None,
    on_selected: Callable[[int], None] | None = None,
) -> IngestReport:
    """Select (see :func:`select_objaverse`), fetch through ``objaverse.load_objects`` and ingest.

    ``categories`` defaults to :data:`PAPER_CATEGORIES`. ``on_selected(n)`` is called with the number of
    objects to ingest before ingestion starts (for progress bars).
    """
    cats = list(categories) if categories else list(PAPER_CATEGORIES)
    choices, refused, notes = select_objaverse(cats, per_category, cache_dir, download)
    with objaverse_cache(cache_dir) as ov:
        paths = _fetch(ov, [c.uid for c in choices], download_processes)
    items, missing = [], []
    for c in choices:
        item = IngestItem(
            source="objaverse",
            source_id=c.uid,
            label=label_for(c.category),
            path=paths.get(c.uid),
            licence=c.licence,
            categories=c.categories,
            tags=c.tags,
            extra={"name": c.name, "lvis_category": c.category, **c.extra},
        )
        (items if item.path else missing).append(item)
    if on_selected is not None:
        on_selected(len(items))
    report = ingest_items(layout, items, processes, config, progress)
    for item in missing:
        reason = (f"objaverse returned no file for uid {item.source_id}: the download failed or the uid is not in "
                  "object-paths.json.gz; retry with downloads on, or check the mirror")
        report.quarantined.append(write_quarantine(layout, item, reason, "load", "ObjaverseError"))
        report.quarantine.append({"path": item.display(), "reason": reason})
    for r in refused:
        item = IngestItem(source="objaverse", source_id=r["path"], label="refused uid")
        report.quarantined.append(write_quarantine(layout, item, r["reason"], "select", "UnsafeNameError"))
        report.quarantine.append(r)
    report.notes += notes
    return report
