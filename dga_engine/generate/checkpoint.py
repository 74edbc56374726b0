"""Generator checkpoints: one folder per round, written atomically, loaded without unpickling code.

    <root>/models/round-KKK/
        checkpoint.json           config, normaliser bounds, data hash (shard checksums), code version and
                                  hash, epoch/step, loss history, and the name of the weights file
        weights-EEEEEE.pt         model (+ optimizer, RNG) tensors; torch.load(weights_only=True)

The weights file is written first under a new name, then checkpoint.json (atomic replace) points at
it, then older weights files are removed: a crash at any moment leaves the previous checkpoint intact.
A checkpoint exists when checkpoint.json exists.

Both files are untrusted when read back (a shared root can be written by others): checkpoint.json must
name a weights file of its own folder (``weights-EEEEEE.pt``, never a path), and a weights file that asks
the unpickler for anything but tensors is refused as unsafe, unloaded, with a message that says so.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import io
import pickle
import re
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


WEIGHTS_NAME = re.compile(r"weights-[0-9]{6}\.pt")  # what save() writes; fullmatch: no path can pass


class CheckpointNotFound(FileNotFoundError):
    pass


class CheckpointError(ValueError):
    """A checkpoint is damaged, tampered with or unsafe; it was not loaded. The message says what to do."""


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
    """A loaded checkpoint (weights on ``device``). ``meta`` is checkpoint.json as written.

    model: the weights to sample with - the best held-out epoch's EMA weights when training kept them,
    else the EMA, else the trained weights. train_states: with ``with_optimizer``, the weights a resumed
    training continues from ({"model", "ema", "best"}; absent entries were not kept).
    """

    config: GeneratorConfig
    normaliser: PoseNormaliser
    model: GraspDiffusionNet
    meta: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    rng_state: torch.Tensor | None = None
    path: str = ""
    train_states: dict[str, dict[str, Any]] | None = None

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
    ema: torch.nn.Module | None = None,
    best: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write the round's checkpoint atomically; returns the checkpoint.json contents.

    ema: the moving-average weights; best: the state dict to sample with (the best held-out epoch's).
    """
    folder = round_dir(layout, round_)
    fs.makedirs(folder)
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if ema is not None:
        state["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    if best is not None:
        state["best"] = {k: v.detach().cpu() for k, v in best.items()}
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
        "saved_at": _dt.datetime.now(_dt.UTC).isoformat(),
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
    """checkpoint.json of round ``round_``, checked: it names a weights file of its own folder, of this round."""
    path = f"{round_dir(layout, round_)}/{CHECKPOINT_FILE}"
    if not fs.exists(path):
        raise CheckpointNotFound(
            f"no generator checkpoint for round {round_} at {path}: train one first (dga-engine train --round {round_})"
        )
    retrain = f"retrain it (dga-engine train --round {round_} --restart) or restore the folder from a trusted copy"
    try:
        if fs.size(path) > 16 << 20:
            raise ValueError("larger than 16 MiB")
        meta = fs.read_json(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc}): {retrain}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} is not a JSON object: {retrain}")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} has format {meta.get('format')}, this engine reads {CHECKPOINT_FORMAT}")
    weights = meta.get("weights")
    if not isinstance(weights, str) or not WEIGHTS_NAME.fullmatch(weights):
        raise CheckpointError(
            f"checkpoint {path} names the weights file {str(weights)[:80]!r}, which is not a file of its "
            f"own folder (weights-EEEEEE.pt): it is damaged or was tampered with and was not loaded; {retrain}"
        )
    sha = meta.get("weights_sha256")
    epoch = meta.get("epoch")
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)) or not (type(epoch) is int and epoch >= 0) \
            or meta.get("round") != round_:
        raise CheckpointError(f"checkpoint {path} has a malformed checksum, epoch or round: {retrain}")
    return meta


def load(layout: Layout, round_: int, device: torch.device | str = "cpu", with_optimizer: bool = False) -> Checkpoint:
    """Load round ``round_``'s checkpoint. Tensors only (``weights_only=True``): no code is unpickled.

    Raises CheckpointError (one plain sentence, nothing loaded) for a damaged, tampered or unsafe checkpoint.
    """
    meta = read_meta(layout, round_)
    folder = round_dir(layout, round_)
    weights = f"{folder}/{meta['weights']}"
    retrain = f"retrain it (dga-engine train --round {round_} --restart) or restore the folder from a trusted copy"
    if not fs.exists(weights):
        raise CheckpointError(f"{weights}, named by {CHECKPOINT_FILE}, is missing: {retrain}")
    data = fs.read_bytes(weights)
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match its checksum: the checkpoint is damaged; retrain")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it asks for {named.group(1)})" if named else ""
        raise CheckpointError(
            f"{weights} is unsafe: it holds more than tensors{what}, which a generator checkpoint never "
            f"does; it was not loaded and nothing in it ran. Do not load it another way: {retrain}"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, TypeError, AttributeError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise CheckpointError(f"{weights} cannot be read as a checkpoint ({first}): {retrain}") from None
    try:
        config = GeneratorConfig.from_dict(meta["config"])
        model = GraspDiffusionNet(config.model)
        model.load_state_dict(state.get("best") or state.get("ema") or state["model"])
        normaliser = PoseNormaliser.from_dict(meta["normaliser"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise CheckpointError(
            f"checkpoint {folder} does not fit this engine's generator ({first}): {retrain}"
        ) from None
    model.to(device).eval()
    return Checkpoint(
        config=config,
        normaliser=normaliser,
        model=model,
        meta=meta,
        optimizer_state=state.get("optimizer") if with_optimizer else None,
        rng_state=state.get("rng"),
        path=folder,
        train_states={k: state[k] for k in ("model", "ema", "best") if k in state} if with_optimizer else None,
    )
