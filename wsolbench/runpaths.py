"""The one home of the run-folder layout (docs/design.md §"Run folders").

A run lives in `<results>/runs/<dataset>/<method>/<run key>/<seed>/`. The run key is
`<preset>-<digest>`: the digest covers everything that changes what a run computes (the
dataset and its generator knobs or data root, the resolved method config, the pretrained
weights, the protocol steps, the checkpoint selection), so two different runs never share a
folder and the same run always finds its own (for `--resume`, and for Snakemake, which knows
its outputs before running). `wsolbench run`, the tables, the figures, the report and the
workflow all build paths here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsolbench.errors import WsolbenchError

RUNS_DIR = "runs"
RESULTS_NAME = "results.json"


def run_key(preset: str, identity: dict[str, Any]) -> str:
    """`<preset>-<8 hex digits>` of the canonical JSON of `identity`."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return f"{preset}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class RunPaths:
    """Where one run's files are: `dir` and `file(name)`."""

    results_dir: Path
    dataset: str
    method: str
    key: str
    seed: int

    @property
    def dir(self) -> Path:
        return Path(self.results_dir) / RUNS_DIR / self.dataset / self.method / self.key / \
            str(self.seed)

    def file(self, name: str) -> Path:
        return self.dir / name

    @staticmethod
    def keys(results_dir: Path, dataset: str, method: str) -> list[str]:
        """Run keys with at least one finished run of `method` on `dataset`, sorted."""
        root = Path(results_dir) / RUNS_DIR / dataset / method
        return sorted({p.parent.parent.name for p in root.glob(f"*/*/{RESULTS_NAME}")})

    @classmethod
    def find(cls, results_dir: Path, dataset: str, method: str, seed: int,
             key: str | None = None) -> RunPaths:
        """The run of `method` on `dataset` with `seed`: under `key` when given, else under
        the only run key there is; several keys without a choice is an error that lists
        them (the tables must never mix two configs of one method silently)."""
        if key is None:
            keys = cls.keys(results_dir, dataset, method)
            if len(keys) > 1:
                raise WsolbenchError(
                    f"{Path(results_dir) / RUNS_DIR / dataset / method}: runs of {len(keys)} "
                    f"configs ({', '.join(keys)}); choose one with --run-key {dataset}/{method}=KEY")
            key = keys[0] if keys else None
        if key is None:
            raise WsolbenchError(f"{Path(results_dir) / RUNS_DIR / dataset / method}: no "
                                 f"finished run; run `wsolbench run --method {method} "
                                 f"--dataset {dataset} --seed {seed}` first")
        return cls(Path(results_dir), dataset, method, key, int(seed))

    def require(self, name: str = RESULTS_NAME) -> Path:
        """`file(name)`, which must exist (else one line saying which run to do)."""
        path = self.file(name)
        if not path.is_file():
            raise WsolbenchError(f"{path}: missing; run `wsolbench run --method {self.method} "
                                 f"--dataset {self.dataset} --seed {self.seed}` with the "
                                 f"config of run key {self.key} first")
        return path


def parse_run_keys(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`[DATASET/]METHOD=KEY` options (`--run-key`) to `{"[dataset/]method": key}`."""
    out = {}
    for pair in pairs:
        target, sep, key = pair.partition("=")
        if not sep or not target or not key:
            raise WsolbenchError(f"--run-key {pair!r}: expected [DATASET/]METHOD=KEY, e.g. "
                                 "cam=synth-1a2b3c4d or synth-cub/cam=synth-1a2b3c4d")
        out[target] = key
    return out


def chosen_key(run_keys: dict[str, str] | None, dataset: str, method: str) -> str | None:
    """The `--run-key` choice for `method` on `dataset` (a dataset-specific one first)."""
    run_keys = run_keys or {}
    return run_keys.get(f"{dataset}/{method}", run_keys.get(method))
