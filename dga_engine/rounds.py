"""The round ledger: what each round of the build did, so a stopped build resumes where it stopped.

    <root>/runs/ledger/build.json        the parameters of the build in progress (resume reuses them)
    <root>/runs/ledger/build.lock        held by the running build (who, since when): one build per root
    <root>/runs/ledger/round-000.json    one record per round

Round 0 is the seed round (curated sources, or seed synthesis when there are none); round k >= 1 trains a
generator on rounds < k, generates candidates and filters them. Each stage of a round is ``pending``,
``running`` or ``done``; the stage's own completion records (``dga_engine.runs``) decide which units of work
are done, the ledger only summarises them for people and for ``rounds status``.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from dga_engine import fs
from dga_engine.layout import Layout
from dga_engine.lock import FileLock, describe

LEDGER_DIR = "ledger"
BUILD_FILE = "build.json"
BUILD_LOCK = "build.lock"
LEDGER_VERSION = 1
F = TypeVar("F", bound=Callable[..., Any])


class BuildRunning(RuntimeError):
    """Another build holds this storage root (``holder`` says who and since when)."""

    def __init__(self, root: str, holder: dict[str, Any]) -> None:
        self.holder = holder
        super().__init__(
            f"a build is already running under {root}: {describe(holder)} (heartbeat "
            f"{holder.get('heartbeat_age_s', 0):.0f} s ago). Wait for it (`dga-engine rounds status`), or stop "
            "it; a build that died frees the root by itself (at once on this host, else after its lease)"
        )


def build_lock(layout: Layout) -> FileLock:
    """The lock a running build holds on its storage root."""
    return FileLock(layout.join("runs", LEDGER_DIR, BUILD_LOCK), purpose="build")


def running_build(layout: Layout) -> dict[str, Any] | None:
    """The holder of the root's build lock (host, pid, since, heartbeat age) if a live build holds it, else None."""
    holder = build_lock(layout).holder()
    return holder if holder is not None and not holder["stale"] else None


def exclusive_build(fn: F) -> F:
    """Run ``fn`` (a build flow with a ``root`` argument) holding the root's build lock; BuildRunning if held."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = kwargs.get("root", args[0] if args else None)
        layout = Layout.at(root)
        lock = build_lock(layout)
        if not lock.try_acquire():
            raise BuildRunning(layout.root, lock.holder() or {})
        try:
            return fn(*args, **kwargs)
        finally:
            lock.release()

    return wrapper  # type: ignore[return-value]

ROUND0_STAGES = ("ingest", "describe", "seed", "refine", "filter")
ROUND_STAGES = ("train", "generate", "refine", "filter")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


@dataclass
class RoundRecord:
    """One round of the build. Counts are grasps; ``accepted`` passed the physics filter."""

    round: int
    stages: dict[str, str] = field(default_factory=dict)  # stage -> pending | running | done
    objects: list[str] = field(default_factory=list)
    checkpoint: str | None = None  # generator checkpoint trained for this round (rounds >= 1)
    generated: int = 0  # candidates produced this round (seed synthesis, curation or generation)
    accepted: int = 0
    rejected: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)  # suc1, suc6, pen_mm, div of this round's filter
    refine: dict[str, int] = field(default_factory=dict)  # refine statuses: unchanged / refined / failed counts
    # CPU seconds per stage (this process and its finished workers)
    cost: dict[str, float] = field(default_factory=dict)
    # rounds >= 1: candidates/accepted on seen vs unseen objects
    by_object: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    version: int = LEDGER_VERSION

    @property
    def status(self) -> str:
        states = set(self.stages.values())
        if states and states == {"done"}:
            return "done"
        if not states or states == {"pending"}:
            return "pending"
        return "running"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoundRecord:
        if d.get("version") != LEDGER_VERSION:
            raise ValueError(
                f"round ledger version {d.get('version')} is not {LEDGER_VERSION}: this storage root was written by "
                "another dga-engine version; use that version or start a new root"
            )
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Ledger:
    """Read and update the round ledger under ``<root>/runs/ledger``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.dir = layout.join("runs", LEDGER_DIR)

    def _round_path(self, k: int) -> str:
        return f"{self.dir}/round-{k:03d}.json"

    # ---- the build's parameters -----------------------------------------------------------------
    def save_build(self, params: dict[str, Any]) -> None:
        fs.write_json(f"{self.dir}/{BUILD_FILE}", {"version": LEDGER_VERSION, "saved_at": _now(), "params": params})

    def build_params(self) -> dict[str, Any] | None:
        path = f"{self.dir}/{BUILD_FILE}"
        return fs.read_json(path)["params"] if fs.exists(path) else None

    # ---- rounds ---------------------------------------------------------------------------------
    def rounds(self) -> list[RoundRecord]:
        names = [n for n in fs.listdir(self.dir) if n.startswith("round-") and n.endswith(".json")]
        return [RoundRecord.from_dict(fs.read_json(f"{self.dir}/{n}")) for n in names]

    def get(self, k: int) -> RoundRecord:
        path = self._round_path(k)
        if fs.exists(path):
            return RoundRecord.from_dict(fs.read_json(path))
        stages = ROUND0_STAGES if k == 0 else ROUND_STAGES
        return RoundRecord(round=k, stages={s: "pending" for s in stages})

    def put(self, record: RoundRecord) -> None:
        fs.write_json(self._round_path(record.round), record.to_dict())

    def set_stage(self, k: int, stage: str, state: str, **updates: Any) -> RoundRecord:
        """Mark ``stage`` of round ``k`` as ``state`` and apply field ``updates`` atomically."""
        record = self.get(k)
        if state not in ("pending", "running", "done"):
            raise ValueError(f"unknown stage state {state!r}")
        record.stages[stage] = state
        if record.started_at is None and state != "pending":
            record.started_at = _now()
        for key, value in updates.items():
            setattr(record, key, value)
        if record.status == "done" and record.finished_at is None:
            record.finished_at = _now()
        self.put(record)
        return record

    def status(self) -> dict[str, Any]:
        """JSON-ready summary: the build parameters and every round."""
        rounds = [r.to_dict() for r in self.rounds()]
        complete = bool(rounds) and all(r["status"] == "done" for r in rounds) \
            and len(rounds) == 1 + int((self.build_params() or {}).get("rounds", 0))
        running = running_build(self.layout)
        state = "running" if running else "complete" if complete else "incomplete" if rounds else "none"
        return {"build": self.build_params(), "rounds": rounds, "complete": complete, "state": state,
                "running": running}
