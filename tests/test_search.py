"""Hyperparameter search selected on train-fullsup (wsolbench.search, `wsolbench select`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import default_workflow_config
from wsolbench.errors import InputFileError, WsolbenchError
from wsolbench.search import (
    read_selection,
    search_candidates,
    select_candidate,
    selection_markdown,
    selection_table,
)


def test_a_grid_expands_to_its_points_in_order_over_the_entrys_set():
    entry = {"preset": "synth", "set": {"epochs": 5, "lr": 1.0},
             "search": {"lr": [0.1, 0.01], "batch_size": [16, 32]}}
    points = search_candidates(entry)
    assert [(p["set"]["lr"], p["set"]["batch_size"]) for p in points] == [
        (0.1, 16), (0.1, 32), (0.01, 16), (0.01, 32)]  # first key slowest
    assert all(p["set"]["epochs"] == 5 and p["preset"] == "synth" and "search" not in p
               for p in points)
    assert entry["set"] == {"epochs": 5, "lr": 1.0}  # the config is not modified
    plain = {"preset": "synth", "set": {"epochs": 5}}
    assert search_candidates(plain) == [plain]


def test_the_default_config_gives_every_method_the_same_search_budget():
    """One budget for every method (docs/search.md): the same number of candidates, each a
    distinct run, on every dataset of the default workflow."""
    from wsolbench.workflow_check import workflow_candidates

    config = default_workflow_config()
    for dataset in config["datasets"]:
        counts = {}
        for method in config["methods"]:
            keys = [key for key, _ in workflow_candidates(config, dataset, method)]
            assert len(set(keys)) == len(keys), (dataset, method, keys)
            counts[method] = len(keys)
        assert len(set(counts.values())) == 1 and min(counts.values()) > 1, (dataset, counts)


def write_run(results: Path, key: str, seed: int, lr: float, heldout: float | None,
              test: float, dataset: str = "synth-cub", method: str = "cam") -> Path:
    """A results.json with only what a selection reads (as `wsolbench run` nests it)."""
    metrics = {"test": {"maxboxacc_v2": {"mean": test}}}
    if heldout is not None:
        metrics["fullsup"] = {"maxboxacc_v2": {"mean": heldout}}
    path = results / "runs" / dataset / method / key / str(seed) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": {"lr": lr, "epochs": 5}, "metrics": metrics}))
    return path


# Held-out (train-fullsup) and test MaxBoxAccV2 per candidate and seed: "b" is best on
# train-fullsup (mean 60), "c" best on test; "a" ties "b" on seed 0 only.
GRID = {"a": (1e-2, [60.0, 50.0], [40.0, 41.0]), "b": (1e-3, [60.0, 60.0], [45.0, 47.0]),
        "c": (1e-4, [55.0, 56.0], [70.0, 71.0])}


def write_grid(results: Path, grid=GRID) -> None:
    for key, (lr, heldout, test) in grid.items():
        for seed, (h, t) in enumerate(zip(heldout, test)):
            write_run(results, f"synth-{key}", seed, lr, h, t)


def test_selection_takes_the_best_mean_on_train_fullsup_never_test(tmp_path):
    write_grid(tmp_path)
    record = select_candidate(tmp_path, "synth-cub", "cam",
                              ["synth-a", "synth-b", "synth-c"], [0, 1])
    assert record["selected_run_key"] == "synth-b"
    assert record["selected_settings"] == {"lr": 1e-3}  # only what varied
    by_key = {c["run_key"]: c for c in record["candidates"]}
    assert by_key["synth-a"]["heldout_mean"] == 55.0
    assert by_key["synth-c"]["test"] == [70.0, 71.0]  # recorded, not chosen
    assert by_key["synth-c"]["settings"] == {"lr": 1e-4}


def test_a_tie_goes_to_the_earlier_grid_point(tmp_path):
    write_grid(tmp_path, {"x": (1e-3, [50.0], [1.0]), "y": (1e-4, [50.0], [99.0])})
    keys = ["synth-x", "synth-y"]
    assert select_candidate(tmp_path, "synth-cub", "cam", keys, [0])["selected_run_key"] == \
        "synth-x"
    assert select_candidate(tmp_path, "synth-cub", "cam", keys[::-1], [0])[
        "selected_run_key"] == "synth-y"


def test_selection_refuses_missing_runs_and_runs_without_train_fullsup(tmp_path):
    write_grid(tmp_path)
    with pytest.raises(WsolbenchError, match=r"synth-a/2/results.json: missing"):
        select_candidate(tmp_path, "synth-cub", "cam", ["synth-a", "synth-b"], [0, 1, 2])
    path = write_run(tmp_path, "synth-d", 0, 1e-5, None, 30.0)
    with pytest.raises(InputFileError, match=r"synth-d/0/results.json: no train-fullsup "
                                             r"MaxBoxAccV2"):
        select_candidate(tmp_path, "synth-cub", "cam", ["synth-a", "synth-d"], [0])
    path.write_text('{"metrics": ')
    with pytest.raises(InputFileError, match=r"synth-d/0/results.json:1: not valid JSON"):
        select_candidate(tmp_path, "synth-cub", "cam", ["synth-d"], [0])
    with pytest.raises(WsolbenchError, match="run keys repeat"):
        select_candidate(tmp_path, "synth-cub", "cam", ["synth-a", "synth-a"], [0])


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from wsolbench.cli import main

    monkeypatch.setattr(sys, "argv", ["wsolbench", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_select_command_writes_the_record_and_tables_read_it(tmp_path, monkeypatch, capsys):
    write_grid(tmp_path)
    out = tmp_path / "selection" / "cam.json"
    code, stdout, err = _main(monkeypatch, capsys, "select", "--results-dir", str(tmp_path),
                              "--dataset", "synth-cub", "--method", "cam",
                              "--run-key", "synth-a", "--run-key", "synth-b",
                              "--run-key", "synth-c", "--seeds", "0,1", "--out", str(out))
    assert code == 0, err
    assert "* synth-b  lr=0.001  train-fullsup 60.00  test 46.00" in stdout
    assert json.loads(out.read_text())["selected_run_key"] == "synth-b"
    table = selection_table([read_selection(out)])
    assert list(table.run_key) == ["synth-a", "synth-b", "synth-c"]
    assert list(table.selected) == [False, True, False]
    assert table.loc[1, "heldout_maxboxacc_v2"] == 60.0 and table.loc[1, "heldout_std"] == 0.0
    assert table.loc[2, "test_std"] == pytest.approx(pd.Series([70.0, 71.0]).std())
    assert "every candidate ran 2 seeds (the search seeds" in selection_markdown(table)
    one_seed = select_candidate(tmp_path, "synth-cub", "cam", ["synth-a", "synth-b"], [0])
    assert "every candidate ran 1 seed (the search seeds" in selection_markdown(
        selection_table([one_seed]))


def test_select_command_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch,
                                                                 capsys):
    write_grid(tmp_path)
    write_run(tmp_path, "synth-d", 0, 1e-5, None, 30.0)
    out = tmp_path / "cam.json"
    code, _, err = _main(monkeypatch, capsys, "select", "--results-dir", str(tmp_path),
                         "--dataset", "synth-cub", "--method", "cam", "--run-key", "synth-a",
                         "--run-key", "synth-d", "--out", str(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "synth-d/0/results.json: no train-fullsup MaxBoxAccV2" in err
    assert not out.exists()
