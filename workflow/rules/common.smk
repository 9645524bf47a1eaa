# Helpers shared by the rules: the run matrix from the validated config, CLI arguments.

import os
import re
import shlex

from wsolbench.workflow_check import workflow_explainer_key, workflow_run_key

RESULTS = config.get("results_dir", "results")
EVAL = config.get("evaluation", {})
RES = config.get("resources", {})
SEEDS = [int(s) for s in config["seeds"]]
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
    """Every option of one `wsolbench run` job."""
    method = config["methods"][wildcards.method]
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
    baselines = EVAL.get("baselines", "first_seed")
    if baselines == "none" or (baselines == "first_seed" and int(wildcards.seed) != SEEDS[0]):
        args.append("--no-baselines")
    return " ".join(a for a in args if a)


# Each (dataset, method)'s run key: the folder `wsolbench run` writes, from the same options
# (wsolbench.runpaths; a changed config gets a new folder instead of overwriting a run).
RUN_KEYS = {(d, m): workflow_run_key(config, d, m) for d in DATASETS for m in METHODS}


def run_file(dataset, method, seed, name="results.json"):
    return f"{RESULTS}/runs/{dataset}/{method}/{RUN_KEYS[dataset, method]}/{seed}/{name}"


def run_key_args(datasets):
    """`--run-key` options naming this workflow's runs for tables/figures (other runs of
    the same methods under the results folder are left out)."""
    return " ".join(f"--run-key {d}/{m}={RUN_KEYS[d, m]}" for d in datasets for m in METHODS)


def all_run_files(datasets=None, name="results.json"):
    return [run_file(d, m, s, name) for d in (datasets or DATASETS) for m in METHODS
            for s in SEEDS]


def table_files(exts=("tex", "csv", "md")):
    return [f"{RESULTS}/tables/table{n}.{ext}" for n in (1, 2, 3) for ext in exts]


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
# Each explainer run's folder, known before it runs (wsolbench.explain.explainer_run_key).
EXPLAINER_KEYS = {(d, e, m): workflow_explainer_key(config, d, e, m)
                  for d in EXPLAIN_DATASETS for e in EXPLAINERS for m in EXPLAINED}


def explainer_file(dataset, explainer, method, seed, name="results.json"):
    key = EXPLAINER_KEYS[dataset, explainer, method]
    return f"{RESULTS}/runs/{dataset}/{explainer}@{method}/{key}/{seed}/{name}"


def explainer_table_methods(dataset):
    """The trained methods, then each explainer of each (tables' --methods)."""
    return EXPLAINED + [f"{e}@{m}" for m in EXPLAINED for e in EXPLAINERS]


def explainer_key_args(dataset):
    """`--run-key` options naming the workflow's trained and explainer runs of `dataset`."""
    trained = " ".join(f"--run-key {dataset}/{m}={RUN_KEYS[dataset, m]}" for m in EXPLAINED)
    explained = " ".join(f"--run-key {dataset}/{e}@{m}={EXPLAINER_KEYS[dataset, e, m]}"
                         for e in EXPLAINERS for m in EXPLAINED)
    return f"{trained} {explained}"
