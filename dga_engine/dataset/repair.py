"""Rebuilding damaged shards: ``dga-engine shards repair``.

A damaged shard cannot be rewritten in place (its data is what was lost), but the unit of stage work that
wrote it can run again. :func:`rerun_damaged` takes the errors of ``verify``, finds the shards they affect
(each error names its ``keys``), and for each one:

1. finds the completion records that wrote it: records of any stage whose ``key`` field is the shard key
   (the filter writes ``key=<shard key>``, ``source=<candidate source>``) — by that field, never by parsing
   unit names;
2. removes the damaged data from the dataset: the shard is deleted (a compacted key gets a tombstone, and a
   compacted file left with no live rows is dropped by the compaction that follows), a damaged rejects
   file is removed;
3. clears those completion records, so the next run of that stage redoes exactly these units and writes
   the shard again under the same key.

A shard no record names (written by hand or by a script) is reported, not deleted: nothing could rebuild it.
Damaged candidate files are inputs, not outputs: they are reported with what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dga_engine import runs
from dga_engine.dataset.manifest import CorruptShardError
from dga_engine.dataset.paths import REJECTS_DIR, REJECTS_FILE

if TYPE_CHECKING:
    from dga_engine.dataset.store import Dataset
    from dga_engine.dataset.verify import VerifyReport


def rerun_damaged(ds: Dataset, report: VerifyReport | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Make the units that wrote the damaged shards of ``report`` (default: a fresh verify) run again."""
    report = report or ds.verify()
    keys: dict[str, list[str]] = {}  # shard key -> problems
    rejects: dict[str, list[str]] = {}
    manual: list[dict[str, str]] = []
    for b in report.errors:
        shard = b["shard"]
        if shard.startswith(f"{REJECTS_DIR}/"):
            for k in b.get("keys", []):
                rejects.setdefault(k, []).append(b["problem"])
        elif b.get("keys"):
            for k in b["keys"]:
                keys.setdefault(k, []).append(b["problem"])
        else:
            manual.append({"shard": shard, "problem": b["problem"]})

    actions: list[dict[str, Any]] = []
    for key in sorted(set(keys) | set(rejects)):
        records = [  # this dataset's records only: another dataset may hold the same key
            r for r in runs.find_units(ds.layout, key=key) if runs.stage_dataset(str(r.get("stage", ""))) == ds.name
        ]
        entry = {"key": key, "problems": keys.get(key, []) + rejects.get(key, []),
                 "units": [f"{r['stage']}/{r['unit']}" for r in records],
                 "sources": sorted({str(r["source"]) for r in records if r.get("source")})}
        if not records:
            entry["action"] = "none: no completion record names this shard; rewrite it by hand or restore its files"
            actions.append(entry)
            continue
        entry["action"] = "would rerun" if dry_run else "rerun"
        if not dry_run:
            if key in keys:
                ds.delete_shard(key)
            if key in rejects:
                ds._remove_quietly(ds.p(REJECTS_FILE.format(key=key)))
            for r in records:
                runs.clear(ds.layout, r["stage"], r["unit"])
        actions.append(entry)
    compacted: Any = None
    if not dry_run and any(a["action"] == "rerun" for a in actions):
        try:
            compacted = ds.compact()  # drops compacted files whose every row was just retired (never reads them)
        except CorruptShardError as exc:  # a damaged file still holds rows no record can rebuild
            compacted = {"error": str(exc)}
    stages = sorted({u.split("/", 1)[0] for a in actions for u in a["units"]})
    return {"actions": actions, "manual": manual, "stages": stages,
            "sources": sorted({s for a in actions for s in a["sources"]}), "dry_run": dry_run,
            "compacted": compacted}


__all__ = ["rerun_damaged"]
