"""The Snakemake workflow: lint, dry runs, schema errors, a tiny end-to-end run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import default_workflow_config

# Tests that run Snakemake in a subprocess (10-300 s each) are marked slow; the config
# checks run the Snakefile's own two checks in-process (milliseconds after one import).

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def snakemake(*args, cwd, timeout=600):
    return subprocess.run([*SNAKEMAKE, "--directory", str(cwd), *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


# Snakemake's own command line, in a Python that reports at exit whether torch was imported.
SNAKEMAKE_REPORTING_TORCH = [
    sys.executable, "-c",
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
    "from snakemake.cli import main\n"
    "sys.argv = ['snakemake', *sys.argv[1:]]\n"
    "main()\n", "-s", str(ROOT / "Snakefile")]


@pytest.mark.slow
def test_lint_is_clean(tmp_path):
    done = snakemake("--lint", "--configfile", str(ROOT / "config/config.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Congratulations" in done.stdout + done.stderr


# The default config gives every method 4 candidates, each run on all 5 seeds (x 2 datasets
# x 3 methods): 120 runs, all known before the search. The quick-search overlay runs every
# candidate on the first 2 seeds only, and the chosen ones' other 3 seeds are known only
# after the search, so its dry run lists 48 runs (66 in all). The ten-seeds overlay keeps the
# default's search (it adds seeds the chosen candidates run after it). paper.yaml runs one
# recipe per method.
@pytest.mark.slow
@pytest.mark.parametrize("config,runs,search_seeds", [
    ("config.yaml", 120, 5), ("quick-search.yaml", 48, 2), ("ten-seeds.yaml", 120, 5),
    ("paper.yaml", 18, None)])
def test_dry_run_of_shipped_configs(tmp_path, config, runs, search_seeds):
    paths = [ROOT / "config" / config]
    if config in ("quick-search.yaml", "ten-seeds.yaml"):  # overlays on the default
        paths.insert(0, ROOT / "config/config.yaml")
    done = subprocess.run([*SNAKEMAKE_REPORTING_TORCH, "--directory", str(tmp_path), "-n", "-p",
                           "--cores", "2", "all", "--configfile", *map(str, paths)],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    commands = [line for line in done.stdout.splitlines() if "wsolbench run" in line]
    assert len(commands) == runs
    # The synth configs are checked and every run folder named without importing torch (the
    # methods' presets are registered torch-free: wsolbench.method_config); paper.yaml's DeiT
    # and VGG names only timm can check.
    assert f"torch imported: {config == 'paper.yaml'}" in done.stderr, done.stderr[-2000:]
    # The synth configs leave MaxBoxAcc v1 out (in no table); paper.yaml evaluates it.
    assert all(("--skip-protocol maxboxacc" in c) == (config != "paper.yaml")
               for c in commands)
    if config == "paper.yaml":  # nothing of the default config leaks into a given one
        assert not any("synth" in c for c in commands)
        assert all("--precision bf16" in c and "--pretrained weights/" in c for c in commands)
    else:  # the search seeds are the first ones
        seeds = {int(re.search(r"--seed (\d+)", c).group(1)) for c in commands}
        assert seeds == set(range(search_seeds)), seeds
    # The baseline maps use neither seed nor method: one method's first seed scores them,
    # per dataset, in each of its candidates (CAM's 4 in the default config, 1 in paper.yaml).
    scoring = [c for c in commands if "--no-baselines" not in c]
    assert len(scoring) == (2 if config == "paper.yaml" else 8), scoring
    assert all("--method cam" in c and "--seed 0" in c for c in scoring), scoring
    stats = done.stdout[done.stdout.index("Job stats"):]
    assert re.search(rf"^run\s+{runs}$", stats, re.MULTILINE), stats
    for rule in ("prepare_data", "tables", "figures", "summary"):
        assert rule in stats
    selects = 0 if config == "paper.yaml" else 6
    assert bool(re.search(rf"^select\s+{selects}$", stats, re.MULTILINE)) == bool(selects), stats


def test_the_overlays_change_only_the_seeds_they_name():
    """Merged onto the default, ten-seeds must keep the default's search and its seeds first
    (so a default run's 120 runs are reused), and quick-search must change only how many
    seeds the search runs on."""
    default = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    ten = yaml.safe_load((ROOT / "config/ten-seeds.yaml").read_text())
    quick = yaml.safe_load((ROOT / "config/quick-search.yaml").read_text())
    assert set(ten) == {"seeds"}
    assert ten["seeds"][:len(default["seeds"])] == default["seeds"]
    assert len(ten["seeds"]) == 10 and len(set(ten["seeds"])) == 10
    # The merged config keeps the default's explicit search_seeds, so the search does not
    # grow to 10 seeds.
    assert default["search_seeds"] == len(default["seeds"])
    assert set(quick) == {"search_seeds"} and quick["search_seeds"] < default["search_seeds"]


def snakefile_checks(config: dict) -> str:
    """The message the Snakefile's two config checks stop with — the JSON schema
    (`snakemake.utils.validate`), then `check_workflow_config` — or "" if both pass. The
    Snakefile calls exactly these two; `test_dry_run_stops_on_a_bad_config` checks that
    `snakemake -n` does, for one error of each kind."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from wsolbench.errors import WsolbenchError
    from wsolbench.workflow_check import check_workflow_config

    try:
        validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
        check_workflow_config(config)
    except (WorkflowError, WsolbenchError) as exc:
        return str(exc)
    return ""


def test_the_schema_offers_exactly_the_protocols_a_run_may_skip():
    """The schema's list of `evaluation.skip_protocols` values is the one `RunOptions`
    accepts (wsolbench.options.OPTIONAL_PROTOCOLS): neither can drift from the other."""
    from wsolbench.options import OPTIONAL_PROTOCOLS

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    skip = schema["properties"]["evaluation"]["properties"]["skip_protocols"]
    assert tuple(skip["items"]["enum"]) == OPTIONAL_PROTOCOLS


def test_the_shipped_configs_pass_the_checks():
    for name in ("config.yaml", "paper.yaml"):
        assert snakefile_checks(yaml.safe_load((ROOT / "config" / name).read_text())) == ""


@pytest.mark.parametrize("change,message", [
    ({"seeds": ["zero"]}, "'zero' is not of type 'integer'"),
    ({"protocols": ["paper", "best-on-test"]}, "'best-on-test' is not one of"),
    ({"methods": {"cam": {"epochs": 3}}}, "Additional properties are not allowed ('epochs'"),
    ({"evaluation": {"skip_protocols": ["paper"]}}, "'paper' is not one of ['maxboxacc', 'pxap']"),
])
def test_schema_rejects_bad_config_with_a_clear_message(change, message):
    config = default_workflow_config()
    config.update(change)
    assert message in snakefile_checks(config)


@pytest.mark.slow
@pytest.mark.parametrize("change,message", [
    # the schema's check
    (lambda c: c.update({"seeds": ["zero"]}), "'zero' is not of type 'integer'"),
    # the plugins' check (wsolbench.workflow_check)
    (lambda c: _rename(c["methods"], "trt", "trtt"),
     "config methods.trtt.set (for dataset 'synth-cub'): unknown method 'trtt'; did you mean"),
    # the rules' own (workflow/rules/common.smk)
    (lambda c: c.update({"tables": {"cub": "nope"}}),
     "config tables.cub: dataset 'nope' is not under `datasets:`"),
])
def test_dry_run_stops_on_a_bad_config(tmp_path, change, message):
    config = default_workflow_config()
    change(config)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"),
                     cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr, (done.stdout + done.stderr)[-2000:]


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize("change,message", [
    (lambda c: _rename(c["methods"], "trt", "trtt"),
     "config methods.trtt.set (for dataset 'synth-cub'): unknown method 'trtt'; did you mean"),
    (lambda c: c["methods"]["cam"]["set"].update({"epoch": 5}),
     "config methods.cam.set (for dataset 'synth-cub'): unknown config key 'epoch'"),
    (lambda c: c["methods"]["cam"]["set"].update({"epochs": "five"}),
     "override epochs='five': expected a value of type int"),
    (lambda c: c["methods"]["tscam"]["set"].update({"model": "deit_smal_patch16_224"}),
     "did you mean 'deit_small_patch16_224'"),
    (lambda c: c["datasets"]["synth-cub"]["data_set"].update({"num_class": 3}),
     "config datasets.synth-cub.data_set: unknown config key 'num_class'"),
    (lambda c: c["datasets"]["synth-imagenet"]["data_set"].update({"object_area": [0.3]}),
     "config datasets.synth-imagenet.data_set: synthetic data: object_area is a range"),
    (lambda c: c["evaluation"].update({"protocols": ["maxboxac"]}),
     "config evaluation.protocols: unknown protocol 'maxboxac'"),
    (lambda c: c["explainers"].update({"explain": ["cam", "tsacm"]}),
     "config explainers.explain: tsacm not under `methods:`"),
    (lambda c: c["methods"]["tscam"].update({"search": {"lr": [1e-3, "fast"]}}),
     "config methods.tscam.search (for dataset 'synth-cub'): override lr='fast'"),
    (lambda c: c["methods"]["cam"].update({"search": {"lr": []}}),
     "[] should be non-empty"),
    (lambda c: c.update({"search_seeds": 6}),
     "config search_seeds: 6 is more than the 5 seeds of `seeds:`"),
    (lambda c: c.update({"search_seeds": 0}), "0 is less than the minimum of 1"),
])
def test_config_check_knows_the_plugins_names_keys_and_values(change, message):
    """`snakemake -n` checks the config with the code `wsolbench run` uses: a typo'd name,
    key or value stops it with the offending key, before any job."""
    config = default_workflow_config()
    change(config)
    assert message in snakefile_checks(config)


def tiny_config(results: Path) -> dict:
    tiny = {"num_classes": 3, "train_per_class": 10, "test_per_class": 4,
            "fullsup_per_class": 2, "image_size": 32}
    fast = {"epochs": 1, "batch_size": 16, "image_size": 32, "resize_size": 36}
    return {
        "results_dir": str(results), "seeds": [0, 1], "protocols": ["paper", "fair",
                                                                   "wsolevaluation"],
        "tables": {"cub": "synth-cub", "ilsvrc": "synth-imagenet"},
        "reported": str(ROOT / "results/reference/reported.csv"),
        "evaluation": {"cam_curve_interval": 0.01, "bootstrap_resamples": 200, "figure_images": 2,
                       "skip_protocols": ["maxboxacc"]},
        "resources": {"threads": 1},
        "datasets": {"synth-cub": {"data_set": tiny},
                     "synth-imagenet": {"data_set": {**tiny, "num_classes": 3}}},
        "methods": {"cam": {"set": {**fast, "width": 16, "init_weights": ""}},
                    "trt": {"set": {**fast, "stage2_epochs": 1}}},
        # One explainer: the workflow's wiring is what this checks; every explainer's own
        # path is tested in plugins/wsolbench-gradcam/tests.
        "explainers": {"methods": ["gradcam"], "explain": ["cam", "trt"],
                       "datasets": ["synth-cub"]},
    }


@pytest.mark.slow
@pytest.mark.longest
def test_tiny_workflow_end_to_end_and_incremental(tmp_path):
    results = tmp_path / "results"
    config = tiny_config(results)
    # CAM's learning rate is searched (two candidates, chosen on train-fullsup on the first
    # seed); TRT's not.
    config["methods"]["cam"]["search"] = {"lr": [0.03, 0.001]}
    config["search_seeds"] = 1
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("--cores", "2", "all", "--configfile", str(tmp_path / "tiny.yaml"),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for n in (1, 2, 3):
        for ext in ("tex", "csv", "md"):
            assert (results / "tables" / f"table{n}.{ext}").stat().st_size > 0
    assert "measured on synth-imagenet" in (results / "tables/table3.tex").read_text()
    for dataset in ("synth-cub", "synth-imagenet"):
        for name in ("qualitative.pdf", "boxacc_curves.png", "errors.png"):
            assert (results / "figures" / dataset / name).stat().st_size > 0
        errors = pd.read_csv(results / "figures" / dataset / "errors.csv")
        assert errors.groupby("method")["percent"].sum().round(6).eq(100).all()
    boot = pd.read_csv(results / "tables/bootstrap.csv")
    assert set(boot.dataset) == {"synth-cub", "synth-imagenet"}
    assert (boot.seeds_averaged == 2).all()
    # The search: both candidates ran the search seed, only the selected one the other
    # seed; the tables hold the selected one's runs.
    search = pd.read_csv(results / "tables/selection.csv")
    runs = pd.read_csv(results / "tables/runs.csv")
    for dataset in ("synth-cub", "synth-imagenet"):
        record = json.loads((results / "selection" / dataset / "cam.json").read_text())
        rows = search[search.dataset == dataset]
        assert sorted(rows.settings) == ["lr=0.001", "lr=0.03"] and rows.selected.sum() == 1
        assert rows[rows.selected].run_key.item() == record["selected_run_key"]
        assert (rows.seeds == 1).all()
        ran = {path.parts[-3:-1] for path in
               (results / "runs" / dataset / "cam").glob("*/*/results.json")}
        other = next(key for key in rows.run_key if key != record["selected_run_key"])
        assert ran == {(record["selected_run_key"], "0"), (record["selected_run_key"], "1"),
                       (other, "0")}, ran
        assert rows.heldout_maxboxacc_v2.max() == rows[rows.selected].heldout_maxboxacc_v2.item()
        cam_keys = set(runs[(runs.dataset == dataset) & (runs.method == "cam")].run_key)
        assert cam_keys == {record["selected_run_key"]}
    # `baselines: first_run` (the default): CAM's first seed scores them in both candidates,
    # TRT never; every table still has one copy per (dataset, baseline).
    for dataset in ("synth-cub", "synth-imagenet"):
        for path in (results / "runs" / dataset).glob("*/*/*/results.json"):
            run = json.loads(path.read_text())
            metrics = run["metrics"]
            scored = bool(metrics.get("baselines"))
            # `evaluation.skip_protocols` reaches every run: MaxBoxAcc v1 left out, and said.
            assert "maxboxacc" not in metrics["test"] and "maxboxacc_v2" in metrics["test"]
            assert run["skipped_protocols"] == ["maxboxacc"]
            method, seed = path.parts[-4], path.parts[-2]
            assert scored == (method == "cam" and seed == "0"), path
        table = runs[runs.dataset == dataset]
        assert set(table[table.method.str.startswith("baseline:")].method) == {
            f"baseline:{b}" for b in ("whole_image", "centre_gaussian", "saturation",
                                      "local_contrast", "head_only")}, table.method.unique()
    summary = json.loads((results / "summary.json").read_text())

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    for dataset in ("synth-cub", "synth-imagenet"):
        experiment = client.get_experiment_by_name(dataset)
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        stages = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        # CAM's two candidates on seed 0, the selected one on seed 1, TRT on both seeds.
        assert len(parents) == 5 and all(r.info.status == "FINISHED" for r in parents)
        assert {r.data.tags["stage"] for r in stages} == {"tpsm", "cam"}  # TRT's two stages
    artifacts = [a.path for a in client.list_artifacts(summary["mlflow_run_id"], "tables")]
    assert "tables/table1.tex" in artifacts and "tables/selection.csv" in artifacts

    # Every file a rule writes is declared; the Snakemake report holds tables, statistics and
    # figures with their captions.
    for name in ("runs.csv", "bootstrap.csv", "table1.html"):
        assert (results / "tables" / name).stat().st_size > 0
    report = snakemake("--report", str(results / "report.html"), "--configfile",
                       str(tmp_path / "tiny.yaml"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "WARNING" not in report.stderr
    html = (results / "report.html").read_text()
    for needle in ("table1.html", "table3.html", "statistics.csv", "bootstrap.csv",
                   "selection.csv",
                   "boxacc_curves.png", "Paired bootstrap over test images",
                   "Table 1 of the TRT paper"):
        assert needle in html, needle

    # Incremental: nothing left to do; a deleted table is rebuilt without retraining.
    again = snakemake("-n", "--cores", "2", "all", "--configfile", str(tmp_path / "tiny.yaml"),
                      cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    (results / "tables/table2.tex").unlink()
    again = snakemake("-n", "--cores", "2", "all", "--configfile", str(tmp_path / "tiny.yaml"),
                      cwd=tmp_path)
    assert "rule run:" not in again.stdout and "rule tables:" in again.stdout
    # A point added to the grid: only its search-seed runs, the selections and what reads
    # them are due (its other seed only if the search then chooses it).
    wider = {**config, "methods": {**config["methods"], "cam": {
        **config["methods"]["cam"], "search": {"lr": [0.03, 0.001, 0.0001]}}}}
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump(wider))
    again = snakemake("-n", "--cores", "2", "all", "--configfile", str(tmp_path / "wider.yaml"),
                      cwd=tmp_path)
    stats = again.stdout[again.stdout.index("Job stats"):]
    for job, count in (("run", 2), ("select", 2)):
        assert re.search(rf"^{job}\s+{count}$", stats, re.MULTILINE), stats

    # The `explainers` target: pytorch-grad-cam's explainers on the trained checkpoints,
    # one job per (explainer, run), tabulated beside the trained methods; no retraining.
    done = snakemake("--cores", "2", "explainers", "--configfile", str(tmp_path / "tiny.yaml"),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rule run:" not in done.stdout + done.stderr
    table = (results / "tables/explainers/synth-cub/table2.md").read_text()
    for row in ("Grad-CAM (CAM)", "Grad-CAM (TRT)"):
        assert row in table, row
    boot = pd.read_csv(results / "tables/explainers/synth-cub/bootstrap.csv")
    assert {"gradcam@cam", "trt"} <= set(boot.method_a) | set(boot.method_b)
    selected = json.loads((results / "selection/synth-cub/cam.json").read_text())
    explained = json.loads(next((results / "runs/synth-cub/gradcam@cam").glob(
        "*/0/results.json")).read_text())
    assert f"/cam/{selected['selected_run_key']}/0/" in json.dumps(explained)
    assert "maxboxacc" not in explained["metrics"]["test"]  # the explain jobs skip it too
    assert explained["skipped_protocols"] == ["maxboxacc"]


@pytest.mark.slow
@pytest.mark.longest
def test_a_killed_run_job_is_redone_by_the_plain_command(tmp_path):
    """Snakemake killed hard mid-job (OOM killer, a node lost) leaves incomplete markers. After
    `--unlock` (Snakemake's own step for a lock left by a kill), the plain command redoes the
    job: the default workflow profile sets rerun-incomplete. Without that profile the same
    command stops with IncompleteFilesException (checked too, so this test can fail)."""
    import signal
    import time

    results = tmp_path / "results"
    config = tiny_config(results)
    config["methods"] = {"cam": config["methods"]["cam"]}
    config.pop("explainers")  # they explain trt too, which this config leaves out
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    from wsolbench.workflow_check import workflow_run_key

    key = workflow_run_key(config, "synth-cub", "cam")
    target = str(results / f"runs/synth-cub/cam/{key}/0/results.json")
    args = [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "1", target,
            "--configfile", str(tmp_path / "tiny.yaml")]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                           start_new_session=True)
    # Killed once the job has written some of its outputs (predictions come before
    # results.json): those files exist and are marked incomplete.
    partial = results / f"runs/synth-cub/cam/{key}/0/predictions_test.npz"
    deadline = time.monotonic() + 300
    while not partial.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    assert partial.exists() and job.poll() is None, "the run job never got that far"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert list((tmp_path / ".snakemake/incomplete").iterdir())  # really left incomplete
    unlock = subprocess.run([*args, "--unlock"], capture_output=True, text=True, env=ENV)
    assert unlock.returncode == 0, unlock.stderr[-2000:]

    without = subprocess.run([*args, "--workflow-profile", "none"], capture_output=True,
                             text=True, env=ENV)
    assert "IncompleteFilesException" in without.stdout + without.stderr
    plain = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads(Path(target).read_text())["method"] == "cam"
