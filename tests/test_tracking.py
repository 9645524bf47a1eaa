"""Eight processes writing to one fresh MLflow SQLite store: no run lost or corrupted."""

import multiprocessing as mp
from pathlib import Path

import pytest

N_WRITERS = 8
N_EPOCHS = 15


def _writer(args: tuple[str, int]) -> str:
    import os

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from wsolbench.tracking import MLflowTracker

    results_dir, index = Path(args[0]), args[1]
    tracker = MLflowTracker("synth-cub", results_dir)  # all create the experiment at once
    artifact = results_dir / f"artifact_{index}.json"
    artifact.write_text(f'{{"writer": {index}}}')
    with tracker.run(f"writer-{index}"):
        tracker.set_tags({"writer": str(index)})
        tracker.log_params({"index": index, "config.lr": 0.001 * index})
        tracker.start_stage("tpsm", 0, {"epochs": N_EPOCHS}, {"writer": str(index)})
        for epoch in range(1, N_EPOCHS + 1):
            tracker.log_metrics({"train/loss": 1.0 / epoch + index}, step=epoch)
            tracker.log_stage_metrics("tpsm", {"loss": float(epoch)}, step=epoch)
        tracker.log_metrics({"test/maxboxacc_v2/mean": 50.0 + index})
        tracker.log_artifact(artifact)
        return tracker.run_id


@pytest.mark.slow
def test_eight_concurrent_writers_on_a_fresh_store(tmp_path):
    import mlflow

    ctx = mp.get_context("spawn")
    with ctx.Pool(N_WRITERS) as pool:
        run_ids = pool.map(_writer, [(str(tmp_path), i) for i in range(N_WRITERS)])
    assert len(set(run_ids)) == N_WRITERS
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name == "synth-cub"]
    assert len(experiments) == 1
    for run_id in run_ids:
        run = client.get_run(run_id)
        index = int(run.data.tags["writer"])
        assert run.info.status == "FINISHED"
        assert run.data.params["index"] == str(index)
        assert run.data.metrics["test/maxboxacc_v2/mean"] == 50.0 + index
        history = client.get_metric_history(run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(1, N_EPOCHS + 1))
        assert [a.path for a in client.list_artifacts(run_id)] == [f"artifact_{index}.json"]
    children = client.search_runs([experiments[0].experiment_id],
                                  filter_string="tags.stage = 'tpsm'")
    assert len(children) == N_WRITERS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == set(run_ids)
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "train/loss")) == N_EPOCHS
        assert child.info.run_name == f"writer-{child.data.tags['writer']}/stage1-tpsm"
