"""Shipped starting weights (`wsolbench/weights/`, written by `wsolbench pretrain`): find
them by name and check them against their manifest. Light: no torch import, so run keys
and the workflow can name them (docs/benchmark.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wsolbench.errors import WsolbenchError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def read_manifest(weights: Path) -> dict[str, Any]:
    """The manifest beside shipped weights (`<name>.json`), checked against the file."""
    from wsolbench.fileio import sha256_file

    manifest_path = Path(weights).with_suffix(".json")
    if not manifest_path.is_file():
        raise WsolbenchError(f"{weights}: no manifest {manifest_path.name} beside it")
    manifest = json.loads(manifest_path.read_text())
    digest = sha256_file(weights)
    if digest != manifest.get("sha256"):
        raise WsolbenchError(f"{weights}: SHA-256 {digest} differs from its manifest's "
                             f"{manifest.get('sha256')}; regenerate it with `wsolbench "
                             "pretrain` (docs/benchmark.md)")
    return manifest


def shipped_weights(name: str) -> Path:
    """The shipped weights file a config's `init_weights` names."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        known = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise WsolbenchError(f"init_weights={name!r}: no shipped weights of that name "
                             f"(shipped: {', '.join(known) or 'none'}); `wsolbench pretrain` "
                             "writes them (docs/benchmark.md)")
    return path


def shipped_sha256(name: str) -> str:
    """The SHA-256 recorded in a shipped file's manifest (no hashing: for run keys)."""
    manifest = shipped_weights(name).with_suffix(".json")
    try:
        return str(json.loads(manifest.read_text())["sha256"])
    except (OSError, json.JSONDecodeError, KeyError):
        raise WsolbenchError(f"{manifest}: missing or unreadable manifest") from None
