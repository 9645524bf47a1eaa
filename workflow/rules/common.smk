# Helpers shared by the rules: the run matrix from the validated config, CLI arguments.

import json
import os
import re
import shlex

from wsolbench.workflow_check import (workflow_candidates, workflow_explainer_key,
                                      with_method_entry)

RESULTS = config.get("results_dir", "results")
EVAL = config.get("evaluation", {})
RES = config.get("resources", {})
SEEDS = [int(s) for s in config["seeds"]]
# The seeds every search candidate runs; the chosen candidate runs all SEEDS
# (docs/search.md).
SEARCH_SEEDS = SEEDS[:int(config.get("search_seeds", len(SEEDS)))]
DATASETS = list(config["datasets"])
METHODS = list(config["methods"])
TABLE_DATASETS = list(dict.fromkeys(config["tables"].values()))
# The reported numbers ship with the workflow: a relative path missing from the working
# directory (snakemake --directory elsewhere) is read from beside the Snakefile.
REPORTED = config.get("reported", "results/reference/reported.csv")
if not os.path.isabs(REPORTED) and not os.path.exists(REPORTED):
    REPORTED = os.path.join(workflow.basedir, REPORTED)

for _role, _name in config["tables"].items():
    if _name not in config["datasets"]:
        raise ValueError(f"config tables.{_role}: dataset {_name!r} is not under `datasets:` "
                         f"({', '.join(DATASETS)})")


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    method="|".join(map(re.escape, METHODS)),
    seed=r"\d+",
    run_key=r"[A-Za-z0-9_.]+-[0-9a-f]{8}",


def _value(value):
    """A config value as `--set`/`--data-set` text (lists comma-joined)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _pairs(flag, mapping):
    return " ".join(f"{flag} {shlex.quote(f'{k}={_value(v)}')}" for k, v in mapping.items())


def data_args(dataset):
    """`wsolbench` options that locate and configure one dataset."""
    entry = config["datasets"][dataset]
    args = [f"--dataset {shlex.quote(dataset)}", f"--results-dir {shlex.quote(RESULTS)}"]
    for key, flag in (("data_root", "--data-root"), ("fullsup_metadata", "--fullsup-metadata"),
                      ("fullsup_images", "--fullsup-images")):
        if entry.get(key):
            args.append(f"{flag} {shlex.quote(str(entry[key]))}")
    args.append(_pairs("--data-set", entry.get("data_set", {})))
    return " ".join(a for a in args if a)


def run_args(wildcards):
    """Every option of one `wsolbench run` job (the candidate its run key names)."""
    method = candidate_entry(wildcards.dataset, wildcards.method, wildcards.run_key)
    dataset = config["datasets"][wildcards.dataset]
    args = [data_args(wildcards.dataset), f"--method {shlex.quote(wildcards.method)}",
            f"--seed {wildcards.seed}", f"--device {RES.get('device', 'cpu')}",
            f"--cam-curve-interval {EVAL.get('cam_curve_interval', 0.001)}",
            f"--eval-workers {EVAL.get('eval_workers', 1)}",
            f"--num-workers {RES.get('num_workers', 0)}", "--resume",
            f"--precision {RES.get('precision', 'fp32')}",
            f"--nproc-per-node {RES.get('nproc_per_node', 1)}"]
    if method.get("preset"):
        args.append(f"--preset {shlex.quote(method['preset'])}")
    args.append(_pairs("--set", method.get("set", {})))
    if method.get("pretrained"):
        args.append(f"--pretrained {shlex.quote(method['pretrained'])}")
    if method.get("pretrained_sha256"):
        args.append(f"--pretrained-sha256 {method['pretrained_sha256']}")
    if dataset.get("first_box_only"):
        args.append("--first-box-only")
    args += [f"--protocol {shlex.quote(name)}" for name in EVAL.get("protocols", [])]
    args += [f"--skip-protocol {name}" for name in EVAL.get("skip_protocols", [])]
    if not scores_baselines(wildcards.method, int(wildcards.seed)):
        args.append("--no-baselines")
    return " ".join(a for a in args if a)


def scores_baselines(method, seed):
    """Whether this run job scores the baselines (`evaluation.baselines`). The baseline
    maps use neither the seed nor the method, so the tables keep one copy per (dataset,
    baseline, seed) whichever run scored it (wsolbench.tables.collect_runs). `first_run`
    scores them once per dataset: in the first seed of one method — the first of
    `explainers.explain` that is trained here, so the explainer tables show them too, else
    the first method — and in each of its search candidates, since whichever the search
    selects fills the tables. `first_seed` scores them in every method's first seed."""
    mode = EVAL.get("baselines", "first_run")
    if mode == "all":
        return True
    if mode == "none" or seed != SEEDS[0]:
        return False
    return mode == "first_seed" or method == BASELINE_METHOD


# Each (dataset, method)'s candidates: (run key, method entry) per point of its `search:`
# grid, or the one entry. The run key is the folder `wsolbench run` writes, from the same
# options (wsolbench.runpaths; a changed config gets a new folder instead of overwriting).
CANDIDATES = {(d, m): workflow_candidates(config, d, m) for d in DATASETS for m in METHODS}
SEARCHED = [m for m in METHODS if (config["methods"][m] or {}).get("search")]


def candidate_entry(dataset, method, run_key):
    """The method entry of the candidate whose run key is `run_key`."""
    for key, entry in CANDIDATES[dataset, method]:
        if key == run_key:
            return entry
    raise ValueError(f"runs/{dataset}/{method}/{run_key}: no candidate of this config has "
                     f"that run key ({', '.join(k for k, _ in CANDIDATES[dataset, method])})")


def selection_file(dataset, method):
    return f"{RESULTS}/selection/{dataset}/{method}.json"


def selected_key(dataset, method):
    """The run key whose runs fill the tables: the only candidate, or the one the `select`
    checkpoint chose (Snakemake runs the search first, then re-evaluates what needs this)."""
    if method not in SEARCHED:
        return CANDIDATES[dataset, method][0][0]
    path = checkpoints.select.get(dataset=dataset, method=method).output[0]
    with open(path) as f:
        key = json.load(f)["selected_run_key"]
    candidate_entry(dataset, method, key)  # a record of another grid: stop, naming it
    return key


def run_file(dataset, method, seed, name="results.json"):
    """A file of the selected run (call it inside input/params functions: it may wait for
    the search)."""
    return f"{RESULTS}/runs/{dataset}/{method}/{selected_key(dataset, method)}/{seed}/{name}"


def candidate_files(dataset, method, name="results.json"):
    """What the search compares: every candidate's runs of the search seeds."""
    return [f"{RESULTS}/runs/{dataset}/{method}/{key}/{seed}/{name}"
            for key, _ in CANDIDATES[dataset, method] for seed in SEARCH_SEEDS]


def run_key_args(datasets):
    """`--run-key` options naming this workflow's selected runs for tables/figures (other
    runs of the same methods under the results folder are left out)."""
    return " ".join(f"--run-key {d}/{m}={selected_key(d, m)}" for d in datasets
                    for m in METHODS)


def all_run_files(datasets=None, name="results.json", methods=None):
    return [run_file(d, m, s, name) for d in (datasets or DATASETS)
            for m in (METHODS if methods is None else methods) for s in SEEDS]


def run_inputs(datasets, names=("results.json",)):
    """The selected runs' files as two inputs: those of methods without a search (known now,
    so a dry run lists their jobs) and a function for the searched ones (known after the
    search)."""
    def files(methods):
        return [f for n in names for f in all_run_files(datasets, n, methods)]

    return files([m for m in METHODS if m not in SEARCHED]), lambda wc: files(SEARCHED)


def selection_files(datasets):
    return [selection_file(d, m) for d in datasets for m in SEARCHED]


def table_files(exts=("tex", "csv", "md")):
    return [f"{RESULTS}/tables/table{n}.{ext}" for n in (1, 2, 3) for ext in exts]


# The search table (selection.csv/.md), written with Tables 1-3 when a method has a grid.
SEARCH_TABLES = [f"{RESULTS}/tables/selection.{ext}" for ext in ("csv", "md")] if SEARCHED else []


def reported(path, caption, category, subcategory=None):
    """An output shown in `snakemake --report` with its caption (workflow/report/*.rst)."""
    return report(path, caption=f"../report/{caption}.rst", category=category,
                  subcategory=subcategory)


FIGURE_NAMES = ["qualitative.png", "qualitative.pdf", "boxacc_curves.png",
                "boxacc_curves.pdf", "errors.png", "errors.pdf", "errors.csv"]
REPORTED_FIGURES = ("qualitative.png", "boxacc_curves.png", "errors.png")  # in the report


def figure_files():
    return [f"{RESULTS}/figures/{d}/{name}" for d in TABLE_DATASETS for name in FIGURE_NAMES]


def results_dir_of(run_output):
    """The results folder of a `runs/<dataset>/<method>/<run key>/<seed>/<file>` path."""
    path = run_output
    for _ in range(6):
        path = os.path.dirname(path)
    return path


def csv_list(values):
    return ",".join(str(v) for v in values)


# Explainers (workflow/rules/explain.smk): which, on which trained methods and datasets.
EXPLAINERS = (config.get("explainers") or {}).get("methods", [])
EXPLAINED = (config.get("explainers") or {}).get("explain", [])
EXPLAIN_DATASETS = (config.get("explainers") or {}).get("datasets", [])
# The method whose first-seed runs score the baselines under `baselines: first_run`.
BASELINE_METHOD = next((m for m in EXPLAINED if m in METHODS), METHODS[0])
_EXPLAINER_KEYS = {}  # (dataset, explainer, method, trained run key) -> explainer run key


def explainer_key(dataset, explainer, method):
    """An explainer run's folder (wsolbench.explain.explainer_run_key), from the selected
    trained run."""
    trained = selected_key(dataset, method)
    cache = (dataset, explainer, method, trained)
    if cache not in _EXPLAINER_KEYS:
        entry = candidate_entry(dataset, method, trained)
        _EXPLAINER_KEYS[cache] = workflow_explainer_key(
            with_method_entry(config, method, entry), dataset, explainer, method)
    return _EXPLAINER_KEYS[cache]


def explainer_file(dataset, explainer, method, seed, name="results.json"):
    key = explainer_key(dataset, explainer, method)
    return f"{RESULTS}/runs/{dataset}/{explainer}@{method}/{key}/{seed}/{name}"


def explainer_table_methods(dataset):
    """The trained methods, then each explainer of each (tables' --methods)."""
    return EXPLAINED + [f"{e}@{m}" for m in EXPLAINED for e in EXPLAINERS]


def explainer_key_args(dataset):
    """`--run-key` options naming the workflow's trained and explainer runs of `dataset`."""
    trained = " ".join(f"--run-key {dataset}/{m}={selected_key(dataset, m)}" for m in EXPLAINED)
    explained = " ".join(f"--run-key {dataset}/{e}@{m}={explainer_key(dataset, e, m)}"
                         for e in EXPLAINERS for m in EXPLAINED)
    return f"{trained} {explained}"
