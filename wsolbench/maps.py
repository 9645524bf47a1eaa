"""Evaluate score maps saved by any method, named as wsolevaluation names them.

A map for image id `001.Bird/x.jpg` is `<maps>/001.Bird/x.jpg.npy` (the id keeps its
extension, as wsolevaluation's `inference.py` saves it) or `<maps>/001.Bird/x.npy` (as its
README says); the code's form is tried first (shared/spec/protocols.md §1.2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsolbench.data.metadata import read_metadata
from wsolbench.evaluation import evaluate
from wsolbench.errors import WsolbenchError
from wsolbench.registry import get_plugin

MAP_PROTOCOLS = ("maxboxacc_v2", "maxboxacc", "pxap")


def map_path(maps_dir: Path, image_id: str) -> Path | None:
    for candidate in (maps_dir / f"{image_id}.npy", maps_dir / Path(image_id).with_suffix(".npy")):
        if candidate.is_file():
            return candidate
    return None


def load_maps(maps_dir: Path, image_ids: list[str]) -> list[np.ndarray]:
    if not maps_dir.is_dir():
        raise WsolbenchError(f"maps folder not found: {maps_dir}")
    paths = [map_path(maps_dir, i) for i in image_ids]
    missing = [i for i, p in zip(image_ids, paths) if p is None]
    if missing:
        raise WsolbenchError(f"{maps_dir}: no map for {len(missing)} of {len(image_ids)} image "
                             f"ids, e.g. {missing[0]!r} (looked for {missing[0]}.npy and the "
                             "name without the image extension)")
    maps = []
    for path in paths:
        try:
            maps.append(np.load(path, allow_pickle=False))
        except Exception as exc:
            raise WsolbenchError(f"{path}: not a readable .npy array ({exc})") from None
    return maps


def evaluate_maps(maps_dir: Path, metadata_dir: Path, protocol: str = "maxboxacc_v2",
                  cam_curve_interval: float = 0.01, mask_root: Path | None = None,
                  workers: int = 1) -> dict[str, Any]:
    """Run one map protocol over a wsolevaluation split; returns its JSON-ready result."""
    if protocol not in MAP_PROTOCOLS:
        raise WsolbenchError(f"protocol {protocol!r} cannot evaluate saved maps; "
                             f"choose one of {', '.join(MAP_PROTOCOLS)}")
    records = read_metadata(metadata_dir, maps_dir, mask_root=mask_root)
    if not records:
        raise WsolbenchError(f"{metadata_dir}: the split lists no image")
    maps = load_maps(Path(maps_dir), [r.image_id for r in records])
    metric = get_plugin("protocols", protocol)(cam_curve_interval=cam_curve_interval,
                                               scoremaps=True)
    evaluate([metric], records, maps, desc=f"evaluate {protocol}", workers=workers)
    return metric.compute()
