# wsolbench workflow: train -> evaluate -> tabulate, every step through the `wsolbench` CLI.
#
#   snakemake --cores 2 all                                  # default: config/config.yaml
#   snakemake --cores 8 all --configfile config/paper.yaml   # real data (GPUs advised)
#   snakemake --profile profiles/slurm all                   # on a SLURM cluster
#
# Outputs (under results_dir): runs/<dataset>/<method>/<run key>/<seed>/results.json
# (+ checkpoint, predictions, per-image outcomes), tables/table{1,2,3}.{tex,csv,md},
# statistics.csv, bootstrap.csv, figures/<dataset>/*.{png,pdf}, MLflow runs in mlflow.db,
# logs/. A method with a `search:` grid runs every candidate; selection/<dataset>/<method>.json
# names the one chosen on train-fullsup, and tables/selection.{csv,md} lists them all
# (docs/search.md). `snakemake --cores 2 explainers`: explainer runs and tables/explainers/.

import os

from snakemake.utils import min_version, validate

min_version("8.0")


# The default config only when none is given: Snakemake would otherwise deep-merge a
# --configfile into it (paper.yaml's methods would inherit the synth presets).
if not config:

    configfile: "config/config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")
# The schema checks the shape; the plugins check the content (names, keys, values), with the
# same code `wsolbench run` uses, so a typo stops `snakemake -n` with the offending key.
from wsolbench.errors import WsolbenchError
from wsolbench.workflow_check import check_workflow_config

try:
    check_workflow_config(config)
except WsolbenchError as exc:
    raise ValueError(str(exc)) from None
# For `--software-deployment-method conda`: the env file installs this checkout from here.
os.environ.setdefault("WSOLBENCH_ROOT", workflow.basedir)


include: "workflow/rules/common.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/explain.smk"


rule all:
    default_target: True
    input:
        table_files(),
        figure_files(),
        f"{RESULTS}/summary.json",
