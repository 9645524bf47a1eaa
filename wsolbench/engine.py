"""Training and localization loops; checkpoints; seeds (protocols run in `evaluation`).

Determinism: every epoch reseeds python/numpy/torch from `(seed, stage, epoch)`, shuffles
with its own generator, and seeds each image's augmentation from `(epoch seed, image)`, so a
run resumed from the checkpoint of epoch e continues exactly as the uninterrupted run would
have (on CPU; CUDA kernels may still differ in the last bits), and the images and
augmentations of a step do not depend on the DataLoader workers or the number of DDP ranks.
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
from wsolbench.distributed import DistContext, EpochShardSampler
from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_save, require_checkpoint
from wsolbench.interrupt import check as check_interrupt
from wsolbench.method import WSOLMethod

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "checkpoint_selected.pt"  # the current stage's best epoch (--select-checkpoint)
CHECK_EVERY = 20  # training steps between loss checks (each one synchronizes a GPU)


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
    # Checkpoint selection: the current stage's best epoch so far, and each finished
    # stage's choice ({"stage", "epoch", "score"}).
    best_epoch: int = 0
    best_score: float | None = None
    selected: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def checkpoint_payload(method: WSOLMethod, state: TrainState, optimizer: torch.optim.Optimizer
                       | None, extra: dict[str, Any]) -> dict[str, Any]:
    from wsolbench import __version__

    return {"method": method.name, "num_classes": method.num_classes,
            "wsolbench_version": __version__,
            "config": dataclasses.asdict(method.config), "model": method.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "train_state": dataclasses.asdict(state), **extra}


def read_checkpoint(path: Path | str, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint written by `train`, or a clear error naming the file. `mmap`: map the
    tensors instead of reading them (to look at the config and history of a large file)."""
    path = require_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
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


def _make_optimizer(method: WSOLMethod, params, cfg) -> tuple[torch.optim.Optimizer,
                                                                 dict[str, int]]:
    """The stage's optimizer and how many tensors it decays / exempts from weight decay.

    Weight-decay groups come from timm's own `param_groups_weight_decay` (what the official
    code's `timm.optim.create_optimizer` uses): biases, 1-D tensors and the method's
    `no_weight_decay()` names are exempt when `cfg.filter_bias_and_bn`. Each group is then
    split by learning-rate ratio (`method.lr_ratios()`: e.g. 10x for a new head).
    """
    from timm.optim import param_groups_weight_decay

    wanted = {id(p) for p in params if p.requires_grad}
    if not wanted:
        raise WsolbenchError("this training stage has no trainable parameter")
    decay_groups = param_groups_weight_decay(
        method, cfg.weight_decay, weight_decay_exclude_1d=cfg.filter_bias_and_bn,
        no_weight_decay_list=method.no_weight_decay() if cfg.filter_bias_and_bn else ())
    ratios = method.lr_ratios()
    ratio_of = {id(p): next((r for prefix, r in ratios.items() if name.startswith(prefix)), 1.0)
                for name, p in method.named_parameters()}
    param_groups, counts = [], {"decayed_tensors": 0, "exempt_tensors": 0}
    for group in decay_groups:
        by_ratio: dict[float, list[nn.Parameter]] = {}
        for p in group["params"]:
            if id(p) in wanted:
                by_ratio.setdefault(ratio_of[id(p)], []).append(p)
        for ratio, ps in by_ratio.items():
            param_groups.append({"params": ps, "lr_ratio": ratio, "lr": cfg.lr * ratio,
                                 "weight_decay": group["weight_decay"]})
            counts["decayed_tensors" if group["weight_decay"] else "exempt_tensors"] += len(ps)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum), counts
    return torch.optim.AdamW(param_groups, lr=cfg.lr), counts


@dataclass(frozen=True)
class Speed:
    """How training runs (never what it computes, up to float rounding).

    Attributes:
        precision: "fp32", or "bf16" autocast for forward and loss (weights, optimizer and
            the TRT/TS-CAM softmax stay in float32).
        compile: wrap each stage's forward in `torch.compile`.
        channels_last: NHWC memory layout for methods with conv backbones (`method.
            channels_last`) on CUDA, where cuDNN runs it faster (on this project's CPU it
            made the small CNN's epoch ~10 % slower, so CPU runs stay NCHW).
    """

    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise WsolbenchError(f"precision must be fp32 or bf16, got {self.precision!r}")

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")


class _StageForward(nn.Module):
    """`method.training_logits(images, stage)` as a module's forward, so DDP can wrap it."""

    def __init__(self, method: WSOLMethod, stage: str) -> None:
        super().__init__()
        self.method, self.stage = method, stage

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.training_logits(images, self.stage)


def _memory_format(method: WSOLMethod, speed: Speed, device: torch.device
                   ) -> torch.memory_format:
    use = (speed.channels_last and getattr(method, "channels_last", False)
           and device.type == "cuda")
    return torch.channels_last if use else torch.contiguous_format


def train(method: WSOLMethod, records: Sequence[Record], run_dir: Path, *, device: torch.device,
          seed: int, resume: bool = False, num_workers: int = 0,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          on_stage: Callable[[str, dict[str, int]], None] | None = None,
          select: Callable[[str], float] | None = None,
          stop_after_epochs: int | None = None, fingerprint: str = "",
          ctx: DistContext = DistContext(), speed: Speed = Speed()) -> TrainState:
    """Train every stage of `method` on `records`; a checkpoint after each epoch.

    Args:
        run_dir: where `checkpoint.pt` lives (read with `resume`, rewritten each epoch).
        on_epoch: called with each epoch's log row (loss, accuracy, lr, time); rank 0 only.
        on_stage: called at the start of each stage with the optimizer's weight-decay
            counts (`decayed_tensors`, `exempt_tensors`); rank 0 only.
        select: checkpoint selection. Called after every epoch with the stage name, returns
            a score (higher is better); at the end of each stage the weights of its first
            best-scoring epoch are restored, so the next stage starts from them, as the
            official TRT recipe starts stage 2 from stage 1's best file. None: keep the last
            epoch. The method is left holding the selected weights, and `checkpoint.pt` is
            rewritten with them at the end.
        stop_after_epochs: stop after this many epochs in this call (tests kill runs midway).
        fingerprint: what the run depends on beyond the config (dataset, seed); a checkpoint
            written under another config or fingerprint is not resumed: training restarts.
        ctx: this process's rank in a torchrun job (default: a world of one). The config's
            batch size is the global batch; each rank takes `batch / world_size` per step.
        speed: precision, compilation and memory layout.
    """
    cfg = method.config
    method.to(device=device, memory_format=_memory_format(method, speed, device))
    state, opt_state = TrainState(), None
    ckpt_path, best_path = run_dir / CHECKPOINT_NAME, run_dir / BEST_NAME
    extra = {"seed": seed, "fingerprint": fingerprint}
    if resume and ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        if resumable(ckpt, cfg, fingerprint, seed):
            load_checkpoint(ckpt_path, method, ckpt)
            state = TrainState(**ckpt["train_state"])
            opt_state = ckpt.get("optimizer")
        elif ctx.is_main:
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
        optimizer, decay_counts = _make_optimizer(method, params, stage_cfg)
        if on_stage and ctx.is_main:
            on_stage(stage, decay_counts)
        criterion = nn.CrossEntropyLoss(label_smoothing=stage_cfg.label_smoothing)
        if opt_state is not None and stage_index == state.stage_index:
            optimizer.load_state_dict(opt_state)
        step = _stage_step(method, stage, ctx, speed, device)
        loader, sampler = _train_loader(dataset, stage_cfg.batch_size, ctx, num_workers, device)
        start = state.epoch + 1 if stage_index == state.stage_index else 1
        if stage_index != state.stage_index:
            state.best_epoch, state.best_score = 0, None
        state.stage_index = stage_index
        for epoch in range(start, stage_cfg.epochs + 1):
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                return state
            row = _train_epoch(method, step, loader, sampler, optimizer, criterion, stage_cfg,
                               stage, stage_index, epoch, seed, device, ctx, speed)
            state.epoch = epoch
            if select is not None:
                row["selection_score"] = score = float(select(stage))
                # Strictly better, as the official `if loc_top1_val > best_top1_loc`: the
                # first epoch of a tie is kept.
                if state.best_score is None or score > state.best_score:
                    state.best_epoch, state.best_score = epoch, score
                    if ctx.is_main:
                        atomic_save(best_path, lambda p: torch.save(method.state_dict(), p))
            state.history.append(row)
            if ctx.is_main:  # one writer: rank 0 (all ranks hold the same weights)
                atomic_save(ckpt_path, lambda p: torch.save(
                    checkpoint_payload(method, state, optimizer, extra), p))
            epochs_run += 1
            if on_epoch and ctx.is_main:
                on_epoch(row)
        if select is not None:
            _restore_selected(method, best_path, state, stage, ctx)
        state.epoch = 0
        opt_state = None
    state.stage_index = len(method.stages())
    if select is not None and ctx.is_main:  # the evaluated weights are the selected ones
        atomic_save(ckpt_path, lambda p: torch.save(
            checkpoint_payload(method, state, None, extra), p))
    return state


def resumable(ckpt: dict[str, Any], cfg, fingerprint: str, seed: int) -> bool:
    """Whether `ckpt` was written by this very training: same config, data and seed."""
    config = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as JSON lists
    return (json.loads(json.dumps(ckpt.get("config"))) == config
            and ckpt.get("fingerprint", "") == fingerprint and ckpt.get("seed") == seed)


def resumed_history(run_dir: Path, cfg, fingerprint: str, seed: int) -> list[dict[str, Any]] | None:
    """The epoch rows a `--resume` of `run_dir` would continue from, or None if it would
    train from scratch (no checkpoint, or one of another config, data or seed)."""
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        return None
    ckpt = read_checkpoint(path, mmap=True)  # train() reads the weights; only metadata here
    return list(ckpt["train_state"]["history"]) if resumable(ckpt, cfg, fingerprint, seed) \
        else None


def _restore_selected(method: WSOLMethod, best_path: Path, state: TrainState, stage: str,
                      ctx: DistContext) -> None:
    """Load the stage's selected epoch into `method` and record the choice in `state`."""
    if ctx.enabled:  # rank 0 wrote the file: every rank waits for it
        import torch.distributed as dist

        dist.barrier()
    if not any(s["stage"] == stage for s in state.selected):
        state.selected.append({"stage": stage, "epoch": state.best_epoch,
                               "score": state.best_score})
    method.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
    logger.info("stage %s: selected epoch %d (score %.2f)", stage, state.best_epoch,
                state.best_score)


def _stage_step(method: WSOLMethod, stage: str, ctx: DistContext, speed: Speed,
                device: torch.device) -> nn.Module:
    """The module one training step calls: the stage forward, DDP-wrapped and/or compiled."""
    step: nn.Module = _StageForward(method, stage)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # Some parameters take no gradient in a stage (TRT's CAM branch in stage 1).
        step = DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    if speed.compile:
        step = torch.compile(step)
    return step


def _train_loader(dataset: RecordDataset, batch_size: int, ctx: DistContext,
                  num_workers: int, device: torch.device) -> tuple[DataLoader,
                                                                   EpochShardSampler]:
    if batch_size % ctx.world_size:
        raise WsolbenchError(f"batch size {batch_size} is not divisible by the "
                             f"{ctx.world_size} processes (it is the global batch)")
    sampler = EpochShardSampler(len(dataset), ctx.rank, ctx.world_size)
    loader = DataLoader(dataset, batch_size=batch_size // ctx.world_size, sampler=sampler,
                        drop_last=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda",
                        persistent_workers=num_workers > 0,
                        prefetch_factor=4 if num_workers > 0 else None)
    return loader, sampler


def _train_epoch(method, step, loader, sampler, optimizer, criterion, cfg, stage, stage_index,
                 epoch, seed, device, ctx, speed) -> dict[str, Any]:
    epoch_seed = (seed * 1_000_003 + stage_index * 10_007 + epoch) % 2**31
    seed_everything(epoch_seed)  # dropout / drop-path streams
    sampler.set_epoch_seed(epoch_seed)  # order and per-image augmentation
    lr = cfg.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_ratio"]
    method.set_train_mode(stage)
    memory_format = _memory_format(method, speed, device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # correct, seen
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"{method.name} {stage} epoch {epoch}/{cfg.epochs}", leave=False,
               dynamic_ncols=True, disable=not ctx.is_main or None)
    for index, (images, labels, _) in enumerate(bar, start=1):
        check_interrupt()  # a Ctrl-C or SIGTERM that library code swallowed stops here
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with speed.autocast(device):
            logits = step(images)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach().double() * len(labels)
        counts += torch.stack([(logits.argmax(1) == labels).sum(), labels.new_tensor(
            len(labels))])
        # Reading a value from the GPU waits for it: check and report every few steps only.
        if index % CHECK_EVERY == 0 or index == len(loader):
            seen = int(counts[1])
            if not math.isfinite(float(total_loss)):
                raise WsolbenchError(f"training diverged (non-finite loss) at epoch {epoch}; "
                                     "lower the learning rate")
            bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}",
                            acc=f"{100 * int(counts[0]) / seen:.1f}")
    if ctx.enabled:  # the epoch's loss and accuracy over every rank's images
        import torch.distributed as dist

        stats = torch.cat([total_loss.reshape(1), counts.double()]).cpu()
        dist.all_reduce(stats)
        total_loss, counts = stats[0], stats[1:].long()
    seen = int(counts[1])
    return {"stage": stage, "epoch": epoch, "lr": lr, "loss": float(total_loss) / seen,
            "train_acc": 100.0 * int(counts[0]) / seen, "seconds": time.perf_counter() - t0}


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
            batch_size: int = 128, num_workers: int = 0, desc: str = "localize",
            speed: Speed = Speed(), stage: str | None = None) -> Predictions:
    """Raw GT-class maps and logits for every record (test transform: square resize).

    `stage`: score the maps of that training stage (`method.stage_localize`), for
    checkpoint selection mid-training; None: the final maps (`method.localize`).
    """
    cfg = method.config
    dataset = RecordDataset(records, build_transform(False, cfg.image_size, cfg.resize_size,
                                                     cfg.mean, cfg.std))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    memory_format = _memory_format(method, speed, device)
    method.to(device=device, memory_format=memory_format).eval()
    maps, logits = [], []
    for images, labels, _ in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True,
                                  disable=None):  # a bar on a terminal, never in a log file
        check_interrupt()
        with speed.autocast(device):
            images = images.to(device, memory_format=memory_format)
            labels = labels.to(device)
            out = (method.localize(images, labels) if stage is None
                   else method.stage_localize(images, labels, stage))
        maps.append(out.maps.float().cpu().numpy())
        logits.append(out.logits.float().cpu().numpy())
    return Predictions(image_ids=[r.image_id for r in records], maps=np.concatenate(maps),
                       logits=np.concatenate(logits),
                       labels=np.asarray([r.label for r in records], dtype=np.int64))
