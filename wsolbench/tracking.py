"""Experiment tracking: MLflow (SQLite store under `results/`) or a null tracker for tests.

One MLflow run per `wsolbench run`, in an experiment named after the dataset. Params are the
resolved config flattened to dotted keys; metrics are model quality and training curves only
(`split/protocol/name`, see `mlflow_metrics`); bookkeeping stays in the `results.json`
artifact and chosen thresholds become params. Every experiment is tagged as a model-training
experiment, so MLflow 3's UI opens it on the runs table, not its GenAI traces view. Artifact
folders are relative to the store: `relocate_store` re-points them after `results/` moved.
Browse with `wsolbench ui` (or `mlflow ui --backend-store-uri sqlite:///results/mlflow.db
--workers 1`).

Parallel jobs (`snakemake --cores 8`) share one SQLite store. SQLite allows one writer at a
time and MLflow's first connection creates the schema, which two processes must not do at
once; so every write goes through an inter-process lock on `mlflow.db.lock` beside the
database (held for milliseconds per call, released by the kernel if a job dies).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsolbench.errors import WsolbenchError
from wsolbench.fileio import file_lock
from wsolbench.interrupt import deferred

_KEY_OK = re.compile(r"[^0-9A-Za-z_\-./ ]")


def metric_key(name: str) -> str:
    """Make `name` a valid MLflow key (alphanumerics, `_ - . / space`)."""
    return _KEY_OK.sub("_", name)


def default_tracking_uri(results_dir: Path) -> str:
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


# MLflow 3 opens an experiment without this tag in its GenAI (traces) view; this value is the
# one its "Model training" toggle writes.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
# MLflow 3's UI reads its mode (GenAI or model training) from this query parameter, else
# from the browser's local storage (default GenAI); the experimentKind tag does not switch it.
MODEL_TRAINING_QUERY = "workflowType=machine_learning"
ARTIFACTS_DIR = "mlartifacts"
# Evaluation bookkeeping, kept out of the metrics (it is in results.json).
_BOOKKEEPING = {"n_images", "cam_curve_interval", "best_threshold_index", "n_tied_best_indices"}
_PER_IOU = re.compile(r"per_iou/(\d+)(?:/(?:max_acc|acc))?$")


def mlflow_metrics(flat: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Split a run's flat numbers into MLflow metrics (quality) and params (chosen taus).

    One name per quantity: the fair transfer's BoxAccV2 is `fair/maxboxacc_v2/...` like the
    test split's; a per-IoU accuracy is `.../iou30`; baselines sit under `test/baselines/`.
    Chosen thresholds become `tau/...` params; bookkeeping is dropped (results.json has it).
    """
    metrics, params = {}, {}
    for key, value in flat.items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf in _BOOKKEEPING:
            continue
        key = key.replace("fair/boxacc_v2/", "fair/maxboxacc_v2/")
        key = _PER_IOU.sub(r"iou\1", key)
        if key.startswith("baselines/"):
            key = "test/" + key
        if "threshold" in leaf:
            params["tau/" + key.removesuffix("/threshold")] = value
        else:
            metrics[key] = value
    return metrics, params


def relocate_store(results_dir: Path) -> int:
    """Point every experiment's and run's artifact folder at `<results_dir>/mlartifacts`.

    MLflow stores absolute artifact URIs; after `results/` is copied or moved they point at
    the old place and the UI shows no artifacts. Locations under a `mlartifacts/` folder are
    re-rooted here (others are left alone). Returns the number of rows changed. No MLflow
    API changes an artifact location, so this updates the SQLite store itself, under the
    store's lock.
    """
    db = Path(results_dir) / "mlflow.db"
    if not db.is_file():
        return 0
    root = (Path(results_dir) / ARTIFACTS_DIR).resolve().as_uri()
    marker = f"/{ARTIFACTS_DIR}/"
    changed = 0
    with file_lock(Path(results_dir) / "mlflow.db.lock"), sqlite3.connect(db) as con:
        for table, column, key in (("experiments", "artifact_location", "experiment_id"),
                                   ("runs", "artifact_uri", "run_uuid")):
            rows = con.execute(f"SELECT {key}, {column} FROM {table}").fetchall()
            for row_key, uri in rows:
                if not uri or marker not in uri:
                    continue
                new = root + "/" + uri.split(marker, 1)[1]
                if new != uri:
                    con.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                                (new, row_key))
                    changed += 1
    return changed


def prepare_store_for_ui(results_dir: Path) -> list[tuple[str, str]]:
    """Relocate artifact folders and tag every experiment as model training, so the UI
    lists runs and their artifacts; returns `(experiment id, name)` pairs."""
    import mlflow

    relocate_store(Path(results_dir))
    client = mlflow.MlflowClient(default_tracking_uri(Path(results_dir)))
    out = []
    with file_lock(Path(results_dir) / "mlflow.db.lock"):
        for experiment in client.search_experiments():
            if experiment.tags.get(EXPERIMENT_KIND_TAG[0]) != EXPERIMENT_KIND_TAG[1]:
                client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND_TAG)
            out.append((experiment.experiment_id, experiment.name))
    return out


class NullTracker:
    """Accepts everything, stores nothing: for tests and `--no-mlflow`."""

    run_id: str | None = None

    @contextlib.contextmanager
    def run(self, name: str, nested: bool = False, run_id: str | None = None
            ) -> Iterator[NullTracker]:
        yield self

    def close_stale(self, run_id: str) -> None: ...

    def logged_steps(self, key: str) -> set[int]:
        return set()

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: Path | str, folder: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def start_stage(self, stage: str, index: int, params: dict[str, Any],
                    tags: dict[str, str]) -> None: ...

    def log_stage_metrics(self, stage: str, metrics: dict[str, float], step: int) -> None: ...


class MLflowTracker:
    """Logs to an MLflow tracking store; imported lazily (mlflow is slow to import)."""

    def __init__(self, experiment: str, results_dir: Path, tracking_uri: str | None = None
                 ) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow

        self._mlflow = mlflow
        self._lock_path = Path(results_dir) / "mlflow.db.lock"
        self.uri = tracking_uri or default_tracking_uri(Path(results_dir))
        mlflow.set_tracking_uri(self.uri)
        try:
            relocate_store(Path(results_dir))  # a moved results/ keeps writing beside itself
            with self._locked():  # schema and experiment creation: one process at a time
                self.experiment_id = self._open_experiment(experiment, Path(results_dir))
        except Exception as exc:  # sqlite3 / SQLAlchemy / MLflow errors on a damaged store
            raise WsolbenchError(
                f"{Path(results_dir) / 'mlflow.db'}: not a usable MLflow store "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); move it away or "
                "pass --no-mlflow") from None
        self.run_id: str | None = None
        self.run_name: str | None = None
        self._children: dict[str, str] = {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's inter-process lock, with stop signals held back until the write is
        done (`wsolbench.interrupt.deferred`: an interrupted commit locks the store)."""
        with deferred(), file_lock(self._lock_path):
            yield

    def _open_experiment(self, experiment: str, results_dir: Path) -> str:
        """The experiment's id: created with an artifact folder under `results_dir` and the
        model-training kind tag, or found and tagged (call under the lock)."""
        mlflow = self._mlflow
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            artifacts = (results_dir / ARTIFACTS_DIR / experiment).resolve()
            mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri(),
                                     tags=dict([EXPERIMENT_KIND_TAG]))
        elif found.tags.get(EXPERIMENT_KIND_TAG[0]) != EXPERIMENT_KIND_TAG[1]:
            mlflow.MlflowClient(self.uri).set_experiment_tag(found.experiment_id,
                                                             *EXPERIMENT_KIND_TAG)
        return mlflow.set_experiment(experiment).experiment_id

    @contextlib.contextmanager
    def run(self, name: str, nested: bool = False, run_id: str | None = None
            ) -> Iterator[MLflowTracker]:
        """A run for the block: FINISHED on success, KILLED on an interrupt (Ctrl-C, SIGTERM
        from `scancel` or a time limit), FAILED on any other error. `run_id` reopens an
        earlier attempt's run (a `--resume` continues it instead of leaving it RUNNING)."""
        with self._locked():
            active = self._mlflow.start_run(run_id=run_id, run_name=None if run_id else name,
                                            nested=nested)
        previous, self.run_id = self.run_id, active.info.run_id
        previous_name, self.run_name = self.run_name, name
        status = "FAILED"
        try:
            yield self
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            with self._locked():
                client = self._mlflow.MlflowClient(self.uri)
                for child in self._children.values():
                    client.set_terminated(child, status)
                self._children.clear()
                self._mlflow.end_run(status)
            self.run_id, self.run_name = previous, previous_name

    def log_params(self, params: dict[str, Any]) -> None:
        clean = {metric_key(k): str(v)[:6000] for k, v in params.items()}
        with self._locked():
            self._mlflow.log_params(clean)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with self._locked():
            self._mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()},
                                     step=step)

    def log_artifact(self, path: Path | str, folder: str | None = None) -> None:
        with self._locked():
            self._mlflow.log_artifact(str(path), artifact_path=folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        with self._locked():
            self._mlflow.set_tags(tags)

    def close_stale(self, run_id: str) -> None:
        """Mark an earlier attempt's run KILLED if it was left RUNNING (killed with -9)."""
        with self._locked():
            client = self._mlflow.MlflowClient(self.uri)
            try:
                stale = client.get_run(run_id)
            except Exception:  # deleted, or from another store: nothing to close
                return
            children = client.search_runs([stale.info.experiment_id],
                                          f"tags.mlflow.parentRunId = '{run_id}'")
            for run in [stale, *children]:
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, "KILLED")

    def logged_steps(self, key: str) -> set[int]:
        """Steps already logged for metric `key` in the current run."""
        with self._locked():
            client = self._mlflow.MlflowClient(self.uri)
            return {m.step for m in client.get_metric_history(self.run_id, metric_key(key))}

    def start_stage(self, stage: str, index: int, params: dict[str, Any],
                    tags: dict[str, str]) -> None:
        """A nested run `<run>/stage<i>-<stage>` for one training stage, with its recipe as
        params and the parent's tags (closed with the parent run); a resumed run reopens
        the stage run it already has."""
        with self._locked():
            client = self._mlflow.MlflowClient(self.uri)
            if stage in self._children:
                return
            existing = client.search_runs(
                [self.experiment_id], f"tags.mlflow.parentRunId = '{self.run_id}' "
                f"and tags.stage = '{stage}'")
            if existing:
                self._children[stage] = existing[0].info.run_id
                client.update_run(existing[0].info.run_id, status="RUNNING")
                return
            child = client.create_run(
                self.experiment_id, run_name=f"{self.run_name}/stage{index + 1}-{stage}",
                tags={**tags, "mlflow.parentRunId": self.run_id or "", "stage": stage})
            self._children[stage] = child.info.run_id
            for key, value in params.items():
                client.log_param(child.info.run_id, metric_key(key), str(value)[:6000])

    def log_stage_metrics(self, stage: str, metrics: dict[str, float], step: int) -> None:
        """Log `train/<name>` metrics into the stage's nested run (`start_stage` first)."""
        with self._locked():
            client = self._mlflow.MlflowClient(self.uri)
            for key, value in metrics.items():
                client.log_metric(self._children[stage], metric_key(f"train/{key}"),
                                  float(value), step=step)


def log_summary_run(results_dir: Path, files: list[Path], params: dict[str, Any],
                    name: str = "tables-and-figures", experiment: str = "summary",
                    run_ids: list[str] = ()) -> str:
    """One MLflow run holding the tables and figures as artifacts (folders kept: `tables/`,
    `figures/<dataset>/`), tagged with the ids of the runs it summarizes; returns its id."""
    tracker = MLflowTracker(experiment, Path(results_dir))
    root = Path(results_dir).resolve()
    with tracker.run(name):
        tracker.log_params(params)
        ids = sorted(set(run_ids))
        tracker.set_tags({"wsolbench.summarized_runs": ",".join(ids),
                          "wsolbench.summarized_run_count": str(len(ids))})
        for path in files:
            path = Path(path).resolve()
            try:
                folder = str(path.parent.relative_to(root))
            except ValueError:  # outside results/: keep it at the top level
                folder = None
            tracker.log_artifact(path, folder)
        return tracker.run_id or ""
