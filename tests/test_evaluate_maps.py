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
    # wsolevaluation's default step, printed.
    assert saved["cam_curve_interval"] == 0.001 and len(saved["curves"]["thresholds"]) == 1000
    assert saved["per_iou"]["30"]["max_acc"] == 100.0  # the maps cover the boxes
    assert "mean" in res.output and "cam_curve_interval 0.001" in res.output


def _first_map(maps_dir, meta):
    first = read_metadata(meta, maps_dir)[0]
    path = next(p for p in (maps_dir / f"{first.image_id}.npy",
                            (maps_dir / first.image_id).with_suffix(".npy")) if p.exists())
    return first.image_id, path


@pytest.mark.parametrize("bad, kind, message", [
    (np.full((224, 224), np.nan), "score", "contains NaN"),
    (np.full((7, 7), np.inf), "raw", "contains infinite values"),
    (np.where(np.eye(14) > 0, -np.inf, 1.0), "raw", "contains infinite values"),
    (np.zeros((10, 10)), "score", r"score maps are 224x224, got \(10, 10\)"),
    (np.full((224, 224), 1.0000001), "score", r"min 1.0000001 max 1.0000001"),
    (np.zeros((224, 224), np.int64), "raw", "expected a float map"),
    (np.zeros((2, 224, 224)), "raw", "expected a 2-D map"),
])
def test_every_map_error_names_the_image_and_the_file(tmp_path, tiny_synth, bad, kind, message):
    meta = tiny_synth.root / "metadata" / "CUB" / "val"
    maps_dir = tmp_path / "maps"
    _save_maps(tiny_synth, maps_dir)
    image_id, path = _first_map(maps_dir, meta)
    np.save(path, bad)
    with pytest.raises(WsolbenchError, match=message) as err:
        evaluate_maps(maps_dir, meta, kind=kind)
    assert repr(image_id) in str(err.value) and str(path) in str(err.value)


def test_missing_maps_and_empty_splits(tmp_path, tiny_synth):
    meta = tiny_synth.root / "metadata" / "CUB" / "val"
    maps_dir = tmp_path / "maps"
    _save_maps(tiny_synth, maps_dir)
    _first_map(maps_dir, meta)[1].unlink()
    with pytest.raises(WsolbenchError, match="no map for 1 of 6 image ids"):
        evaluate_maps(maps_dir, meta)
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        (empty / name).write_text("")
    with pytest.raises(WsolbenchError, match="lists no image"):
        evaluate_maps(maps_dir, empty)


@pytest.mark.parametrize("args, message", [
    (["--cam-curve-interval", "0"], "--cam-curve-interval"),
    (["--cam-curve-interval", "1.5"], "--cam-curve-interval"),
    (["--cam-curve-interval", "-0.1"], "--cam-curve-interval"),
    (["--box-step", "2"], "--cam-curve-interval"),
    (["--protocol", "loc_acc"], "cannot score saved maps"),
    (["--protocol", "maxboxac"], "did you mean 'maxboxacc'"),
])
def test_cli_errors_are_one_line_with_status_2(tmp_path, tiny_synth, args, message):
    import subprocess
    import sys

    meta = tiny_synth.root / "metadata" / "CUB" / "val"
    _save_maps(tiny_synth, tmp_path / "maps")
    done = subprocess.run([sys.executable, "-m", "wsolbench", "evaluate-maps", "--maps",
                           str(tmp_path / "maps"), "--metadata", str(meta), *args],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


RAW_SHAPES = [(1, 1), (7, 7), (14, 14), (300, 500)]


def test_raw_cams_give_the_counters_of_their_score_maps(tmp_path, tiny_synth):
    """Raw CAMs of any size (and constant ones) score exactly like the score maps that
    wsolbench's own conversion makes of them."""
    from wsolbench.evaluation import evaluate
    from wsolbench.registry import get_plugin

    records = list(tiny_synth.fullsup)
    rng = np.random.default_rng(3)
    raws = []
    for k, _ in enumerate(records):
        shape = RAW_SHAPES[k % len(RAW_SHAPES)]
        raws.append(np.full(shape, 3.5) if k == 5 else rng.normal(0, 10, shape))
    for name in ("maxboxacc_v2", "maxboxacc"):
        raw_metric = get_plugin("protocols", name)(cam_curve_interval=0.01)
        score_metric = get_plugin("protocols", name)(cam_curve_interval=0.01, scoremaps=True)
        evaluate([raw_metric], records, raws)
        evaluate([score_metric], records, [scoremap_wsolevaluation(r) for r in raws])
        for key in raw_metric.state:
            np.testing.assert_array_equal(raw_metric.state[key], score_metric.state[key])
    # Through the CLI path too: raw .npy files of those sizes.
    maps_dir = tmp_path / "raw"
    for record, raw in zip(records, raws):
        (maps_dir / record.image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps_dir / f"{record.image_id}.npy", raw.astype(np.float32))
    meta = tiny_synth.root / "metadata" / "CUB" / "val"
    via_files = evaluate_maps(maps_dir, meta, cam_curve_interval=0.01, kind="raw")
    direct = get_plugin("protocols", "maxboxacc_v2")(cam_curve_interval=0.01)
    evaluate([direct], records, [r.astype(np.float32) for r in raws])
    assert via_files["per_iou"] == direct.compute()["per_iou"]
    assert via_files["maps_kind"] == "raw"


def test_streaming_gives_the_in_memory_counters_and_loads_one_chunk_at_a_time(
        tmp_path, tiny_synth, monkeypatch):
    from wsolbench import maps as maps_module
    from wsolbench.evaluation import evaluate
    from wsolbench.registry import get_plugin

    meta = tiny_synth.root / "metadata" / "CUB" / "val"
    in_memory = _save_maps(tiny_synth, tmp_path / "maps")
    records = list(read_metadata(meta, tmp_path / "maps"))
    reference = get_plugin("protocols", "maxboxacc_v2")(cam_curve_interval=0.01,
                                                       scoremaps=True)
    evaluate([reference], records, in_memory)
    loaded = []
    original = maps_module.load_map
    monkeypatch.setattr(maps_module, "load_map",
                        lambda *a: loaded.append(a[1]) or original(*a))
    for workers in (1, 2):
        streamed = evaluate_maps(tmp_path / "maps", meta, cam_curve_interval=0.01, chunk=2,
                                 workers=workers)
        assert streamed["per_iou"] == reference.compute()["per_iou"]
    lazy = maps_module.map_files(tmp_path / "maps", [r.image_id for r in records], "score")
    assert isinstance(lazy[1:4], maps_module.MapFiles) and len(lazy[1:4]) == 3
    loaded.clear()
    list(lazy[2:4])
    assert loaded == [records[2].image_id, records[3].image_id]  # only what was asked


def test_openimages_layout_pxap_end_to_end(tmp_path):
    """synth-openimages (instance masks, ignore regions, masks-form metadata) read by the
    OpenImages reader, scored through `evaluate-maps --protocol pxap`, against an
    independent port of wsolevaluation's MaskEvaluator on the same files."""
    import cv2

    from tests.test_protocols import _pxap_as_wsolevaluation
    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthImageNetConfig, SynthOpenImagesDataset

    cfg = apply_overrides(SynthImageNetConfig(), {
        "num_classes": "3", "train_per_class": "2", "test_per_class": "8",
        "fullsup_per_class": "2", "image_size": "48", "multi_instance_prob": "0.5"})
    data = SynthOpenImagesDataset.load(tmp_path / "data", config=cfg, workers=1)
    assert any(r.ignore_path is not None and len(r.mask_paths) >= 1 for r in data.test)
    ignores = [cv2.imread(str(r.ignore_path), cv2.IMREAD_GRAYSCALE) for r in data.test]
    assert any(i.any() for i in ignores) and not all(i.any() for i in ignores)
    root = data.root / "OpenImages"
    maps_dir = tmp_path / "maps"
    rng = np.random.default_rng(1)
    scores = []
    for record in data.test:
        raw = rng.random((7, 7)).astype(np.float32)
        (maps_dir / record.image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps_dir / f"{record.image_id}.npy", raw)
        scores.append(scoremap_wsolevaluation(raw))
    meta = data.root / "metadata" / "OpenImages" / "test"
    res = CliRunner().invoke(cli, ["evaluate-maps", "--maps", str(maps_dir), "--metadata",
                                   str(meta), "--protocol", "pxap", "--maps-kind", "raw",
                                   "--mask-root", str(root), "--cam-curve-interval", "0.01",
                                   "--json", str(tmp_path / "pxap.json")])
    assert res.exit_code == 0, res.output
    ours = json.loads((tmp_path / "pxap.json").read_text())["pxap"]
    instances = [[cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32)
                  for p in r.mask_paths] for r in data.test]
    expected = _pxap_as_wsolevaluation(scores, instances,
                                       [i.astype(np.float32) for i in ignores], 0.01)
    assert ours == pytest.approx(expected, abs=1e-9)
    # Without --mask-root the masks are looked for beside the maps: the error names both.
    res = CliRunner().invoke(cli, ["evaluate-maps", "--maps", str(maps_dir), "--metadata",
                                   str(meta), "--protocol", "pxap", "--maps-kind", "raw"])
    assert res.exit_code != 0 and "mask file not found" in str(res.exception)
