"""Experiment tracking: MLflow (SQLite store under `results/`) or a null tracker for tests.

One MLflow run per `wsolbench run`, in an experiment named after the dataset. Params are the
resolved config flattened to dotted keys; metrics use `split/name` keys (valid MLflow keys).
Browse with: `mlflow ui --backend-store-uri sqlite:///results/mlflow.db --workers 1`.

Parallel jobs (`snakemake --cores 8`) share one SQLite store. SQLite allows one writer at a
time and MLflow's first connection creates the schema, which two processes must not do at
once; so every write goes through an inter-process lock on `mlflow.db.lock` beside the
database (held for milliseconds per call, released by the kernel if a job dies).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsolbench.fileio import file_lock

_KEY_OK = re.compile(r"[^0-9A-Za-z_\-./ ]")


def metric_key(name: str) -> str:
    """Make `name` a valid MLflow key (alphanumerics, `_ - . / space`)."""
    return _KEY_OK.sub("_", name)


def default_tracking_uri(results_dir: Path) -> str:
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


class NullTracker:
    """Accepts everything, stores nothing: for tests and `--no-mlflow`."""

    run_id: str | None = None

    @contextlib.contextmanager
    def run(self, name: str, nested: bool = False) -> Iterator[NullTracker]:
        yield self

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: Path | str, folder: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

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
        with self._locked():  # schema creation and experiment creation: one process at a time
            if mlflow.get_experiment_by_name(experiment) is None:
                artifacts = (Path(results_dir) / "mlartifacts" / experiment).resolve()
                mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri())
            self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        self.run_id: str | None = None
        self._children: dict[str, str] = {}

    def _locked(self):
        return file_lock(self._lock_path)

    @contextlib.contextmanager
    def run(self, name: str, nested: bool = False) -> Iterator[MLflowTracker]:
        with self._locked():
            active = self._mlflow.start_run(run_name=name, nested=nested)
        previous, self.run_id = self.run_id, active.info.run_id
        status = "FAILED"
        try:
            yield self
            status = "FINISHED"
        finally:
            with self._locked():
                client = self._mlflow.MlflowClient(self.uri)
                for child in self._children.values():
                    client.set_terminated(child, status)
                self._children.clear()
                self._mlflow.end_run(status)
            self.run_id = previous

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

    def log_stage_metrics(self, stage: str, metrics: dict[str, float], step: int) -> None:
        """Log into a nested run named after a training stage (created on first use)."""
        with self._locked():
            client = self._mlflow.MlflowClient(self.uri)
            if stage not in self._children:
                child = client.create_run(self.experiment_id, run_name=stage, tags={
                    "mlflow.parentRunId": self.run_id or "", "stage": stage})
                self._children[stage] = child.info.run_id
            for key, value in metrics.items():
                client.log_metric(self._children[stage], metric_key(key), float(value),
                                  step=step)


def log_summary_run(results_dir: Path, files: list[Path], params: dict[str, Any],
                    name: str = "tables-and-figures", experiment: str = "summary") -> str:
    """One MLflow run holding the tables and figures as artifacts (folders kept: `tables/`,
    `figures/<dataset>/`); returns its run id."""
    tracker = MLflowTracker(experiment, Path(results_dir))
    root = Path(results_dir).resolve()
    with tracker.run(name):
        tracker.log_params(params)
        for path in files:
            path = Path(path).resolve()
            try:
                folder = str(path.parent.relative_to(root))
            except ValueError:  # outside results/: keep it at the top level
                folder = None
            tracker.log_artifact(path, folder)
        return tracker.run_id or ""
