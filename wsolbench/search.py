"""Hyperparameter search selected on the held-out train-fullsup split (docs/search.md).

wsolevaluation's rule (Choe et al., CVPR 2020): every method gets the same search budget,
and its hyperparameters are chosen by localization on train-fullsup — never on test. A
workflow method with a `search:` grid runs every candidate for every seed; the candidate
with the highest mean train-fullsup MaxBoxAccV2 over the seeds is the one the tables show.
This module expands the grid, picks the candidate and tabulates the search; the workflow
(workflow/rules/search.smk) and `wsolbench select` call it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsolbench.errors import InputFileError, WsolbenchError
from wsolbench.runpaths import RunPaths
from wsolbench.stats import seed_summary

SELECTION_SPLIT = "fullsup"          # results.json `metrics` key of train-fullsup
SELECTION_METRIC = "maxboxacc_v2"    # wsolevaluation's box metric, mean over IoU 30/50/70
REPORTED_SPLIT = "test"              # recorded beside the choice, never used for it


def search_candidates(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The method entries a workflow `methods.<name>` entry stands for, in grid order.

    Without `search:` that is the entry itself (less nothing). With `search: {key: [values]}`
    it is one entry per point of the grid (the cartesian product, first key slowest), each
    with `set` = the entry's `set` updated by the point's values and no `search`."""
    grid = entry.get("search") or {}
    base = {k: v for k, v in entry.items() if k != "search"}
    if not grid:
        return [base]
    keys = list(grid)
    candidates = []
    for values in itertools.product(*(grid[k] for k in keys)):
        candidates.append({**base, "set": {**(base.get("set") or {}), **dict(zip(keys, values))}})
    return candidates


def _score(results: dict[str, Any], split: str, path: Path) -> float:
    try:
        return float(results["metrics"][split][SELECTION_METRIC]["mean"])
    except (KeyError, TypeError, ValueError):
        what = "train-fullsup" if split == SELECTION_SPLIT else split
        raise InputFileError(path, f"no {what} MaxBoxAccV2 (metrics.{split}."
                                   f"{SELECTION_METRIC}.mean); a search selects on the "
                                   "train-fullsup split, so its dataset needs one") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object (a run's results.json, a selection record)."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputFileError(path, f"not valid JSON ({exc.msg})", exc.lineno) from None
    if not isinstance(record, dict):
        raise InputFileError(path, "not a wsolbench record (the JSON is not an object)")
    return record


def _searched_settings(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per candidate, the resolved config values that differ between the candidates (what
    the search varied, read back from the runs rather than trusted from the caller)."""
    keys = sorted({k for c in configs for k in c})
    varied = [k for k in keys
              if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    return [{k: c.get(k) for k in varied} for c in configs]


def select_candidate(results_dir: Path, dataset: str, method: str, run_keys: list[str],
                     seeds: list[int]) -> dict[str, Any]:
    """Read every candidate's runs and choose one; returns the selection record.

    The record (`wsolbench select --out`) names the `selected_run_key`, the criterion, and per
    candidate its run key, the settings the search varied, and the train-fullsup and test
    MaxBoxAccV2 of every seed. Ties go to the earlier candidate (grid order). A missing run
    or a results file without train-fullsup numbers is an error naming the file."""
    if not run_keys or not seeds:
        raise WsolbenchError(f"{dataset}/{method}: a search needs at least one run key and "
                             "one seed")
    if len(set(run_keys)) != len(run_keys):
        raise WsolbenchError(f"{dataset}/{method}: run keys repeat ({', '.join(run_keys)}); "
                             "two grid points resolve to the same config")
    candidates, configs = [], []
    for key in run_keys:
        heldout, test = [], []
        for seed in seeds:
            paths = RunPaths(Path(results_dir), dataset, method, key, int(seed))
            path = paths.require()
            results = _read_json_object(path)
            heldout.append(_score(results, SELECTION_SPLIT, path))
            test.append(_score(results, REPORTED_SPLIT, path))
        configs.append(results.get("config") or {})
        candidates.append({"run_key": key, "seeds": [int(s) for s in seeds],
                           "heldout": heldout, "heldout_mean": float(np.mean(heldout)),
                           "test": test, "test_mean": float(np.mean(test))})
    for candidate, settings in zip(candidates, _searched_settings(configs)):
        candidate["settings"] = settings
    # np.argmax returns the first maximum: ties go to the earlier grid point.
    best = int(np.argmax([c["heldout_mean"] for c in candidates]))
    return {"dataset": dataset, "method": method,
            "criterion": f"mean over seeds of {SELECTION_METRIC} on train-fullsup",
            "selected_run_key": candidates[best]["run_key"],
            "selected_settings": candidates[best]["settings"],
            "candidates": candidates}


def read_selection(path: Path) -> dict[str, Any]:
    """A selection record written by `wsolbench select`, checked for the keys used."""
    record = _read_json_object(Path(path))
    missing = [k for k in ("dataset", "method", "selected_run_key", "candidates")
               if k not in record]
    if missing:
        raise InputFileError(path, f"not a wsolbench selection record (missing "
                                   f"{', '.join(missing)})")
    return record


def selection_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per candidate of every selection record (`read_selection`): what was tried,
    its held-out and test MaxBoxAccV2 (mean and std over seeds), and whether it was
    selected."""
    rows = []
    for record in records:
        for candidate in record["candidates"]:
            heldout, test = seed_summary(candidate["heldout"]), seed_summary(candidate["test"])
            rows.append({
                "dataset": record["dataset"], "method": record["method"],
                "run_key": candidate["run_key"],
                "settings": ", ".join(f"{k}={v}" for k, v in candidate["settings"].items()),
                "selected": candidate["run_key"] == record["selected_run_key"],
                "seeds": heldout["n"],
                "heldout_maxboxacc_v2": heldout["mean"], "heldout_std": heldout["std"],
                "test_maxboxacc_v2": test["mean"], "test_std": test["std"]})
    return pd.DataFrame(rows)


def selection_markdown(table: pd.DataFrame) -> str:
    """The search as a Markdown table (selected rows in bold), with what it means."""
    counts = sorted({int(n) for n in table.seeds})
    ran = (f"{counts[0]} seed{'s' if counts[0] != 1 else ''}" if len(counts) == 1
           else f"{' or '.join(map(str, counts))} seeds")
    intro = (f"Hyperparameter search: every candidate ran {ran} (the search seeds; mean ± std "
             "over them below); the selected one has the highest mean MaxBoxAccV2 on "
             "train-fullsup (test shown for the record, never used to choose), and the "
             "tables show every seed of it.")
    lines = [intro, "", "| dataset | method | settings | train-fullsup | test | selected |",
             "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        mark = "**yes**" if row.selected else ""
        lines.append(f"| {row.dataset} | {row.method} | {row.settings} | "
                     f"{row.heldout_maxboxacc_v2:.1f} ± {row.heldout_std:.1f} | "
                     f"{row.test_maxboxacc_v2:.1f} ± {row.test_std:.1f} | {mark} |")
    return "\n".join(lines) + "\n"
