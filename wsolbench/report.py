"""`wsolbench tables` / `wsolbench figures`: runs -> Tables 1–3 (LaTeX, CSV, Markdown),
statistics files and report figures.

Writes into `out/`: `table{1,2,3}.{tex,csv,md,html}`, `statistics.csv` (mean, std, 95 % CI
over seeds for every number and protocol), `runs.csv` (every number of every run),
`bootstrap.csv` (paired bootstrap over test images for every pair of methods on each dataset;
only its header with a single method). `make_figures` writes, per dataset, the qualitative
grid, BoxAcc-vs-threshold curves and error categories (PNG + PDF, errors also as CSV). Every
file is written atomically.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_write_text
from wsolbench.runpaths import RunPaths, chosen_key
from wsolbench.stats import hierarchical_bootstrap, paired_bootstrap, seed_welch_test
from wsolbench.tables import (
    TABLES,
    build_table,
    collect_runs,
    read_reported,
    summarize_seeds,
    to_html,
    to_latex,
    to_markdown,
)

PER_IMAGE_FILE = "per_image_test.csv"
# Per-image columns compared between methods, with the protocol each belongs to.
BOOTSTRAP_METRICS = {"top1_loc_paper": ("paper", "top1_loc"),
                     "gt_known_paper": ("paper", "gt_known_loc"),
                     "top1_loc_fair": ("fair", "top1_loc"),
                     "gt_known_fair": ("fair", "gt_known_loc"),
                     "boxacc_v2_mean": ("wsolevaluation", "maxboxacc_v2")}


def per_image_by_seed(results_dir: Path, dataset: str, method: str, seeds: list[int],
                      run_keys: dict[str, str] | None = None) -> tuple[pd.Index, np.ndarray]:
    """`(image ids, correctness [seeds, images, metrics])`: each seed's per-image 0/1
    columns of `BOOTSTRAP_METRICS`, in one image order."""
    frames = []
    for seed in seeds:
        path = _run(results_dir, dataset, method, seed, run_keys).require(PER_IMAGE_FILE)
        frame = pd.read_csv(path, index_col="image_id")
        missing = set(BOOTSTRAP_METRICS) - set(frame.columns)
        if missing:
            raise WsolbenchError(f"{path}: missing columns {sorted(missing)}")
        if frames and not frame.index.equals(frames[0].index):
            raise WsolbenchError(f"{path}: other test images than seed {seeds[0]}'s run")
        frames.append(frame[list(BOOTSTRAP_METRICS)].astype(float))
    return frames[0].index, np.stack([f.to_numpy() for f in frames])


BOOTSTRAP_COLUMNS = ("dataset", "method_a", "method_b", "protocol", "metric", "seeds_averaged",
                     "difference", "ci_low", "ci_high", "p_value", "n_images", "resamples",
                     "seeds_a", "seeds_b", "hier_ci_low", "hier_ci_high", "hier_p_value",
                     "seed_welch_p_value", "verdict")


def bootstrap_table(results_dir: Path, datasets: list[str], methods: list[str],
                    seeds: list[int], resamples: int = 10_000,
                    run_keys: dict[str, str] | None = None, alpha: float = 0.05
                    ) -> pd.DataFrame:
    """Every method pair on every dataset (same test images), three ways (docs/protocols.md
    §"Statistics"): the paired image bootstrap of seed-averaged correctness (`ci_*`,
    `p_value`: image sampling only), the hierarchical bootstrap over seeds then images
    (`hier_*`: seed variance too), Welch's t-test on the seed-level scores
    (`seed_welch_p_value`). `verdict` follows the hierarchical bootstrap, the test the
    tables and README cite."""
    rows = []
    for dataset in datasets:
        scores = {m: per_image_by_seed(results_dir, dataset, m, seeds, run_keys)
                  for m in methods}
        for a, b in itertools.combinations(methods, 2):
            (index_a, per_a), (index_b, per_b) = scores[a], scores[b]
            if not index_a.equals(index_b):
                raise WsolbenchError(f"{dataset}: {a} and {b} were evaluated on different "
                                     "test images; a paired comparison needs the same ones")
            for k, (column, (protocol, metric)) in enumerate(BOOTSTRAP_METRICS.items()):
                image = paired_bootstrap(per_a[:, :, k].mean(axis=0),
                                         per_b[:, :, k].mean(axis=0), resamples=resamples)
                hier = hierarchical_bootstrap(per_a[:, :, k], per_b[:, :, k],
                                              resamples=resamples)
                welch = seed_welch_test(per_a[:, :, k].mean(axis=1) * 100.0,
                                        per_b[:, :, k].mean(axis=1) * 100.0)
                rows.append({"dataset": dataset, "method_a": a, "method_b": b,
                             "protocol": protocol, "metric": metric,
                             "seeds_averaged": len(seeds), **image,
                             "seeds_a": len(per_a), "seeds_b": len(per_b),
                             "hier_ci_low": hier["ci_low"], "hier_ci_high": hier["ci_high"],
                             "hier_p_value": hier["p_value"], "seed_welch_p_value": welch,
                             "verdict": "differs" if hier["p_value"] < alpha
                             else "no significant difference"})
    # One method has no pair: an empty table with its header (a declared workflow output).
    return pd.DataFrame(rows, columns=BOOTSTRAP_COLUMNS)


def make_tables(results_dir: Path, roles: dict[str, str], methods: list[str],
                seeds: list[int], protocols: list[str], reported_csv: Path, out: Path,
                resamples: int = 10_000, run_keys: dict[str, str] | None = None
                ) -> dict[str, Path]:
    """Build and write everything; returns `{name: path}` of the files written.

    Args:
        roles: `{"cub": dataset, "ilsvrc": dataset}` — which measured dataset stands in each
            real dataset's table (a role may be missing: that table shows reported rows only).
        protocols: measured protocols to show (`paper`, `fair`, `wsolevaluation`).
        run_keys: `{method: run key}` where a method has runs of several configs.
    """
    unknown = set(roles) - {"cub", "ilsvrc"}
    if unknown:
        raise WsolbenchError(f"unknown table role(s) {sorted(unknown)}; use cub or ilsvrc")
    datasets = list(dict.fromkeys(roles.values()))
    runs = collect_runs(results_dir, datasets, methods, seeds, run_keys)
    summary = summarize_seeds(runs)
    reported = read_reported(reported_csv)
    out = Path(out)
    written: dict[str, Path] = {}

    def write(name: str, text: str) -> None:
        atomic_write_text(out / name, text)
        written[name] = out / name

    for spec in TABLES:
        table = build_table(spec, summary, reported, roles.get(spec.role), protocols)
        stem = f"table{spec.number}"
        write(f"{stem}.tex", to_latex(table))
        write(f"{stem}.md", to_markdown(table))
        write(f"{stem}.csv", table.numbers.to_csv(index=False))
        write(f"{stem}.html", to_html(table))
    write("statistics.csv", summary.to_csv(index=False))
    write("runs.csv", runs.to_csv(index=False))
    write("bootstrap.csv", bootstrap_table(results_dir, datasets, methods, seeds,
                                           resamples, run_keys).to_csv(index=False))
    return written


def significance_lines(bootstrap: pd.DataFrame) -> list[str]:
    """Plain-language lines for the summary: which differences hold once seed variance is
    counted (hierarchical bootstrap), with the image-only interval and Welch's p beside."""
    lines = []
    for row in bootstrap.itertuples(index=False):
        lines.append(f"{row.dataset} {row.protocol} {row.metric}: {row.method_a} - "
                     f"{row.method_b} = {row.difference:+.1f} points, seeds+images 95 % CI "
                     f"[{row.hier_ci_low:+.1f}, {row.hier_ci_high:+.1f}] p = "
                     f"{row.hier_p_value:.3g} ({row.verdict}); images only "
                     f"[{row.ci_low:+.1f}, {row.ci_high:+.1f}]; Welch over "
                     f"{row.seeds_a}+{row.seeds_b} seeds p = {row.seed_welch_p_value:.3g}")
    return lines


# ------------------------------------------------------------------------------ figures


def _run(results_dir: Path, dataset: str, method: str, seed: int,
         run_keys: dict[str, str] | None) -> RunPaths:
    return RunPaths.find(results_dir, dataset, method, seed, chosen_key(run_keys, dataset, method))


def boxacc_curve_frame(results_dir: Path, dataset: str, methods: list[str], seeds: list[int],
                       run_keys: dict[str, str] | None = None) -> pd.DataFrame:
    """Long frame of MaxBoxAccV2's per-threshold accuracy on test (method, seed, iou, tau)."""
    frames = []
    for method in methods:
        for seed in seeds:
            path = _run(results_dir, dataset, method, seed, run_keys).require()
            curves = json.loads(path.read_text())["metrics"]["test"]["maxboxacc_v2"]["curves"]
            thresholds = curves.pop("thresholds")
            for iou, values in curves.items():
                frames.append(pd.DataFrame({"method": method, "seed": seed, "iou": int(iou),
                                            "threshold": thresholds, "boxacc": values}))
    return pd.concat(frames, ignore_index=True)


def error_frame(results_dir: Path, dataset: str, methods: list[str], seeds: list[int],
                run_keys: dict[str, str] | None = None) -> pd.DataFrame:
    """Share (%) of each error category per method, pooled over seeds."""
    from wsolbench.per_image import ERROR_CATEGORIES

    rows = []
    for method in methods:
        categories = pd.concat([
            pd.read_csv(_run(results_dir, dataset, method, s, run_keys).require(PER_IMAGE_FILE),
                        usecols=["error_category"])["error_category"] for s in seeds])
        counts = categories.value_counts().reindex(list(ERROR_CATEGORIES), fill_value=0)
        rows += [{"dataset": dataset, "method": method, "category": c, "count": int(n),
                  "percent": 100.0 * n / len(categories)} for c, n in counts.items()]
    return pd.DataFrame(rows)


def make_figures(results_dir: Path, data, methods: list[str], seeds: list[int], out: Path,
                 n_images: int = 6, run_keys: dict[str, str] | None = None) -> list[Path]:
    """Qualitative grid (first seed), BoxAcc curves and error categories for one dataset."""
    from wsolbench.evaluation import make_batch
    from wsolbench.figures import boxacc_curves, error_chart, method_grid
    from wsolbench.suite import protocol_from_results

    out = Path(out)
    dataset = data.name
    test = data.test
    picks = [int(i) for i in np.linspace(0, len(test) - 1, min(n_images, len(test)))]
    drawings = {}
    missing = [run_dir / name for method in methods for seed in seeds
               for run_dir in [_run(results_dir, dataset, method, seed, run_keys).dir]
               for name in ("predictions_test.npz", "results.json", PER_IMAGE_FILE)
               if not (run_dir / name).is_file()]
    if missing:
        raise WsolbenchError(f"{missing[0]}: missing ({len(missing)} run files missing in "
                             f"all); figures need finished runs: `wsolbench run --dataset "
                             f"{dataset} ...` first")
    for method in methods:
        run_dir = _run(results_dir, dataset, method, seeds[0], run_keys).dir
        with np.load(run_dir / "predictions_test.npz") as saved:
            ids = [str(i) for i in saved["image_ids"]]
            if ids != [r.image_id for r in test]:
                raise WsolbenchError(f"{run_dir}/predictions_test.npz: image ids differ from "
                                     f"the {dataset} test split; was it run on other data?")
            maps = saved["maps"][picks]
        results = json.loads((run_dir / "results.json").read_text())
        paper = protocol_from_results(results, "paper")
        drawings[method] = paper.predicted_boxes(make_batch([test[i] for i in picks], maps))
    paths = method_grid([test[i] for i in picks], drawings, out / "qualitative",
                        f"{dataset}, seed {seeds[0]}")
    paths += boxacc_curves(boxacc_curve_frame(results_dir, dataset, methods, seeds, run_keys),
                           out / "boxacc_curves",
                           f"{dataset}: MaxBoxAccV2 curves on test ({len(seeds)} seeds)")
    errors = error_frame(results_dir, dataset, methods, seeds, run_keys)
    atomic_write_text(out / "errors.csv", errors.to_csv(index=False))
    paths.append(out / "errors.csv")
    paths += error_chart(errors, out / "errors",
                         f"{dataset}: error categories of the top-1 box ({len(seeds)} seeds)")
    return paths
