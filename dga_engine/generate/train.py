"""Physics-aware training (paper Sec. 3.3): L = L_simple + sum_i alpha_i L_PA_i(h0_hat(h_t)).

:func:`train` is the stage behind ``dga-engine train --round K``: it trains on every accepted grasp of
rounds 0..K-1 (round K's grasps come from this generator, so they cannot train it) and writes
``models/round-KKK/``. It resumes from that folder's checkpoint when the configuration and the training
data (the shards' checksums) are the same; otherwise it refuses, unless ``restart`` discards it.
:class:`Trainer` is the loop itself, usable on any :class:`~dga_engine.generate.data.TrainingSet`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import torch

from dga_engine.generate import checkpoint as ckpt
from dga_engine.generate.config import PRESETS, GeneratorConfig, TrainConfig, preset, tiny_config
from dga_engine.generate.data import TrainingSet
from dga_engine.generate.device import default_device
from dga_engine.generate.diffusion import Diffusion
from dga_engine.generate.guide import PoseObjectives
from dga_engine.generate.model import GraspDiffusionNet, rotate_groups
from dga_engine.generate.normalise import PoseNormaliser
from dga_engine.hand import default_hand
from dga_engine.layout import DEFAULT_DATASET, Layout

log = logging.getLogger(__name__)


class TrainingDataChanged(RuntimeError):
    """The round's checkpoint was trained on other data or another configuration."""


@dataclass
class TrainResult:
    """What a training run did. history: one dict per epoch run now (epoch, simple, physics, total, seconds)."""

    round: int
    epoch: int  # epochs completed in total (including resumed ones)
    epochs_run: int  # epochs run by this call
    steps: int
    n_grasps: int
    n_objects: int
    resumed_from: int | None  # the epoch the run resumed from, None for a fresh start
    checkpoint: str  # the checkpoint folder
    data_hash: str
    seconds: float
    final: dict[str, float] = field(default_factory=dict)  # last epoch's mean losses
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)  # objects and grasps trained on / held out / test
    best_epoch: int | None = None  # the held-out loss's best epoch: its weights are the ones sampled
    best_val_loss: float | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class Trainer:
    """The training loop over a TrainingSet. Holds model, optimizer, normaliser, the EMA weights and the RNG.

    train_rows / val_rows: indices of the TrainingSet's grasps to train on and to measure the held-out
    loss on (default: every grasp trains, none is held out).
    """

    def __init__(
        self,
        config: GeneratorConfig,
        data: TrainingSet,
        device: torch.device | str | None = None,
        normaliser: PoseNormaliser | None = None,
        train_rows: np.ndarray | None = None,
        val_rows: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.device = torch.device(device) if device is not None else default_device()
        tc = config.train
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        self.hand = default_hand()  # shared CPU instance: never moved (the physics terms copy it per device)
        self.train_rows = np.arange(len(data)) if train_rows is None else np.asarray(train_rows)
        self.val_rows = np.zeros(0, dtype=np.int64) if val_rows is None else np.asarray(val_rows)
        self.normaliser = normaliser or PoseNormaliser.from_data(
            data.x[self.train_rows], self.hand.lower.cpu().numpy(), self.hand.upper.cpu().numpy()
        )
        self.model = GraspDiffusionNet(config.model).to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False) if tc.ema_decay > 0 else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.diffusion = Diffusion(config.diffusion, self.device)
        self.generator = torch.Generator(device="cpu").manual_seed(tc.seed)
        self.epoch = 0
        self.step = 0
        dev = self.device
        self.x = self.normaliser.normalise(torch.as_tensor(data.x, dtype=torch.float64)).float().to(dev)
        self.R = torch.as_tensor(data.R, dtype=torch.float32).to(dev)
        self.obj = torch.as_tensor(data.obj).to(dev)
        self.groups = data.bank.groups.to(dev)
        self.variants = (data.bank.variants(config.model, tc.point_variants, tc.point_jitter, tc.seed).to(dev)
                         if tc.point_variants > 0 else None)  # fmt: skip
        self.semantic = data.bank.semantic.to(dev)
        self.has_semantic = data.bank.has_semantic.to(dev)
        self.physics = PoseObjectives(
            data.bank, self.normaliser, tc.physics, hand=self.hand, device=dev, field=tc.field, grid_resolution=tc.sdf_resolution
        ) if (tc.physics_aware and tc.physics.any()) else None

    # ---- state ------------------------------------------------------------------------------------
    def load_state(self, model_state: dict, optimizer_state: dict | None, rng: torch.Tensor | None, epoch: int, step: int,
                   ema_state: dict | None = None) -> None:
        self.model.load_state_dict(model_state)
        if self.ema is not None:
            self.ema.load_state_dict(ema_state or model_state)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        if rng is not None:
            self.generator.set_state(rng)
        self.epoch, self.step = epoch, step

    def sampling_model(self) -> GraspDiffusionNet:
        """The weights to sample with: the EMA when kept, else the trained ones."""
        return self.ema if self.ema is not None else self.model

    def _learning_rate(self) -> float:
        tc = self.config.train
        if tc.lr_schedule == "cosine":
            return tc.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, self.epoch / max(1, tc.epochs)))))
        if tc.lr_schedule != "constant":
            raise ValueError(f"unknown lr_schedule {tc.lr_schedule!r}: use 'constant' or 'cosine'")
        return tc.lr

    def _context(self, model: GraspDiffusionNet, idx: Tensor, R: Tensor, obj: Tensor, augment: bool) -> Tensor:
        if augment and self.variants is not None:  # a random resampled grouping of each grasp's object
            k = self.config.train.point_variants
            pick = obj * k + torch.randint(k, (len(idx),), generator=self.generator).to(self.device)
            centres, local, normals = rotate_groups(self.variants, pick, R)
        else:
            centres, local, normals = rotate_groups(self.groups, obj, R)
        has = self.has_semantic[obj]
        if augment and self.config.train.semantic_dropout > 0:
            keep = torch.rand(len(idx), generator=self.generator).to(self.device) >= self.config.train.semantic_dropout
            has = has & keep
        return model.encode(centres, local, normals, self.semantic[obj], has)

    # ---- one epoch --------------------------------------------------------------------------------
    def run_epoch(self) -> dict[str, float]:
        tc = self.config.train
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        rows = torch.as_tensor(self.train_rows, device=self.device)
        n = len(rows)
        perm = rows[torch.randperm(n, generator=self.generator).to(self.device)]
        bs = min(tc.batch_size, n)
        n_batches = max(1, n // bs)  # drop the ragged tail (it is in the next epoch's permutation)
        use_physics = self.physics is not None and self.epoch >= tc.physics_warmup_epochs
        sums = {"simple": 0.0, "physics": 0.0, "total": 0.0}
        t0 = time.perf_counter()
        for b in range(n_batches):
            idx = perm[b * bs : (b + 1) * bs]
            x0, R, obj = self.x[idx], self.R[idx], self.obj[idx]
            ctx = self._context(self.model, idx, R, obj, augment=True)
            t = self.diffusion.sample_timesteps(len(idx), self.generator, tc.antithetic).to(self.device)
            noise = torch.randn(x0.shape, generator=self.generator).to(self.device)
            physics = (lambda x0n: self.physics.loss(x0n, R, obj)) if use_physics else None  # noqa: E731
            losses = self.diffusion.training_losses(lambda xt, tt: self.model(xt, tt, ctx), x0, t, noise, physics)
            loss = losses["simple"] + losses["physics"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {self.epoch}, step {self.step}: lower the learning "
                    "rate or the physics weights"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                with torch.no_grad():
                    for e, p in zip(self.ema.parameters(), self.model.parameters()):
                        e.mul_(tc.ema_decay).add_(p.detach(), alpha=1 - tc.ema_decay)
            self.step += 1
            sums["simple"] += float(losses["simple"].detach())
            sums["physics"] += float(losses["physics"].detach())
            sums["total"] += float(loss.detach())
        self.epoch += 1
        out = {k: v / n_batches for k, v in sums.items()}
        out.update(epoch=self.epoch, seconds=time.perf_counter() - t0, lr=self._learning_rate())
        return out

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """The noise-prediction loss of the sampling weights on the held-out grasps, with fixed timesteps and
        noise (comparable across epochs); None without held-out grasps."""
        if not len(self.val_rows):
            return None
        model = self.sampling_model().eval()
        gen = torch.Generator().manual_seed(12345)
        total, count = 0.0, 0
        rows = torch.as_tensor(self.val_rows, device=self.device)
        for b0 in range(0, len(rows), 256):
            idx = rows[b0 : b0 + 256]
            x0, R, obj = self.x[idx], self.R[idx], self.obj[idx]
            ctx = self._context(model, idx, R, obj, augment=False)
            t = self.diffusion.sample_timesteps(len(idx), gen, True).to(self.device)
            noise = torch.randn(x0.shape, generator=gen).to(self.device)
            losses = self.diffusion.training_losses(lambda xt, tt: model(xt, tt, ctx), x0, t, noise, None)
            total += float(losses["simple"]) * len(idx)
            count += len(idx)
        return total / count


def _kept_rows(table: pa.Table, data: TrainingSet) -> pa.Table:
    """The rows of ``table`` that ``TrainingSet.from_table`` kept, in its order (object ids only)."""
    ids = [data.bank.keys[i][0] for i in data.obj]
    return pa.table({"object_id": pa.array(ids, pa.string())})


def split_rows(layout: Layout, table: pa.Table, val_fraction: float, dataset: str) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(train rows, held-out rows, counts) of a training table.

    Objects a source's split file marks ``test`` never train (the paper's protocol: generate for test
    objects, measure there); ``val`` objects are held out; of the rest, ``val_fraction`` of the objects
    (by a hash of their id, so the split is stable) are held out when there are at least 3 objects.
    """
    from dga_engine.sources.curate import object_splits

    official = object_splits(layout, dataset)
    ids = np.asarray(table.column("object_id").to_pylist(), dtype=object)
    objects = sorted(set(ids.tolist()))
    free = [o for o in objects if official.get(o) not in ("test", "val")]
    held = {o for o in objects if official.get(o) == "val"}
    if val_fraction > 0 and len(free) >= 3:
        rank = sorted(free, key=lambda o: hashlib.sha256(o.encode()).hexdigest())
        held |= set(rank[: max(1, int(round(val_fraction * len(free))))])
    test = {o for o in objects if official.get(o) == "test"}
    is_held = np.isin(ids, list(held))
    is_test = np.isin(ids, list(test))
    train_rows, val_rows = np.flatnonzero(~is_held & ~is_test), np.flatnonzero(is_held)
    counts = {"train_objects": len(set(objects) - held - test), "val_objects": len(held), "test_objects": len(test),
              "train_grasps": len(train_rows), "val_grasps": len(val_rows), "test_grasps": int(is_test.sum())}
    if not len(train_rows):
        train_rows, val_rows = np.arange(len(ids)), np.zeros(0, dtype=np.int64)  # too few objects to hold any out
    return train_rows, val_rows, counts


# ---- the stage ------------------------------------------------------------------------------------


def training_table(layout: Layout, round_: int, dataset: str = DEFAULT_DATASET) -> tuple[pa.Table, str, list[dict[str, Any]]]:
    """Accepted grasps of rounds < round_, the data hash (shard checksums) and the shards used."""
    from dga_engine.dataset.store import Dataset

    if round_ < 1:
        raise ValueError("the generator of round K trains on rounds 0..K-1: pass --round 1 or higher")
    ds = Dataset(layout, dataset)
    rounds = list(range(round_))
    wanted = {str(r) for r in rounds}
    shards = [
        {"key": m.key, "rows": m.rows, "rounds": m.rounds, "sha256": [p.sha256 for p in m.parts]}
        for m in ds.shards()
        if wanted & set(m.rounds)
    ]
    table = ds.read(rounds=rounds)
    h = hashlib.sha256()
    for s in sorted(shards, key=lambda s: s["key"]):
        h.update(f"{s['key']}:{','.join(s['sha256'])}\n".encode())
    h.update(f"rounds<{round_}:rows={table.num_rows}".encode())
    return table, h.hexdigest()[:16], shards


def train(
    layout: Layout,
    round_: int,
    config: GeneratorConfig | None = None,
    epochs: int | None = None,
    restart: bool = False,
    device: torch.device | str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    table: pa.Table | None = None,
    dataset: str = DEFAULT_DATASET,
) -> TrainResult:
    """Train (or resume training) the generator of round ``round_``; checkpoints under models/round-KKK.

    config: defaults to the existing checkpoint's config when resuming, else :func:`tiny_config`.
    epochs: total epochs to reach (default: config.train.epochs). table: train on this table instead of
    the dataset's shards (its data hash is computed from its content). dataset: the dataset's name.
    """
    t0 = time.perf_counter()
    if table is None:
        table, data_hash, shards = training_table(layout, round_, dataset)
    else:
        data_hash, shards = _table_hash(table), []
    existing = ckpt.read_meta(layout, round_) if ckpt.exists(layout, round_) else None
    if config is None:
        config = GeneratorConfig.from_dict(existing["config"]) if existing else tiny_config()
    if epochs is not None:
        config.train.epochs = int(epochs)
    target = config.train.epochs

    resume = _resumable(layout, round_, existing, config, data_hash) if existing and not restart else None
    data = TrainingSet.from_table(layout, table, config.model)
    tc = config.train
    train_rows, val_rows, split = split_rows(layout, _kept_rows(table, data), tc.val_fraction, dataset)
    trainer = Trainer(config, data, device=device, normaliser=resume.normaliser if resume else None,
                      train_rows=train_rows, val_rows=val_rows)
    history: list[dict[str, float]] = list(existing.get("history", [])) if resume else []
    best = _restore(trainer, resume)
    start = trainer.epoch
    run_history: list[dict[str, float]] = []
    stopped = bool(existing and existing.get("stopped_early")) and resume is not None

    def save() -> None:
        ckpt.save(
            layout, round_, config, trainer.normaliser, trainer.model, trainer.optimizer,
            epoch=trainer.epoch, step=trainer.step, data_hash=data_hash, rng_state=trainer.generator.get_state(),
            ema=trainer.ema, best=best["state"],
            extra={
                "history": history, "n_grasps": len(data), "objects": sorted({k[0] for k in data.bank.keys}),
                "shards": shards, "skipped": data.skipped, "complete": trainer.epoch >= target or stopped,
                "split": split, "best_epoch": best["epoch"], "best_val_loss": best["loss"] if best["state"] else None,
                "evaluations_since_best": best["bad"], "stopped_early": stopped,
            },
        )

    while trainer.epoch < target and not stopped:
        stats = trainer.run_epoch()
        if trainer.epoch % max(1, tc.eval_every) == 0 or trainer.epoch >= target:
            stopped = _evaluate(trainer, stats, best, tc.patience)
        history.append(stats)
        run_history.append(stats)
        if on_epoch:
            on_epoch(stats)
        if trainer.epoch % max(1, tc.checkpoint_every) == 0 or trainer.epoch >= target or stopped:
            save()
    if not run_history and (existing is None or restart):
        save()  # zero epochs requested: still leave a (untrained) checkpoint with the normaliser
    final = {k: float(v) for k, v in (history[-1] if history else {}).items()}
    return TrainResult(
        round=round_, epoch=trainer.epoch, epochs_run=len(run_history), steps=trainer.step, n_grasps=len(data),
        n_objects=len(data.bank.keys), resumed_from=start if resume else None, checkpoint=ckpt.round_dir(layout, round_),
        data_hash=data_hash, seconds=time.perf_counter() - t0, final=final, history=run_history, skipped=data.skipped,
        split=split, best_epoch=best["epoch"], best_val_loss=best["loss"] if best["state"] else None, stopped_early=stopped,
    )


def _resumable(layout: Layout, round_: int, existing: dict[str, Any], config: GeneratorConfig, data_hash: str):
    """The round's checkpoint to resume (with its optimizer), or :class:`TrainingDataChanged` when it was trained
    with another model configuration or other data."""
    if existing.get("model_hash") != config.model_hash() or existing.get("data_hash") != data_hash:
        what = "data" if existing.get("data_hash") != data_hash else "configuration"
        raise TrainingDataChanged(
            f"the checkpoint in {ckpt.round_dir(layout, round_)} was trained with other {what} "
            f"(epoch {existing.get('epoch')}); pass --restart to discard it and train from scratch"
        )
    return ckpt.load(layout, round_, device="cpu", with_optimizer=True)


def _restore(trainer: Trainer, resume) -> dict[str, Any]:
    """Load ``resume`` (a checkpoint, or None for a fresh start) into ``trainer``; the best held-out weights so far
    (``state``, ``loss``, ``epoch``, ``bad`` = evaluations since the best)."""
    best: dict[str, Any] = {"state": None, "loss": float("inf"), "epoch": None, "bad": 0}
    if resume is None:
        return best
    states = resume.train_states or {}
    trainer.load_state(states["model"], resume.optimizer_state, resume.rng_state, resume.epoch,
                       int(resume.meta.get("step", 0)), ema_state=states.get("ema"))
    if "best" in states:
        best.update(state=states["best"], loss=float(resume.meta.get("best_val_loss", float("inf"))),
                    epoch=resume.meta.get("best_epoch"), bad=int(resume.meta.get("evaluations_since_best", 0)))
    return best


def _evaluate(trainer: Trainer, stats: dict[str, float], best: dict[str, Any], patience: int) -> bool:
    """Measure the held-out loss (into ``stats["val"]``), keep the best weights; whether training stops early."""
    val = trainer.validation_loss()
    if val is None:
        return False
    stats["val"] = val
    if val < best["loss"]:
        best.update(state=copy.deepcopy(trainer.sampling_model().state_dict()), loss=val, epoch=trainer.epoch, bad=0)
        return False
    best["bad"] += 1
    return patience > 0 and best["bad"] >= patience


def train_round(
    layout: Layout,
    round_: int,
    config: GeneratorConfig | TrainConfig | None = None,
    *,
    dataset: str = DEFAULT_DATASET,
    seed: int | None = None,
    epochs: int | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """The build flow's entry point: train round ``round_``; the report's ``checkpoint`` is its folder.

    config: a full GeneratorConfig, or a TrainConfig (e.g. ``TrainConfig.preset("tiny")``), which is
    combined with the model and sampler of the preset it came from (tiny when it matches none).
    A checkpoint trained on other data is replaced (the build has moved on); the same data resumes.
    """
    if isinstance(config, TrainConfig):
        full = next((preset(n) for n in PRESETS if preset(n).train == config), tiny_config())
        full.train = config
        config = full
    config = config or tiny_config()
    if seed is not None:
        config.train.seed = int(seed)
    try:
        result = train(layout, round_, config, epochs=epochs, device=device, dataset=dataset)
    except TrainingDataChanged as exc:
        log.warning("%s; retraining round %d from scratch", exc, round_)
        result = train(layout, round_, config, epochs=epochs, device=device, dataset=dataset, restart=True)
    return result


def _table_hash(table: pa.Table) -> str:
    h = hashlib.sha256()
    for name in ("object_id", "object_scale", "translation", "rotation", "joints"):
        col = table.column(name).combine_chunks()
        if name == "object_id":
            h.update("\x1f".join(col.to_pylist()).encode())
        else:
            arr = col.values if hasattr(col, "values") and not isinstance(col, pa.FloatingPointArray) else col
            h.update(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


__all__ = ["Trainer", "TrainResult", "TrainingDataChanged", "train", "train_round", "training_table"]
