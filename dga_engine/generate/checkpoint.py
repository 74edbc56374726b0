"""Generator checkpoints: one folder per round, written atomically, loaded without unpickling code.

    <root>/models/round-KKK/
        checkpoint.json           config, normaliser bounds, data hash (shard checksums), code version and
                                  hash, epoch/step, loss history, and the name of the weights file
        weights-EEEEEE.pt         model (+ optimizer, RNG) tensors; torch.load(weights_only=True)

The weights file is written first under a new name, then checkpoint.json (atomic replace) points at
it, then older weights files are removed: a crash at any moment leaves the previous checkpoint intact.
A checkpoint exists when checkpoint.json exists.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dga_engine import __version__, fs
from dga_engine.generate.config import GeneratorConfig
from dga_engine.generate.model import GraspDiffusionNet
from dga_engine.generate.normalise import PoseNormaliser
from dga_engine.layout import Layout

CHECKPOINT_FORMAT = 1
CHECKPOINT_FILE = "checkpoint.json"
GENERATOR_NAME = "dga-diffusion"


class CheckpointNotFound(FileNotFoundError):
    pass


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """Hash of this package's source files: changes whenever the generator's code changes."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def generator_name() -> str:
    """What goes into the grasps' ``generator`` column: name, engine version, code hash."""
    return f"{GENERATOR_NAME}/{__version__}+{code_hash()[:8]}"


def round_dir(layout: Layout, round_: int) -> str:
    if round_ < 0:
        raise ValueError(f"round must be >= 0, got {round_}")
    return f"{layout.models()}/round-{round_:03d}"


@dataclass
class Checkpoint:
    """A loaded checkpoint (weights on ``device``). ``meta`` is checkpoint.json as written."""

    config: GeneratorConfig
    normaliser: PoseNormaliser
    model: GraspDiffusionNet
    meta: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    rng_state: torch.Tensor | None = None
    path: str = ""

    @property
    def epoch(self) -> int:
        return int(self.meta.get("epoch", 0))

    @property
    def round(self) -> int:
        return int(self.meta.get("round", -1))

    @property
    def data_hash(self) -> str:
        return str(self.meta.get("data_hash", ""))

    @property
    def id(self) -> str:
        """Identifies these exact weights: round, epoch and the weights' content hash."""
        return f"r{self.round:03d}-e{self.epoch:06d}-{self.meta.get('weights_sha256', '')[:12]}"


def save(
    layout: Layout,
    round_: int,
    config: GeneratorConfig,
    normaliser: PoseNormaliser,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    epoch: int,
    step: int,
    data_hash: str,
    extra: dict[str, Any] | None = None,
    rng_state: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Write the round's checkpoint atomically; returns the checkpoint.json contents."""
    folder = round_dir(layout, round_)
    fs.makedirs(folder)
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if rng_state is not None:
        state["rng"] = rng_state
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    weights = f"weights-{epoch:06d}.pt"
    fs.write_bytes(f"{folder}/{weights}", data)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "generator": generator_name(),
        "round": round_,
        "epoch": epoch,
        "step": step,
        "weights": weights,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "config": config.to_dict(),
        "model_hash": config.model_hash(),
        "normaliser": normaliser.to_dict(),
        "data_hash": data_hash,
        "code": {"version": __version__, "hash": code_hash()},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        **(extra or {}),
    }
    fs.write_json(f"{folder}/{CHECKPOINT_FILE}", meta)
    for name in fs.listdir(folder):  # older weights: unreferenced now
        if name.startswith("weights-") and name.endswith(".pt") and name != weights:
            fs.remove(f"{folder}/{name}")
    return meta


def exists(layout: Layout, round_: int) -> bool:
    return fs.exists(f"{round_dir(layout, round_)}/{CHECKPOINT_FILE}")


def read_meta(layout: Layout, round_: int) -> dict[str, Any]:
    path = f"{round_dir(layout, round_)}/{CHECKPOINT_FILE}"
    if not fs.exists(path):
        raise CheckpointNotFound(
            f"no generator checkpoint for round {round_} at {path}: train one first (dga-engine train --round {round_})"
        )
    meta = fs.read_json(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} has format {meta.get('format')}, this engine reads {CHECKPOINT_FORMAT}")
    return meta


def load(layout: Layout, round_: int, device: torch.device | str = "cpu", with_optimizer: bool = False) -> Checkpoint:
    """Load round ``round_``'s checkpoint. Tensors only (``weights_only=True``): no code is unpickled."""
    meta = read_meta(layout, round_)
    folder = round_dir(layout, round_)
    data = fs.read_bytes(f"{folder}/{meta['weights']}")
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise ValueError(f"{folder}/{meta['weights']} does not match its checksum: the checkpoint is damaged; retrain")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    config = GeneratorConfig.from_dict(meta["config"])
    model = GraspDiffusionNet(config.model)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return Checkpoint(
        config=config,
        normaliser=PoseNormaliser.from_dict(meta["normaliser"]),
        model=model,
        meta=meta,
        optimizer_state=state.get("optimizer") if with_optimizer else None,
        rng_state=state.get("rng"),
        path=folder,
    )

