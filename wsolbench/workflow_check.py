"""The workflow config checked with the same code `wsolbench run` uses (docs/design.md).

The JSON schema (workflow/schemas/) checks the config's shape; this checks its content
against the installed plugins: every dataset and method name, every `set:` key and value of
a method (through its preset, for every dataset it runs on), every `data_set:` knob. So
`snakemake -n` fails on a typo with the offending key instead of a job failing hours later.
"""

from __future__ import annotations

from typing import Any

from wsolbench.errors import WsolbenchError
from wsolbench.search import search_candidates


def _values(mapping: dict[str, Any]) -> dict[str, str]:
    """Config values as the CLI receives them (`--set k=v`): lists comma-joined."""
    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return {k: text(v) for k, v in (mapping or {}).items()}


def check_workflow_config(config: dict[str, Any]) -> None:
    """Raise `WsolbenchError` naming the config key at fault (e.g. `methods.trt.set`)."""
    from wsolbench.config import apply_overrides
    from wsolbench.registry import get_plugin
    from wsolbench.resolve import resolve_method_config

    search_seeds = config.get("search_seeds", len(config["seeds"]))
    if search_seeds > len(config["seeds"]):
        raise WsolbenchError(f"config search_seeds: {search_seeds} is more than the "
                             f"{len(config['seeds'])} seeds of `seeds:`")

    for name, entry in config["datasets"].items():
        where = f"config datasets.{name}"
        try:
            plugin = get_plugin("datasets", name)
        except WsolbenchError as exc:
            raise WsolbenchError(f"{where}: {exc}") from None
        knobs = (entry or {}).get("data_set") or {}
        config_class = getattr(plugin, "config_class", None)
        if knobs and config_class is None:
            raise WsolbenchError(f"{where}.data_set: dataset {name!r} takes no generator "
                                 "knobs")
        if config_class is not None:
            try:
                apply_overrides(config_class(), _values(knobs))
            except WsolbenchError as exc:
                raise WsolbenchError(f"{where}.data_set: {exc}") from None
    for name, entry in config["methods"].items():
        entry = entry or {}
        # The entry's own `set` first, so an error there names `set`; then every grid point.
        checks = [("set" if entry.get("set") else "preset", entry)]
        if entry.get("search"):
            checks += [("search", candidate) for candidate in search_candidates(entry)]
        for key, candidate in checks:
            for dataset in config["datasets"]:
                try:
                    resolve_method_config(name, entry.get("preset"), dataset,
                                          _values(candidate.get("set")))
                except WsolbenchError as exc:
                    raise WsolbenchError(f"config methods.{name}.{key} (for dataset "
                                         f"{dataset!r}): {exc}") from None
    check_explainers(config)
    for name in (config.get("evaluation") or {}).get("protocols", []):
        try:
            get_plugin("protocols", name)
        except WsolbenchError as exc:
            raise WsolbenchError(f"config evaluation.protocols: {exc}") from None


def _run_options(config: dict[str, Any], dataset: str, method: str):
    """The `RunOptions` of one (dataset, method) job: the options
    `workflow/rules/common.smk::run_args` passes to `wsolbench run`, less the pretrained
    weights (named by `_pretrained_identity`: a dry run must not need the file)."""
    from pathlib import Path

    from wsolbench.options import RunOptions

    data_entry = config["datasets"][dataset] or {}
    method_entry = config["methods"].get(method) or {}
    evaluation = config.get("evaluation") or {}

    def path(value: Any) -> Path | None:
        return Path(value) if value else None

    return RunOptions(
        method=method, dataset=dataset, preset=method_entry.get("preset"),
        results_dir=Path(config.get("results_dir", "results")),
        data_root=path(data_entry.get("data_root")),
        fullsup_metadata=path(data_entry.get("fullsup_metadata")),
        fullsup_images=path(data_entry.get("fullsup_images")),
        overrides=_values(method_entry.get("set")),
        dataset_overrides=_values(data_entry.get("data_set")),
        cam_curve_interval=float(evaluation.get("cam_curve_interval", 0.001)),
        first_box_only=bool(data_entry.get("first_box_only", False)))


def _pretrained_identity(config: dict[str, Any], method: str) -> str | None:
    """A method's weights as the run key sees them (`resolve.run_paths`): the pinned SHA-256,
    else the path as `wsolbench run` receives it; the file need not exist yet."""
    from pathlib import Path

    entry = config["methods"].get(method) or {}
    if entry.get("pretrained_sha256") and entry.get("pretrained"):
        return str(entry["pretrained_sha256"])
    return str(Path(entry["pretrained"])) if entry.get("pretrained") else None


def workflow_run_key(config: dict[str, Any], dataset: str, method: str) -> str:
    """The run key (`wsolbench.runpaths`) `wsolbench run` will use for one (dataset, method)
    of the workflow config, so Snakemake names the folder the run writes. A method with a
    `search:` grid has one per grid point: `workflow_candidates`."""
    from wsolbench.resolve import run_paths

    if (config["methods"].get(method) or {}).get("search"):
        raise WsolbenchError(f"config methods.{method}: a searched method has one run key "
                             "per candidate (workflow_candidates), not one")
    return run_paths(_run_options(config, dataset, method),
                     _pretrained_identity(config, method)).key


def with_method_entry(config: dict[str, Any], method: str,
                      entry: dict[str, Any]) -> dict[str, Any]:
    """`config` with `methods.<method>` replaced by `entry` (a shallow copy)."""
    return {**config, "methods": {**config["methods"], method: entry}}


def workflow_candidates(config: dict[str, Any], dataset: str,
                        method: str) -> list[tuple[str, dict[str, Any]]]:
    """`(run key, method entry)` of every candidate of a method on a dataset, in grid order:
    one per point of its `search:` grid (wsolbench.search), or the entry itself."""
    entry = config["methods"].get(method) or {}
    return [(workflow_run_key(with_method_entry(config, method, candidate), dataset, method),
             candidate) for candidate in search_candidates(entry)]


def workflow_explainer_key(config: dict[str, Any], dataset: str, explainer: str,
                           method: str) -> str:
    """The run key `wsolbench explain` will use for `explainer` on the workflow's run of
    `method` on `dataset` (the explainer plugin need not be installed to name it)."""
    from wsolbench.explain import explainer_run_key

    return explainer_run_key(_run_options(config, dataset, method), explainer, None,
                             workflow_run_key(config, dataset, method))


def check_explainers(config: dict[str, Any]) -> None:
    """`explainers:` must name trained methods and datasets of this config."""
    entry = config.get("explainers")
    if not entry:
        return
    for key, known, what in (("explain", config["methods"], "methods"),
                             ("datasets", config["datasets"], "datasets")):
        unknown = [n for n in entry[key] if n not in known]
        if unknown:
            raise WsolbenchError(f"config explainers.{key}: {', '.join(unknown)} not under "
                                 f"`{what}:` ({', '.join(known)})")
