"""Completion records: a unit of stage work is done when its record exists, and only then.

A stage writes its outputs first (atomically), then its record with the stats it counted. On resume a
stage skips every unit whose record exists and redoes the rest, so an interrupted run neither loses
nor duplicates work as long as each unit's outputs are keyed by the unit (rewriting them is harmless).

    <root>/runs/stages/<stage>/<unit>.json   {"stage", "unit", "finished_at", "stats", ...}
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from dga_engine import fs
from dga_engine.layout import DEFAULT_DATASET, Layout, safe_name

STAGES_DIR = "stages"
DATASET_MARK = "+"  # "<stage>+<dataset>": the records of a stage writing into a dataset other than the default


def dataset_stage(stage: str, dataset: str) -> str:
    """The record stage of ``stage`` when it writes into ``dataset``: the same unit filtered (or generated,
    refined, ...) into two datasets has two records, so one dataset's work never marks the other's done. The
    default dataset keeps the plain stage name (the records roots have always had)."""
    return stage if dataset == DEFAULT_DATASET else f"{stage}{DATASET_MARK}{safe_name(dataset)}"


def stage_dataset(record_stage: str) -> str:
    """The dataset a record stage (:func:`dataset_stage`) belongs to."""
    return record_stage.split(DATASET_MARK, 1)[1] if DATASET_MARK in record_stage else DEFAULT_DATASET


def _record_path(layout: Layout, stage: str, unit: str) -> str:
    return layout.join("runs", STAGES_DIR, safe_name(stage), safe_name(unit) + ".json")


def is_done(layout: Layout, stage: str, unit: str) -> bool:
    return fs.exists(_record_path(layout, stage, unit))


def is_current(layout: Layout, stage: str, unit: str, **expected: Any) -> bool:
    """Whether ``unit`` is done *and* its record has these field values (e.g. the input fingerprint and
    the settings' version it was made with): a unit done from other input or settings is not done."""
    try:
        record = read_record(layout, stage, unit)
    except (OSError, ValueError):  # a damaged record: redo the unit
        return False
    return isinstance(record, dict) and all(record.get(k) == v for k, v in expected.items())


def read_record(layout: Layout, stage: str, unit: str) -> dict[str, Any] | None:
    path = _record_path(layout, stage, unit)
    return fs.read_json(path) if fs.exists(path) else None


def mark_done(
    layout: Layout, stage: str, unit: str, stats: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Write the completion record for ``unit`` of ``stage``; call only after its outputs are written."""
    record = {
        "stage": stage,
        "unit": unit,
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(),
        "stats": stats or {},
        **extra,
    }
    fs.write_json(_record_path(layout, stage, unit), record)
    return record


def done_units(layout: Layout, stage: str) -> list[str]:
    """Units of ``stage`` that have a completion record, sorted."""
    names = fs.listdir(layout.join("runs", STAGES_DIR, safe_name(stage)))
    return [n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith(".")]


def clear(layout: Layout, stage: str, unit: str) -> None:
    """Forget that ``unit`` is done (its outputs are left for the stage to overwrite)."""
    fs.remove(_record_path(layout, stage, unit))


def find_units(layout: Layout, stage: str | None = None, **fields: Any) -> list[dict[str, Any]]:
    """Completion records (of ``stage``, or of every stage) whose fields equal ``fields``, e.g. ``key=<shard key>``.

    Records are read back from storage, so they are treated as untrusted: unreadable ones, and ones whose
    stage or unit is not a plain name, are skipped.
    """
    from dga_engine.layout import UnsafeNameError

    base = layout.join("runs", STAGES_DIR)
    stages = [stage] if stage is not None else [s for s in fs.listdir(base) if not s.startswith(".")]
    found = []
    for s in stages:
        try:
            safe_name(s)
        except UnsafeNameError:
            continue
        for unit in done_units(layout, s):
            try:
                record = fs.read_json(_record_path(layout, s, unit))
            except (OSError, ValueError, UnsafeNameError):
                continue
            if isinstance(record, dict) and all(record.get(k) == v for k, v in fields.items()):
                found.append({**record, "stage": s, "unit": unit})
    return found
