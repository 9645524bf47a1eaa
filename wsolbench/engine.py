"""Training and localization loops; checkpoints; seeds (protocols run in `evaluation`).

Determinism: every epoch reseeds python/numpy/torch from `(seed, stage, epoch)` and shuffles
with its own generator, so a run resumed from the checkpoint of epoch e continues exactly as
the uninterrupted run would have (on CPU; CUDA kernels may still differ in the last bits).
No choice is made on the test split: the last checkpoint is evaluated, and the `fair`
protocol takes its CAM threshold from the train-fullsup split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from wsolbench.data.records import Record
from wsolbench.data.torch_dataset import RecordDataset, build_transform
from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_save
from wsolbench.method import WSOLMethod

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic() -> None:
    """Deterministic kernels where PyTorch has them (warn, not fail, where it has none)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise WsolbenchError("--device cuda: no CUDA device is available on this machine")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise WsolbenchError(f"--device must be cpu or cuda[:N], got {name!r}")
    return torch.device(name)


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    stage_index: int = 0
    epoch: int = 0  # last finished epoch of the current stage (1-based; 0 = none yet)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def checkpoint_payload(method: WSOLMethod, state: TrainState, optimizer: torch.optim.Optimizer
                       | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"method": method.name, "num_classes": method.num_classes,
            "config": dataclasses.asdict(method.config), "model": method.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "train_state": dataclasses.asdict(state), **extra}


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """A checkpoint written by `train`, or a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WsolbenchError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WsolbenchError(f"{path}: not a readable wsolbench checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise WsolbenchError(f"{path}: not a wsolbench checkpoint (no 'model' entry)")
    return ckpt


def load_checkpoint(path: Path | str, method: WSOLMethod,
                    ckpt: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint into `method`, refusing one from another method or class count.

    `ckpt`: the already-read checkpoint of `path`, so the file is not read twice.
    """
    ckpt = ckpt if ckpt is not None else read_checkpoint(path)
    if ckpt.get("method") != method.name:
        raise WsolbenchError(f"{path}: checkpoint of method {ckpt.get('method')!r}, "
                             f"not {method.name!r}")
    if ckpt.get("num_classes") != method.num_classes:
        raise WsolbenchError(f"{path}: checkpoint has {ckpt.get('num_classes')} classes, the "
                             f"dataset has {method.num_classes}")
    try:
        method.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise WsolbenchError(f"{path}: weights do not fit this {method.name} configuration: "
                             f"{str(exc).splitlines()[0]}") from None
    return ckpt


def _make_optimizer(method: WSOLMethod, params, cfg) -> torch.optim.Optimizer:
    """One group per learning-rate ratio (`method.lr_ratios()`: e.g. 10x for a new head)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise WsolbenchError("this training stage has no trainable parameter")
    ratios = method.lr_ratios()
    wanted = {id(p) for p in params}
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in method.named_parameters():
        if id(p) in wanted:
            ratio = next((r for prefix, r in ratios.items() if name.startswith(prefix)), 1.0)
            groups.setdefault(ratio, []).append(p)
    param_groups = [{"params": ps, "lr_ratio": r, "lr": cfg.lr * r} for r, ps in groups.items()]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(method: WSOLMethod, records: Sequence[Record], run_dir: Path, *, device: torch.device,
          seed: int, resume: bool = False, num_workers: int = 0,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          stop_after_epochs: int | None = None, fingerprint: str = "") -> TrainState:
    """Train every stage of `method` on `records`; a checkpoint after each epoch.

    Args:
        run_dir: where `checkpoint.pt` lives (read with `resume`, rewritten each epoch).
        on_epoch: called with each epoch's log row (loss, accuracy, lr, time).
        stop_after_epochs: stop after this many epochs in this call (tests kill runs midway).
        fingerprint: what the run depends on beyond the config (dataset, seed); a checkpoint
            written under another config or fingerprint is not resumed: training restarts.
    """
    cfg = method.config
    method.to(device)
    state, opt_state = TrainState(), None
    ckpt_path = run_dir / CHECKPOINT_NAME
    if resume and ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        config = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as JSON lists
        same = (json.loads(json.dumps(ckpt.get("config"))) == config
                and ckpt.get("fingerprint", "") == fingerprint and ckpt.get("seed") == seed)
        if same:
            load_checkpoint(ckpt_path, method, ckpt)
            state = TrainState(**ckpt["train_state"])
            opt_state = ckpt.get("optimizer")
        else:
            logger.warning("%s was written under another config, dataset or seed: "
                           "not resumed, training from scratch", ckpt_path)
    dataset = RecordDataset(records, build_transform(True, cfg.image_size, cfg.resize_size,
                                                     cfg.mean, cfg.std, cfg.train_transform))
    epochs_run = 0
    for stage_index, stage in enumerate(method.stages()):
        if stage_index < state.stage_index:
            continue
        params = list(method.begin_stage(stage))
        stage_cfg = method.stage_config(stage)
        optimizer = _make_optimizer(method, params, stage_cfg)
        criterion = nn.CrossEntropyLoss(label_smoothing=stage_cfg.label_smoothing)
        if opt_state is not None and stage_index == state.stage_index:
            optimizer.load_state_dict(opt_state)
        start = state.epoch + 1 if stage_index == state.stage_index else 1
        state.stage_index = stage_index
        for epoch in range(start, stage_cfg.epochs + 1):
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                return state
            row = _train_epoch(method, dataset, optimizer, criterion, stage_cfg, stage,
                               stage_index, epoch, seed, device, num_workers)
            state.epoch = epoch
            state.history.append(row)
            atomic_save(ckpt_path, lambda p: torch.save(
                checkpoint_payload(method, state, optimizer,
                                   {"seed": seed, "fingerprint": fingerprint}), p))
            epochs_run += 1
            if on_epoch:
                on_epoch(row)
        state.epoch = 0
        opt_state = None
    state.stage_index = len(method.stages())
    return state


def _train_epoch(method, dataset, optimizer, criterion, cfg, stage, stage_index, epoch, seed,
                 device, num_workers) -> dict[str, Any]:
    epoch_seed = (seed * 1_000_003 + stage_index * 10_007 + epoch) % 2**31
    seed_everything(epoch_seed)
    lr = cfg.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_ratio"]
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=False,
                        num_workers=num_workers, generator=torch.Generator().manual_seed(
                            epoch_seed), persistent_workers=False)
    method.set_train_mode(stage)
    total_loss, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"{method.name} {stage} epoch {epoch}/{cfg.epochs}", leave=False,
               dynamic_ncols=True)
    for images, labels, _ in bar:
        images, labels = images.to(device), labels.to(device)
        logits = method.training_logits(images, stage)
        loss = criterion(logits, labels)
        if not math.isfinite(loss.item()):
            raise WsolbenchError(f"training diverged (loss {loss.item()}) at epoch {epoch}; "
                                 "lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
    return {"stage": stage, "epoch": epoch, "lr": lr, "loss": total_loss / seen,
            "train_acc": 100.0 * correct / seen, "seconds": time.perf_counter() - t0}


@dataclass
class Predictions:
    """Everything evaluation needs from a model on one split (numpy, in record order)."""

    image_ids: list[str]
    maps: np.ndarray  # float32 [N, h, w], raw GT-class maps
    logits: np.ndarray  # float32 [N, K]
    labels: np.ndarray  # int64 [N]

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle: numpy would append ".npz" to a path
                np.savez_compressed(handle, image_ids=np.asarray(self.image_ids),
                                    maps=self.maps, logits=self.logits, labels=self.labels)

        atomic_save(path, write)


@torch.no_grad()
def predict(method: WSOLMethod, records: Sequence[Record], *, device: torch.device,
            batch_size: int = 128, num_workers: int = 0, desc: str = "localize") -> Predictions:
    """Raw GT-class maps and logits for every record (test transform: square resize)."""
    cfg = method.config
    dataset = RecordDataset(records, build_transform(False, cfg.image_size, cfg.resize_size,
                                                     cfg.mean, cfg.std))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    method.to(device).eval()
    maps, logits = [], []
    for images, labels, _ in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        out = method.localize(images.to(device), labels.to(device))
        maps.append(out.maps.float().cpu().numpy())
        logits.append(out.logits.float().cpu().numpy())
    return Predictions(image_ids=[r.image_id for r in records], maps=np.concatenate(maps),
                       logits=np.concatenate(logits),
                       labels=np.asarray([r.label for r in records], dtype=np.int64))
