"""The TRT paper's Tables 1–3 from wsolbench's own runs, beside the numbers papers report.

Data flow: `results.json` of every (dataset, method, seed) -> one long pandas frame
(`collect_runs`: one row per number, each naming its protocol) -> mean ± std and 95 % CI over
seeds (`wsolbench.stats`) -> one wide frame per table -> LaTeX (booktabs), CSV, Markdown.

Every measured row names its protocol:
- `paper`: the official TS-CAM/TRT evaluation rules at the config's fixed CAM threshold;
- `fair`: the CAM threshold chosen on the held-out train-fullsup split, applied to test;
- `wsolevaluation`: MaxBoxAccV2 exactly as clovaai/wsolevaluation defines it (threshold
  searched on the evaluated split).
Reported rows come from `results/reference/reported.csv` (with their source) and are marked
with a dagger. A synthetic dataset is named as such in the data column and the caption: a
synth number is never shown as a CUB or ILSVRC number.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsolbench.errors import InputFileError, WsolbenchError
from wsolbench.numbers import read_numbers
from wsolbench.runpaths import RUNS_DIR, RunPaths, chosen_key
from wsolbench.stats import seed_summary

REAL_NAMES = {"cub": "CUB-200-2011", "ilsvrc": "ILSVRC"}
REPORTED_COLUMNS = ("method", "backbone", "input", "dataset", "metric", "value", "source", "note")
PROTOCOL_NOTES = {
    "paper": "paper: the official TS-CAM/TRT evaluation rules at a fixed CAM threshold "
             "(largest contour; Top-k needs IoU > 0.5, GT-known IoU >= 0.5), final checkpoint "
             "unless marked otherwise.",
    "fair": "fair: CAM threshold chosen on the held-out train-fullsup split (best GT-known "
            "Loc; per IoU for MaxBoxAccV2), applied to the test split.",
    "wsolevaluation": "wsolevaluation: MaxBoxAccV2 as clovaai/wsolevaluation defines it "
                      "(all contours, best over GT boxes, threshold searched on the "
                      "evaluated split).",
}
TEST_SELECTION_MARK = "‡"
TEST_SELECTION_NOTE = (f"{TEST_SELECTION_MARK} checkpoint chosen on the test split, as the "
                       "official code does (`--select-checkpoint test`): these numbers leak "
                       "the test split and are not comparable with the others.")
REPORTED_NOTE = ("† reported by the cited source on the real dataset (not re-run); numbers "
                 "use that source's own protocol, typically `paper`.")


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables: which dataset role, which metric columns."""

    number: int
    role: str  # "cub" or "ilsvrc": the real dataset the table is about
    title: str
    columns: tuple[tuple[str, str], ...]  # (metric key, column header)
    protocols: tuple[str, ...]  # measured protocols this table can show


TABLES = (
    TableSpec(1, "cub", "localization accuracy",
              (("top1_loc", "Top-1 Loc"), ("top5_loc", "Top-5 Loc"),
               ("gt_known_loc", "GT-known Loc")), ("paper", "fair")),
    TableSpec(2, "cub", "MaxBoxAccV2",
              (("maxboxacc_v2_30", "IoU 30"), ("maxboxacc_v2_50", "IoU 50"),
               ("maxboxacc_v2_70", "IoU 70"), ("maxboxacc_v2", "Mean")),
              ("wsolevaluation", "fair")),
    TableSpec(3, "ilsvrc", "localization accuracy",
              (("top1_loc", "Top-1 Loc"), ("top5_loc", "Top-5 Loc"),
               ("gt_known_loc", "GT-known Loc")), ("paper", "fair")),
)


# ------------------------------------------------------------------------------ collecting


BASELINE_PREFIX = "baseline:"
BASELINE_NAMES = {"whole_image": "whole-image box", "centre_gaussian": "centre Gaussian",
                  "saturation": "colour saturation", "local_contrast": "local contrast",
                  "head_only": "head only (part detector)"}
BASELINE_NOTE = ("Baselines (marked “baseline”): maps that use no training — whole-image "
                 "box, centre Gaussian, colour saturation, local contrast, and the head mask "
                 "(a perfect part detector) — scored with the class given; they have no "
                 "classifier, so Top-1/Top-5 Loc stay empty.")


def _backbone(config: dict[str, Any]) -> str:
    return str(config.get("backbone") or config.get("model") or "?")


def collect_runs(results_dir: Path, datasets: list[str], methods: list[str],
                 seeds: list[int], run_keys: dict[str, str] | None = None) -> pd.DataFrame:
    """Long frame of every number of every requested run (a missing run is an error).
    `run_keys` picks a method's config where it has runs of several (`RunPaths.find`)."""
    rows, baseline_rows = [], {}
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
                paths = RunPaths.find(results_dir, dataset, method, seed,
                                      chosen_key(run_keys, dataset, method))
                path = paths.require()
                try:
                    results = json.loads(path.read_text())
                    config = results["config"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise WsolbenchError(f"{path}: not a complete wsolbench results file "
                                         f"({type(exc).__name__}: {exc})") from None
                numbers = read_numbers(results, str(path))
                base = {"dataset": dataset, "method": method, "seed": seed,
                        "run_key": paths.key,
                        "backbone": _backbone(config),
                        "input": int(config["image_size"]),
                        "display_name": results.get("display_name", method),
                        "selection": results.get("select_checkpoint", "last"),
                        "mlflow_run_id": results.get("mlflow_run_id")}
                for n in numbers:
                    row = {**base, "protocol": n.protocol, "metric": n.metric,
                           "value": n.value}
                    if not n.baseline:
                        rows.append(row)
                        continue
                    # The same maps on the same data: one copy per (dataset, baseline,
                    # seed), from whichever run computed it first.
                    owner, kept = baseline_rows.setdefault((dataset, n.baseline, seed),
                                                           (method, []))
                    if owner == method:
                        kept.append({**row, "method": f"{BASELINE_PREFIX}{n.baseline}",
                                     "backbone": "–", "selection": "last", "run_key": "",
                                     "mlflow_run_id": None, "display_name":
                                     f"{BASELINE_NAMES.get(n.baseline, n.baseline)} "
                                     "(baseline)"})
    return pd.DataFrame(rows + [r for _, kept in baseline_rows.values() for r in kept])


def methods_with_runs(results_dir: Path, datasets: list[str]) -> list[str]:
    """Method names with a run folder on every one of `datasets` (the default method list of
    `tables` and `figures`: whatever was run, built-in or plugin), sorted."""
    found = [{p.name for p in (Path(results_dir) / RUNS_DIR / d).glob("*") if p.is_dir()}
             for d in datasets]
    methods = sorted(set.intersection(*found)) if found else []
    if not methods:
        raise WsolbenchError(f"{Path(results_dir) / RUNS_DIR}: no method has runs on "
                             f"{', '.join(datasets)}; `wsolbench run` first")
    return methods


def summarize_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, 95 % CI and seed count per (dataset, method, backbone, input, checkpoint
    selection, protocol, metric)."""
    keys = ["dataset", "method", "display_name", "backbone", "input", "selection", "protocol",
            "metric"]
    out = [{**dict(zip(keys, group)), **seed_summary(frame["value"])}
           for group, frame in runs.groupby(keys, sort=False)]
    return pd.DataFrame(out)


def read_reported(path: Path) -> pd.DataFrame:
    """`reported.csv` (paper_tables.md's numbers with sources); errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise WsolbenchError(f"{path}: reported-numbers file not found")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(REPORTED_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise InputFileError(path, f"missing columns {sorted(missing)}", line=1)
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                value = float(row["value"])
                size = int(row["input"])
            except (TypeError, ValueError):
                raise InputFileError(path, f"value {row['value']!r} / input "
                                     f"{row['input']!r} is not a number", line=line) from None
            if not row["source"].strip():
                raise InputFileError(path, "a reported number needs its source", line=line)
            rows.append({**row, "value": value, "input": size,
                         "value_text": row["value"].strip()})
    return pd.DataFrame(rows, columns=[*REPORTED_COLUMNS, "value_text"])


# ------------------------------------------------------------------------------ building


@dataclass
class Table:
    """A built table: display cells, numeric values (CSV), caption, footnotes."""

    spec: TableSpec
    cells: pd.DataFrame  # strings, as typeset
    numbers: pd.DataFrame  # numeric long-form of the same rows
    caption: str
    footnotes: list[str]
    n_reported: int  # the first rows are reported; a rule separates them from measured ones


def _fmt(mean: float, std: float, n: int) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def build_table(spec: TableSpec, summary: pd.DataFrame, reported: pd.DataFrame,
                dataset: str | None, protocols: list[str]) -> Table:
    """Table `spec` for the dataset playing its role (`None`: reported rows only)."""
    real = REAL_NAMES[spec.role]
    metric_keys = [k for k, _ in spec.columns]
    headers = ["Method", "Backbone", "Input", "Data"] + [h for _, h in spec.columns] + [
        "Protocol / source"]
    cell_rows, number_rows = [], []
    rep = reported[(reported["dataset"].str.lower() == spec.role)
                   & reported["metric"].isin(metric_keys)]
    notes: dict[str, int] = {}
    for (method, backbone, size), group in rep.groupby(["method", "backbone", "input"],
                                                       sort=False):
        values = dict(zip(group["metric"], group["value"]))
        texts = dict(zip(group["metric"], group["value_text"]))  # as published: 88.0 not 88
        sources = sorted(set(group["source"]))
        for note in sorted({n for n in group["note"] if isinstance(n, str) and n.strip()}):
            notes.setdefault(note, len(notes) + 1)
        marks = "".join(f"[{notes[n]}]" for n in sorted(
            {n for n in group["note"] if isinstance(n, str) and n.strip()}))
        cell_rows.append([f"{method}†", backbone, str(size), real]
                         + [texts.get(k, "–") for k in metric_keys]
                         + ["; ".join(sources) + (f" {marks}" if marks else "")])
        number_rows += [{"method": method, "backbone": backbone, "input": size,
                         "data": real, "protocol": "reported", "metric": k, "mean": values[k],
                         "std": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0,
                         "source": "; ".join(sources)} for k in metric_keys if k in values]
    n_reported = len(cell_rows)
    shown = [p for p in spec.protocols if p in protocols]
    test_selected = False
    if dataset is not None:
        mine = summary[summary["dataset"] == dataset]
        for (method, backbone, size, selection), group in mine.groupby(
                ["method", "backbone", "input", "selection"], sort=False):
            for protocol in shown:
                part = group[group["protocol"] == protocol].set_index("metric")
                if not set(metric_keys) & set(part.index):
                    continue
                cells = [_fmt(part.at[k, "mean"], part.at[k, "std"], int(part.at[k, "n"]))
                         if k in part.index else "–" for k in metric_keys]
                seeds = int(part["n"].max())
                label = f"{protocol}, {seeds} seed{'s' if seeds > 1 else ''}"
                if protocol in ("paper", "fair") and "cam_threshold" in part.index:
                    label += f", τ {part.at['cam_threshold', 'mean']:.2f}"
                    label += " (mean)" if protocol == "fair" and seeds > 1 else ""
                if selection == "test":
                    label += f", checkpoint on test {TEST_SELECTION_MARK}"
                    test_selected = True
                names = summary.loc[summary["method"] == method, "display_name"]
                cell_rows.append([names.iloc[0] if len(names) else method, backbone, str(size),
                                  dataset] + cells + [label])
                number_rows += [{"method": method, "backbone": backbone, "input": size,
                                 "data": dataset, "protocol": protocol, "metric": k,
                                 "selection": selection,
                                 **{c: part.at[k, c] for c in ("mean", "std", "ci_low",
                                                               "ci_high", "n")},
                                 "source": "wsolbench"} for k in metric_keys if k in part.index]
    cells = pd.DataFrame(cell_rows, columns=headers)
    caption = _caption(spec, dataset, real)
    footnotes = ([REPORTED_NOTE] if n_reported else []) + [
        f"[{i}] {note}" for note, i in notes.items()] + [PROTOCOL_NOTES[p] for p in shown
                                                         if dataset is not None]
    if dataset is not None:
        footnotes.append("Measured rows: mean ± std over seeds (95 % CIs in statistics.csv); "
                         "a difference between two methods counts only where bootstrap.csv's "
                         "hierarchical bootstrap (seeds, then images) says so.")
        if any(str(r[0]).endswith("(baseline)") for r in cell_rows):
            footnotes.append(BASELINE_NOTE)
    if test_selected:
        footnotes.append(TEST_SELECTION_NOTE)
    return Table(spec, cells, pd.DataFrame(number_rows), caption, footnotes, n_reported)


def _caption(spec: TableSpec, dataset: str | None, real: str) -> str:
    """The caption text without a "Table N:" prefix (LaTeX's `\\caption` adds its own;
    Markdown adds it in `to_markdown`)."""
    head = f"{real} {spec.title}"
    if dataset is None:
        return f"{head}. Reported numbers only: no {spec.role} dataset in this run."
    if dataset.startswith("synth"):
        return (f"{head} — measured on {dataset}, wsolbench's synthetic stand-in for {real}: "
                f"the measured rows are {dataset} numbers, not {real} numbers; the reported "
                f"rows (†) are {real} numbers from their sources.")
    return f"{head} — measured on {dataset}."


# ------------------------------------------------------------------------------ rendering

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "†": r"$^\dagger$",
                  "‡": r"$^\ddagger$", "—": "---", "τ": r"$\tau$", "–": "--", "≥": r"$\geq$",
                  ">=": r"$\geq$", "≤": r"$\leq$", "<=": r"$\leq$", ">": r"$>$", "<": r"$<$",
                  "×": r"$\times$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials (and typeset ±, †, ‡, dashes) in plain text; `code` spans
    become \\texttt (a backtick would print as an opening quote). Underscores may break
    the line, so long timm model names wrap instead of overflowing."""
    parts = text.split("`")
    if len(parts) % 2 == 1 and len(parts) > 1:  # balanced backticks: odd parts are code
        return "".join(rf"\texttt{{{_escape_plain(p)}}}" if i % 2 else _escape_plain(p)
                       for i, p in enumerate(parts))
    return _escape_plain(text)


def _escape_plain(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i:i + 2] in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[text[i:i + 2]])
            i += 2
            continue
        out.append(_LATEX_SPECIAL.get(text[i], text[i]))
        if text[i] == "_":
            out.append(r"\allowbreak{}")
        i += 1
    return "".join(out)


def to_latex(table: Table, float_env: str = "table") -> str:
    """A booktabs float: caption, label, a rule between reported and measured rows,
    footnotes under the tabular. Needs `\\usepackage{booktabs,graphicx}`.

    The tabular is scaled down to `\\linewidth` only when it is wider, so the same file fits
    a one-column page, a two-column `\\columnwidth`, or (with `float_env="table*"`) the
    full width of a two-column page. Footnotes are paragraphs, not `\\\\` lines: a note
    starting with "[1]" after `\\\\` would be read as a length.
    """
    if float_env not in ("table", "table*"):
        raise WsolbenchError(f"float_env must be table or table*, got {float_env!r}")
    cells = table.cells
    # The protocol/source column wraps (ragged, 3.4 cm): rows end in \tabularnewline, as
    # \raggedright redefines \\.
    align = "lllc" + "c" * len(table.spec.columns) + "p{3.4cm}"
    lines = [rf"\begin{{{float_env}}}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.caption)}}}",
             rf"\label{{tab:wsolbench-table{table.spec.number}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             _latex_row(cells.columns), r"\midrule"]
    for i, row in enumerate(cells.itertuples(index=False)):
        if i == table.n_reported and 0 < i:
            lines.append(r"\midrule")
        lines.append(_latex_row(row))
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.footnotes:
        lines += [r"\par\smallskip\footnotesize\raggedright"]
        lines += [latex_escape(note) + r"\par" for note in table.footnotes]
    lines.append(rf"\end{{{float_env}}}")
    return "\n".join(lines) + "\n"


def _latex_row(values) -> str:
    texts = [latex_escape(str(v)) for v in values]
    texts[-1] = r"\raggedright " + texts[-1]
    return " & ".join(texts) + r" \tabularnewline"


def to_html(table: Table) -> str:
    """A standalone HTML fragment (caption, table, footnotes): what the Snakemake report
    embeds. Cells are escaped by pandas; nothing else is styled."""
    import html

    body = table.cells.to_html(index=False, border=0, classes="wsolbench-table")
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in table.footnotes)
    return (f"<p><b>Table {table.spec.number}: {html.escape(table.caption)}</b></p>\n{body}\n"
            f"<ul>{notes}</ul>\n")


def to_markdown(table: Table) -> str:
    """GitHub Markdown: caption, a pipe table, footnotes."""
    cells = table.cells

    def row(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [f"**Table {table.spec.number}: {table.caption}**", "", row(cells.columns),
             row(["---"] * len(cells.columns))]
    lines += [row(r) for r in cells.itertuples(index=False)]
    lines += [""] + [f"- {note}" for note in table.footnotes]
    return "\n".join(lines) + "\n"
