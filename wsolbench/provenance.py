"""Where a result comes from: package versions, the git commit, the run's fingerprint."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from wsolbench import __version__


def package_versions() -> dict[str, str]:
    import cv2
    import timm
    import torch

    return {"wsolbench": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_tags(commit: str | None) -> dict[str, str]:
    """MLflow's source-commit tag, set from this checkout (MLflow guesses it from the entry
    script, which a console script in a venv outside the checkout defeats)."""
    if not commit:
        return {}
    return {"mlflow.source.git.commit": commit.removesuffix("-dirty"),
            "wsolbench.git_dirty": str(commit.endswith("-dirty")).lower()}


def run_fingerprint(resolved: dict[str, Any]) -> str:
    """Hash of what a checkpoint depends on besides the method config: data and weights."""
    keys = ("dataset", "dataset_info", "pretrained", "select_checkpoint")
    blob = json.dumps({k: resolved.get(k) for k in keys},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
