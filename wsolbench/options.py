"""What `wsolbench run` was asked to do: the options, validated before any work."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wsolbench.errors import WsolbenchError


@dataclass(frozen=True)
class RunOptions:
    """Everything `wsolbench run` was asked to do (the CLI fills it)."""

    method: str
    dataset: str
    seed: int = 0
    preset: str | None = None
    device: str = "cpu"
    data_root: Path | None = None
    fullsup_metadata: Path | None = None
    fullsup_images: Path | None = None
    results_dir: Path = Path("results")
    overrides: dict[str, str] = field(default_factory=dict)
    dataset_overrides: dict[str, str] = field(default_factory=dict)
    pretrained: Path | None = None
    pretrained_sha256: str | None = None
    resume: bool = False
    num_workers: int = 0
    mlflow: bool = True
    cam_curve_interval: float = 0.001  # MaxBoxAccV2 tau step (wsolevaluation's training config)
    curve_step: float = 0.01  # Top-k/GT-known Loc tau grid for the fair protocol
    baselines: bool = True
    eval_workers: int = 2  # processes for protocol evaluation (shards merge exactly)
    first_box_only: bool = False  # match only each image's first GT box (TRT repo behaviour)
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    precision: str = "fp32"  # or "bf16" autocast (CUDA, and CPUs with bf16 support)
    compile: bool = False  # torch.compile each training stage's forward
    eval_every: int = 0  # held-out (train-fullsup) check every K epochs; 0: only at the end
    # Which epoch of each stage is kept: "last", "fullsup" (best Top-1 Loc on train-fullsup)
    # or "test" (best Top-1 Loc on test: the official code's choice, which leaks the test
    # split; every output of such a run says so). See docs/recipes.md.
    select_checkpoint: str = "last"
    # Registered protocols evaluated beside the built-in suite (a plugin's own metric);
    # their numbers land in results.json and MLflow under their names.
    extra_protocols: tuple[str, ...] = ()
    # Built-in protocols left out of the suite (only OPTIONAL_PROTOCOLS: nothing the tables,
    # the `fair` transfer or the search read). The default workflow skips MaxBoxAcc v1: in
    # none of Tables 1-3, two thirds of the protocols' time (bench_eval_suite.py).
    skip_protocols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.select_checkpoint not in SELECT_CHOICES:
            raise WsolbenchError(f"--select-checkpoint must be one of "
                                 f"{', '.join(SELECT_CHOICES)}, got {self.select_checkpoint!r}")
        if self.pretrained_sha256 and not self.pretrained:
            raise WsolbenchError("--pretrained-sha256 pins the weights of --pretrained, which "
                                 "is not given")
        builtin = set(SUITE_PLUGINS) | set(SUITE_PLUGINS.values())
        clash = sorted(set(self.extra_protocols) & builtin)
        if clash:
            raise WsolbenchError(f"--protocol {clash[0]}: already in every run's suite")
        required = sorted(set(self.skip_protocols) - set(OPTIONAL_PROTOCOLS))
        if required:
            raise WsolbenchError(
                f"--skip-protocol {required[0]}: only {', '.join(OPTIONAL_PROTOCOLS)} can be "
                f"skipped (the others feed the tables, the fair threshold and the search)")
        if self.pretrained is not None and not Path(self.pretrained).is_file():
            raise WsolbenchError(f"--pretrained: weights file not found: {self.pretrained}")


def check_writable_dir(path: Path, what: str = "--results-dir") -> None:
    """Refuse up front an output folder that is a file or cannot be written, so a run never
    fails after hours of training on its first write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WsolbenchError(f"{what} {path} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WsolbenchError(f"{what} {path}: {existing} is not writable")


SELECT_CHOICES = ("last", "fullsup", "test")
# The built-in evaluation suite: its entries' names in results.json and the registered
# protocol each runs (docs/protocols.md); `--protocol NAME` adds others beside them.
SUITE_PLUGINS = {"classification": "classification", "paper": "loc_acc",
                 "maxboxacc_v2": "maxboxacc_v2", "maxboxacc": "maxboxacc", "pxap": "pxap"}
# The suite entries `--skip-protocol` may leave out.
OPTIONAL_PROTOCOLS = ("maxboxacc", "pxap")
TEST_SELECTION_NOTE = "checkpoint chosen on the test split, as the official code does"
