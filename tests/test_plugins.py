"""A third-party plugin package, registered through entry points only, used by the unchanged
core: the worked example of docs/plugins.md, extracted from the page itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _write_package(root: Path) -> None:
    """The page's code blocks (by their first-line file comment) and a dist-info with the
    page's entry points, so the example is tested exactly as documented."""
    text = DOC.read_text()
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", text, flags=re.S)
    entry_points = None
    for block in blocks:
        first, _, body = block.partition("\n")
        if first.startswith("# pyproject.toml"):
            entry_points = body
        elif first.startswith("# my_wsol/"):
            path = root / first.removeprefix("# ").strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    (root / "my_wsol" / "__init__.py").write_text("")
    info = root / "my_wsol-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-wsol\nVersion: 0.1\n")
    sections = re.findall(r'\[project\.entry-points\."([^"]+)"\]\n([^\[]+)', entry_points)
    (info / "entry_points.txt").write_text("".join(  # TOML strings -> entry_points.txt
        f"[{group}]\n{lines.replace(chr(34), '').strip()}\n\n" for group, lines in sections))


@pytest.mark.slow
def test_documented_plugins_are_listed_run_and_scored_by_the_core(tmp_path, tiny_synth,
                                                                  tiny_synth_dir):
    from tests.conftest import TINY_SYNTH

    _write_package(tmp_path / "pkg")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "pkg"), os.environ.get(
               "PYTHONPATH", "")])}

    def wsolbench(*args):
        done = subprocess.run([sys.executable, "-m", "wsolbench", *args], capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    assert "gapnet" in wsolbench("list", "methods").split()
    # The page's torch-free presets module ("Presets without torch") imports without torch.
    light = subprocess.run([sys.executable, "-c", "import sys, my_wsol.gap_config as c; "
                            "print(sorted(c.PRESETS.presets), 'torch' in sys.modules)"],
                           capture_output=True, text=True, env=env)
    assert light.stdout.split("\n")[0] == "['synth'] False", light.stdout + light.stderr
    assert "centre_hit" in wsolbench("list", "protocols").split()
    assert "squares" in wsolbench("list", "datasets").split()
    data_sets = [a for k, v in TINY_SYNTH.items() for a in ("--data-set", f"{k}={v}")]
    wsolbench("run", "--method", "gapnet", "--dataset", "synth-cub", "--data-root",
              str(tiny_synth_dir), "--results-dir", str(tmp_path / "results"), *data_sets,
              "--epochs", "1", "--set", "image_size=32", "--set", "resize_size=36",
              "--no-mlflow", "--no-baselines", "--cam-curve-interval", "0.01",
              "--eval-workers", "1", "--protocol", "centre_hit")
    results = json.loads((next((tmp_path / "results" / "runs").rglob("results.json")))
                         .read_text())
    assert results["method"] == "gapnet"
    # The plugin protocol ran in the run's suite, on both evaluated splits.
    for split in ("test", "fullsup"):
        assert 0 <= results["metrics"][split]["centre_hit"]["centre_hit"] <= 100
    # Tabulated by the unchanged core: the default method list comes from the runs on disk.
    (tmp_path / "reported.csv").write_text(
        "method,backbone,input,dataset,metric,value,source,note\n")
    wsolbench("tables", "--results-dir", str(tmp_path / "results"), "--role", "cub=synth-cub",
              "--seeds", "0", "--reported", str(tmp_path / "reported.csv"), "--resamples", "10")
    table2 = (tmp_path / "results" / "tables" / "table2.md").read_text()
    assert "| gapnet | ? | 32 | synth-cub |" in table2
    runs = pd.read_csv(tmp_path / "results" / "tables" / "runs.csv")
    hit = runs[(runs["protocol"] == "centre_hit") & (runs["metric"] == "centre_hit")]
    assert hit["value"].tolist() == [results["metrics"]["test"]["centre_hit"]["centre_hit"]]
    # Re-evaluated from its checkpoint, the plugin protocol named again (`evaluate`).
    checkpoint = Path(results["run_dir"]) / "checkpoint.pt"
    wsolbench("evaluate", "--checkpoint", str(checkpoint), "--dataset", "synth-cub",
              "--data-root", str(tiny_synth_dir), *data_sets, "--results-dir",
              str(tmp_path / "results"), "--no-baselines", "--cam-curve-interval", "0.01",
              "--eval-workers", "1", "--protocol", "centre_hit",
              "--json", str(tmp_path / "again.json"))
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["metrics"]["test"]["centre_hit"] == results["metrics"]["test"]["centre_hit"]
    assert 0 <= results["metrics"]["test"]["maxboxacc_v2"]["mean"] <= 100
    maps = tmp_path / "maps"
    for record in tiny_synth.fullsup:
        (maps / record.image_id).parent.mkdir(parents=True, exist_ok=True)
        raw = np.zeros((8, 8), np.float32)
        x0, y0, x1, y1 = record.boxes[0] * 8 // np.array([*record.size, *record.size])
        raw[(y0 + y1) // 2, (x0 + x1) // 2] = 1.0  # peak at the box centre
        np.save(maps / f"{record.image_id}.npy", raw)
    out = wsolbench("evaluate-maps", "--maps", str(maps), "--maps-kind", "raw", "--metadata",
                    str(tiny_synth.root / "metadata" / "CUB" / "val"), "--protocol",
                    "centre_hit", "--json", str(tmp_path / "hit.json"))
    assert "centre_hit over 6 raw maps" in out
    assert json.loads((tmp_path / "hit.json").read_text())["centre_hit"] == 100.0
