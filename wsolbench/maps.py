"""Score maps saved by any method, named as wsolevaluation names them (docs/evaluate-maps.md).

A map for image id `001.Bird/x.jpg` is `<maps>/001.Bird/x.jpg.npy` (the id keeps its
extension, as wsolevaluation's `inference.py` saves it) or `<maps>/001.Bird/x.npy` (as its
README says); the code's form is tried first.

Two kinds of map, chosen by the user (`--maps-kind`), never guessed:
- `score`: finished 224x224 maps in [0, 1], scored as they are (wsolevaluation's
  `evaluation.py` input);
- `raw`: CAMs of any size and range; each goes through `postprocess.scoremap_wsolevaluation`
  (bicubic float64 resize to 224, min-max normalization, constant map -> zeros), the one place
  that does this, inside the protocol.
NaN and +-inf are refused in either kind, naming the image id and the file.

Maps are streamed: `MapFiles` loads a chunk of files when `evaluate` asks for it, scores it and
drops it, so memory holds one chunk of maps per worker whatever the split's size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsolbench.errors import WsolbenchError

MAP_KINDS = ("score", "raw")
SCORE_SIZE = 224  # wsolevaluation's frame for score maps


def map_path(maps_dir: Path, image_id: str) -> Path | None:
    for candidate in (maps_dir / f"{image_id}.npy", maps_dir / Path(image_id).with_suffix(".npy")):
        if candidate.is_file():
            return candidate
    return None


class MapFiles(Sequence):
    """The maps of a split as a lazy sequence: indexing reads and checks one `.npy` file,
    slicing gives another lazy `MapFiles` (so shards travel to worker processes as paths)."""

    def __init__(self, paths: list[Path], image_ids: list[str], kind: str) -> None:
        if kind not in MAP_KINDS:
            raise WsolbenchError(f"map kind must be one of {', '.join(MAP_KINDS)}, got {kind!r}")
        self.paths, self.image_ids, self.kind = paths, image_ids, kind

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return MapFiles(self.paths[index], self.image_ids[index], self.kind)
        return load_map(self.paths[index], self.image_ids[index], self.kind)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


def load_map(path: Path, image_id: str, kind: str) -> np.ndarray:
    """One map, checked: a 2-D finite float array; score maps also 224x224 in [0, 1].
    Every error is one line naming the image id and the file."""
    where = f"map of image {image_id!r} ({path})"
    try:
        raw = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for damaged files
        raise WsolbenchError(f"{where}: not a readable .npy array ({exc})") from None
    if raw.ndim != 2 or raw.size == 0:
        raise WsolbenchError(f"{where}: expected a 2-D map, got shape {raw.shape}")
    if not np.issubdtype(raw.dtype, np.floating):
        raise WsolbenchError(f"{where}: expected a float map, got dtype {raw.dtype}")
    finite = np.isfinite(raw)
    if not finite.all():
        bad = raw[~finite]
        what = "NaN" if np.isnan(bad).any() else "infinite values"
        raise WsolbenchError(f"{where}: contains {what} ({bad.size} pixels)")
    if kind == "score":
        if raw.shape != (SCORE_SIZE, SCORE_SIZE):
            raise WsolbenchError(f"{where}: score maps are {SCORE_SIZE}x{SCORE_SIZE}, got "
                                 f"{raw.shape}; for CAMs of another size use --maps-kind raw")
        lo, hi = raw.min(), raw.max()
        if lo < 0 or hi > 1:
            raise WsolbenchError(f"{where}: score map values must lie in [0, 1], got min "
                                 f"{float(lo)!r} max {float(hi)!r}; for unnormalized CAMs use "
                                 "--maps-kind raw")
    return raw


def map_files(maps_dir: Path, image_ids: list[str], kind: str) -> MapFiles:
    """Find every id's map (all missing ones are reported at once, by count and example)."""
    maps_dir = Path(maps_dir)
    if not maps_dir.is_dir():
        raise WsolbenchError(f"maps folder not found: {maps_dir}")
    paths = [map_path(maps_dir, i) for i in image_ids]
    missing = [i for i, p in zip(image_ids, paths) if p is None]
    if missing:
        raise WsolbenchError(f"{maps_dir}: no map for {len(missing)} of {len(image_ids)} image "
                             f"ids, e.g. {missing[0]!r} (looked for {missing[0]}.npy and the "
                             "name without the image extension)")
    return MapFiles(paths, list(image_ids), kind)  # type: ignore[arg-type]


def evaluate_maps(maps_dir: Path, metadata_dir: Path, protocol: str = "maxboxacc_v2",
                  cam_curve_interval: float = 0.001, mask_root: Path | None = None,
                  workers: int = 1, kind: str = "score", chunk: int = 64) -> dict[str, Any]:
    """Stream one map protocol over a wsolevaluation split; returns its JSON-ready result."""
    from wsolbench.data.metadata import read_metadata
    from wsolbench.evaluation import evaluate
    from wsolbench.registry import get_plugin

    metric_cls = get_plugin("protocols", protocol)
    if "scoremaps" not in _init_params(metric_cls):
        raise WsolbenchError(f"protocol {protocol!r} cannot score saved maps (it needs class "
                             "scores or takes no map kind); use maxboxacc_v2, maxboxacc or pxap")
    records = read_metadata(metadata_dir, maps_dir, mask_root=mask_root)
    if not records:
        raise WsolbenchError(f"{metadata_dir}: the split lists no image")
    maps = map_files(Path(maps_dir), [r.image_id for r in records], kind)
    metric = metric_cls(cam_curve_interval=cam_curve_interval, scoremaps=kind == "score")
    evaluate([metric], list(records), maps, chunk=chunk, desc=f"evaluate {protocol}",
             workers=workers)
    return {**metric.compute(), "maps_kind": kind}


def _init_params(cls) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)
