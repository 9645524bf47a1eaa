"""`wsolbench evaluate-maps`: saved score maps of any method, wsolevaluation naming."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wsolbench.cli import cli
from wsolbench.data.metadata import read_metadata
from wsolbench.errors import WsolbenchError
from wsolbench.maps import evaluate_maps
from wsolbench.postprocess import scoremap_wsolevaluation


def _save_maps(tiny_synth, out: Path, drop_extension_every: int = 2) -> list[np.ndarray]:
    """Score maps that roughly cover each GT box, half saved under each naming."""
    rng = np.random.default_rng(0)
    maps = []
    for k, record in enumerate(tiny_synth.fullsup):
        w, h = record.size
        raw = rng.random((h, w)) * 0.2
        x0, y0, x1, y1 = record.boxes[0]
        raw[y0:y1 + 1, x0:x1 + 1] += 1.0
        score = scoremap_wsolevaluation(raw)
        name = (record.image_id + ".npy" if k % drop_extension_every
                else str(Path(record.image_id).with_suffix(".npy")))
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(out / name, score)
        maps.append(score)
    return maps


def test_evaluate_maps_matches_the_protocol_and_writes_json(tmp_path, tiny_synth):
    meta = tiny_synth.root / "metadata" / "CUB" / "val"
    _save_maps(tiny_synth, tmp_path / "maps")
    out = tmp_path / "result.json"
    res = CliRunner().invoke(cli, ["evaluate-maps", "--maps", str(tmp_path / "maps"),
                                   "--metadata", str(meta), "--json", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert saved["metric"] == "maxboxacc_v2" and saved["n_images"] == 6
    assert set(saved["per_iou"]) == {"30", "50", "70"}
    assert saved["cam_curve_interval"] == 0.01 and len(saved["curves"]["thresholds"]) == 100
    assert saved["per_iou"]["30"]["max_acc"] == 100.0  # the maps cover the boxes
    assert "mean" in res.output


def test_evaluate_maps_bad_inputs(tmp_path, tiny_synth):
    meta = tiny_synth.root / "metadata" / "CUB" / "val"
    maps_dir = tmp_path / "maps"
    _save_maps(tiny_synth, maps_dir)
    first = read_metadata(meta, maps_dir)[0]
    path = next(p for p in (maps_dir / f"{first.image_id}.npy",
                            (maps_dir / first.image_id).with_suffix(".npy")) if p.exists())
    np.save(path, np.full((224, 224), np.nan))
    with pytest.raises(WsolbenchError, match="contains NaN"):
        evaluate_maps(maps_dir, meta)
    np.save(path, np.zeros((10, 10)))
    with pytest.raises(WsolbenchError, match=r"expected \(224, 224\)"):
        evaluate_maps(maps_dir, meta)
    np.save(path, np.full((224, 224), 2.0))
    with pytest.raises(WsolbenchError, match=r"values must lie in \[0, 1\]"):
        evaluate_maps(maps_dir, meta)
    path.unlink()
    with pytest.raises(WsolbenchError, match="no map for 1 of 6 image ids"):
        evaluate_maps(maps_dir, meta)
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        (empty / name).write_text("")
    with pytest.raises(WsolbenchError, match="lists no image"):
        evaluate_maps(maps_dir, empty)
