"""Tables, statistics and bootstrap from hand-written results (no training)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from wsolbench.errors import WsolbenchError
from wsolbench.numbers import as_records
from wsolbench.report import make_tables
from wsolbench.stats import paired_bootstrap, seed_summary
from wsolbench.suite import tabulated_numbers
from wsolbench.tables import latex_escape, read_reported

REPORTED = """method,backbone,input,dataset,metric,value,source,note
TRT,DeiT-B,224,CUB,top1_loc,76.5,src A,
TRT,DeiT-B,224,CUB,top5_loc,88.0,src A,
TRT,DeiT-B,224,CUB,gt_known_loc,91.1,src A,
TRT,DeiT-B,224,CUB,maxboxacc_v2,82.08,src A,single threshold
TRT,DeiT-B,224,ILSVRC,top1_loc,58.8,src A,
"""

# (method, seed) -> paper top1/top5/gt-known, fair top1/top5/gt-known, V2 per IoU (30/50/70)
NUMBERS = {
    ("cam", 0): ((40.0, 50.0, 60.0), (42.0, 52.0, 62.0), (80.0, 60.0, 30.0)),
    ("cam", 1): ((42.0, 54.0, 64.0), (44.0, 54.0, 64.0), (82.0, 62.0, 32.0)),
    ("trt", 0): ((10.0, 20.0, 30.0), (11.0, 21.0, 31.0), (50.0, 20.0, 10.0)),
    ("trt", 1): ((12.0, 22.0, 32.0), (13.0, 23.0, 33.0), (52.0, 22.0, 12.0)),
}


def write_run(root, dataset, method, seed, numbers, n_images=10, config=None,
              select_checkpoint="last"):
    paper, fair, v2 = numbers
    run_dir = root / "runs" / dataset / method / "synth-00000000" / str(seed)
    run_dir.mkdir(parents=True)
    results = {
        "select_checkpoint": select_checkpoint,
        "display_name": {"cam": "CAM", "trt": "TRT", "tscam": "TS-CAM"}[method],
        "config": {"image_size": 64, "cam_threshold": 0.25,
                   **({"backbone": "smallcnn"} if method == "cam" else {"model": "vit_synth"}),
                   **(config or {})},
        "metrics": {
            "test": {"classification": {"top1_cls": 90.0},
                     "paper": {**dict(zip(("top1_loc", "top5_loc", "gt_known_loc"), paper)),
                               "cam_threshold": 0.25},
                     "maxboxacc_v2": {
                         "mean": float(np.mean(v2)),
                         "per_iou": {d: {"max_acc": v} for d, v in zip(("30", "50", "70"), v2)},
                         "curves": {"thresholds": [0.0, 0.5],
                                    **{d: [v / 2, v] for d, v in zip(("30", "50", "70"), v2)}}}},
            "fair": {**dict(zip(("top1_loc", "top5_loc", "gt_known_loc"), fair)),
                     "cam_threshold": 0.3 + 0.1 * seed,
                     "boxacc_v2": {"mean": float(np.mean(v2)) - 1.0,
                                   "per_iou": {d: {"acc": v - 1.0}
                                               for d, v in zip(("30", "50", "70"), v2)}}}}}
    results["metrics"]["numbers"] = as_records(tabulated_numbers(results["metrics"]))
    (run_dir / "results.json").write_text(json.dumps(results))
    rng = np.random.default_rng(seed + (100 if method == "cam" else 0))
    good = method == "cam"
    per_image = pd.DataFrame({
        "image_id": [f"img_{i}.jpg" for i in range(n_images)],
        **{c: rng.random(n_images) < (0.9 if good else 0.1)
           for c in ("top1_loc_paper", "gt_known_paper", "top1_loc_fair", "gt_known_fair",
                     "boxacc_v2_mean")},
        "error_category": "correct"})
    per_image.to_csv(run_dir / "per_image_test.csv", index=False)


@pytest.fixture
def results_tree(tmp_path):
    for (method, seed), numbers in NUMBERS.items():
        write_run(tmp_path, "synth-cub", method, seed, numbers)
    (tmp_path / "reported.csv").write_text(REPORTED)
    return tmp_path


def test_tables_from_fixture_match_expected_latex(results_tree):
    out = results_tree / "tables"
    written = make_tables(results_tree, {"cub": "synth-cub"}, ["cam", "trt"], [0, 1],
                          ["paper", "fair", "wsolevaluation"], results_tree / "reported.csv",
                          out, resamples=500)
    assert {f"table{n}.{e}" for n in (1, 2, 3) for e in ("tex", "csv", "md")} <= set(written)
    tex = (out / "table1.tex").read_text()
    body = tex[tex.index(r"\toprule"):tex.index(r"\bottomrule")]
    # CAM paper: top1 mean(40, 42) = 41.0, std = sqrt(2) = 1.4; TRT fair gt-known 32.0 ± 1.4.
    assert body == (
        "\\toprule\n"
        "Method & Backbone & Input & Data & Top-1 Loc & Top-5 Loc & GT-known Loc & "
        "\\raggedright Protocol / source \\tabularnewline\n"
        "\\midrule\n"
        "TRT$^\\dagger$ & DeiT-B & 224 & CUB-200-2011 & 76.5 & 88.0 & 91.1 & \\raggedright src A \\tabularnewline\n"
        "\\midrule\n"
        "CAM & smallcnn & 64 & synth-cub & 41.0 $\\pm$ 1.4 & 52.0 $\\pm$ 2.8 & "
        "62.0 $\\pm$ 2.8 & \\raggedright paper, 2 seeds, $\\tau$ 0.25 \\tabularnewline\n"
        "CAM & smallcnn & 64 & synth-cub & 43.0 $\\pm$ 1.4 & 53.0 $\\pm$ 1.4 & "
        "63.0 $\\pm$ 1.4 & \\raggedright fair, 2 seeds, $\\tau$ 0.35 (mean) \\tabularnewline\n"
        "TRT & vit\\_\\allowbreak{}synth & 64 & synth-cub & 11.0 $\\pm$ 1.4 & 21.0 $\\pm$ 1.4 & "
        "31.0 $\\pm$ 1.4 & \\raggedright paper, 2 seeds, $\\tau$ 0.25 \\tabularnewline\n"
        "TRT & vit\\_\\allowbreak{}synth & 64 & synth-cub & 12.0 $\\pm$ 1.4 & 22.0 $\\pm$ 1.4 & "
        "32.0 $\\pm$ 1.4 & \\raggedright fair, 2 seeds, $\\tau$ 0.35 (mean) \\tabularnewline\n")
    # The caption never passes a synthetic number off as a CUB number.
    assert "measured on synth-cub" in tex and "not CUB-200-2011 numbers" in tex
    # One caption prefix: LaTeX numbers the table itself; Markdown says it once.
    assert "Table 1" not in tex
    assert (out / "table1.md").read_text().startswith("**Table 1: CUB-200-2011 localization")
    # `code` spans become \texttt, never a backtick that prints as an opening quote.
    assert "`" not in tex and r"\texttt{paper}" in tex
    table2 = (out / "table2.md").read_text()
    assert "| TRT† | DeiT-B | 224 | CUB-200-2011 | – | – | – | 82.08 | src A [1] |" in table2
    assert "[1] single threshold" in table2
    assert "| CAM | smallcnn | 64 | synth-cub | 81.0 ± 1.4 | 61.0 ± 1.4 | 31.0 ± 1.4 | " \
           "57.7 ± 1.4 | wsolevaluation, 2 seeds |" in table2
    # Table 3 has no measured dataset here: reported rows only, and the caption says so.
    table3 = (out / "table3.md").read_text()
    assert "Reported numbers only" in table3 and "| TRT† | DeiT-B | 224 | ILSVRC | 58.8 |" \
        in table3
    stats = pd.read_csv(out / "statistics.csv")
    row = stats[(stats.method == "cam") & (stats.protocol == "paper")
                & (stats.metric == "top1_loc")].iloc[0]
    # t(0.975, df=1) = 12.706: half-width 12.706 * sqrt(2) / sqrt(2) = 12.706
    assert row["ci_high"] - row["mean"] == pytest.approx(12.7062, abs=1e-3)
    boot = pd.read_csv(out / "bootstrap.csv")
    assert set(boot.metric) == {"top1_loc", "gt_known_loc", "maxboxacc_v2"}
    assert (boot.difference > 0).all() and (boot.p_value < 0.05).all()  # cam >> trt
    numbers = pd.read_csv(out / "table1.csv")
    assert set(numbers.protocol) == {"reported", "paper", "fair"}


@pytest.mark.parametrize("layout", ["onecolumn", "twocolumn"])
def test_tex_compiles_with_pdflatex_and_fits_the_page(results_tree, tmp_path, layout):
    """All three tables, with every kind of row and footnote (reported with a numbered note,
    measured over seeds, a long timm name, a test-selected run), compile with pdflatex and
    booktabs in a one- and a two-column article without an overfull box. CI installs
    pdflatex (.ci/run); only a machine outside CI may skip."""
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing in CI: .ci/run must install texlive-latex-recommended")
        pytest.skip("pdflatex is not installed on this machine (CI installs it)")
    write_run(results_tree, "synth-cub", "tscam", 0, NUMBERS[("trt", 0)],
              config={"model": "deit_small_patch16_224", "image_size": 224},
              select_checkpoint="test")
    out = tmp_path / "tex"
    make_tables(results_tree, {"cub": "synth-cub", "ilsvrc": "synth-cub"},
                ["cam", "tscam", "trt"], [0], ["paper", "fair", "wsolevaluation"],
                results_tree / "reported.csv", out, resamples=100)
    options = "[twocolumn]" if layout == "twocolumn" else ""
    doc = tmp_path / "doc.tex"
    doc.write_text(f"\\documentclass{options}{{article}}\\usepackage{{booktabs,graphicx}}"
                   "\\usepackage[T1]{fontenc}\\usepackage[utf8]{inputenc}\\begin{document}"
                   + "".join(f"\\input{{{out / f'table{n}.tex'}}}" for n in (1, 2, 3))
                   + "\\end{document}")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           doc.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Overfull" not in log, log[-3000:]
    warnings = [line for line in log.splitlines() if "Warning" in line
                and "Label(s) may have changed" not in line]  # first pass: expected
    assert not warnings, warnings


def test_missing_run_and_bad_reported_rows_are_named(results_tree):
    with pytest.raises(WsolbenchError, match=r"runs/synth-cub/cam/synth-00000000/5/results.json: missing"):
        make_tables(results_tree, {"cub": "synth-cub"}, ["cam"], [5], ["paper"],
                    results_tree / "reported.csv", results_tree / "t")
    bad = results_tree / "bad.csv"
    bad.write_text(REPORTED + "CAM,VGG16,224,CUB,top1_loc,n/a,src,\n")
    with pytest.raises(WsolbenchError, match=r"bad.csv:7: value 'n/a'"):
        read_reported(bad)
    bad.write_text(REPORTED + "CAM,VGG16,224,CUB,top1_loc,44.2,,\n")
    with pytest.raises(WsolbenchError, match=r"bad.csv:7: a reported number needs its source"):
        read_reported(bad)


def test_latex_escape():
    assert latex_escape("a_b & 5% #1 ± †") == r"a\_\allowbreak{}b \& 5\% \#1 $\pm$ $^\dagger$"
    assert latex_escape("use `paper` ‡") == r"use \texttt{paper} $^\ddagger$"
    assert latex_escape("IoU >= 0.5, > 0.5") == r"IoU $\geq$ 0.5, $>$ 0.5"


def test_seed_summary_by_hand():
    s = seed_summary([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3
    assert s["ci_high"] - 2.0 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    one = seed_summary([5.0])
    assert one["std"] == 0.0 and np.isnan(one["ci_low"])


def test_paired_bootstrap_against_a_plain_loop():
    rng = np.random.default_rng(1)
    a = (rng.random(200) < 0.6).astype(float)
    b = (rng.random(200) < 0.5).astype(float)
    result = paired_bootstrap(a, b, resamples=4000, seed=3)
    # An independent resampler: explicit index draws.
    draw = np.random.default_rng(7)
    loop = np.array([np.mean(a[i] - b[i]) * 100 for i in
                     (draw.integers(0, 200, 200) for _ in range(4000))])
    assert result["difference"] == pytest.approx((a.mean() - b.mean()) * 100)
    assert result["ci_low"] == pytest.approx(np.quantile(loop, 0.025), abs=1.5)
    assert result["ci_high"] == pytest.approx(np.quantile(loop, 0.975), abs=1.5)
    same = paired_bootstrap(a, a, resamples=1000)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(a, b[:10])


def test_baselines_are_rows_of_every_table_and_csv(results_tree):
    """Baselines recorded by the seed-0 runs (and the whole-image box every run scores)
    appear once each, marked, in Tables 1-2, statistics.csv and runs.csv (before, they were
    in no table)."""
    baseline = {"maxboxacc_v2": 12.0, "per_iou": {"30": 30.0, "50": 5.0, "70": 1.0},
                "fair": {"gt_known_loc": 8.0, "cam_threshold": 0.4,
                         "boxacc_v2": {"mean": 11.0, "per_iou": {
                             d: {"acc": v, "threshold": 0.3} for d, v in
                             (("30", 29.0), ("50", 4.0), ("70", 0.0))}}}}
    whole_v2 = {"mean": 2.0, "per_iou": {"30": 6.0, "50": 0.0, "70": 0.0}}
    for method in ("cam", "trt"):
        path = results_tree / "runs/synth-cub" / method / "synth-00000000/0/results.json"
        results = json.loads(path.read_text())
        results["metrics"]["baselines"] = {"centre_gaussian": baseline}
        results["metrics"]["test"]["maxboxacc_v2"]["whole_image"] = whole_v2
        results["metrics"]["test"]["paper"]["whole_image"] = {"gt_known_loc": 1.0}
        results["metrics"]["numbers"] = as_records(tabulated_numbers(results["metrics"]))
        path.write_text(json.dumps(results))
    out = results_tree / "tables"
    written = make_tables(results_tree, {"cub": "synth-cub"}, ["cam", "trt"], [0, 1],
                          ["paper", "fair", "wsolevaluation"], results_tree / "reported.csv",
                          out, resamples=200)
    runs = pd.read_csv(written["runs.csv"])
    centre = runs[runs["method"] == "baseline:centre_gaussian"]
    # One copy (from the first method's seed-0 run), not one per method.
    assert len(centre[(centre["protocol"] == "wsolevaluation")
                      & (centre["metric"] == "maxboxacc_v2")]) == 1
    stats = pd.read_csv(written["statistics.csv"])
    row = stats[(stats["method"] == "baseline:centre_gaussian")
                & (stats["protocol"] == "fair") & (stats["metric"] == "gt_known_loc")]
    assert row["mean"].tolist() == [8.0] and row["n"].tolist() == [1]
    table2 = written["table2.md"].read_text()
    assert "centre Gaussian (baseline)" in table2 and "whole-image box (baseline)" in table2
    assert "| 30.0 | 5.0 | 1.0 | 12.0 |" in table2.replace("  ", " ")
    table1 = written["table1.tex"].read_text()
    assert "centre Gaussian (baseline)" in table1 and "no\nclassifier" not in table1
    assert "Baselines (marked" in written["table1.md"].read_text()
