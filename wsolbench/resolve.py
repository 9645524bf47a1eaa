"""Names to objects: a dataset plugin to its `WSOLData`, a method name and preset to its
config and instance; checked before any data is read or generated."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from wsolbench.config import apply_overrides
from wsolbench.errors import WsolbenchError
from wsolbench.options import RunOptions
from wsolbench.method_config import MethodConfig
from wsolbench.registry import get_plugin, method_presets
from wsolbench.runpaths import RunPaths, run_key
from wsolbench.weights import shipped_sha256


def dataset_config(opts: RunOptions):
    """The dataset plugin's generator config with `--data-set` overrides, or None for a
    dataset read from disk (which takes none)."""
    plugin = get_plugin("datasets", opts.dataset)
    config_class = getattr(plugin, "config_class", None)
    if config_class is not None:
        return apply_overrides(config_class(), opts.dataset_overrides)
    if opts.dataset_overrides:
        raise WsolbenchError(f"dataset {opts.dataset!r} takes no --data-set overrides")
    return None


def load_dataset(opts: RunOptions):
    """The dataset plugin's `WSOLData` (synth generates on first use)."""
    plugin = get_plugin("datasets", opts.dataset)
    kwargs: dict[str, Any] = {}
    config = dataset_config(opts)
    if config is not None:
        kwargs["config"] = config
    if opts.fullsup_metadata:
        kwargs["fullsup_metadata"] = opts.fullsup_metadata
    if opts.fullsup_images:
        kwargs["fullsup_images"] = opts.fullsup_images
    root = opts.data_root
    if root is None and config is not None:
        root = opts.results_dir / "data"
    return plugin.load(root, **kwargs)


def resolve_method_config(name: str, preset: str | None, dataset: str,
                          overrides: dict[str, str]) -> tuple[MethodConfig, str]:
    """`(config, preset name)` of a trained method on `dataset`, checked (names, keys, values,
    model names) before any data is read or generated. Reads the plugin's presets without
    importing its model where the plugin registers them torch-free (`method_presets`)."""
    spec = method_presets(name)
    if getattr(spec, "posthoc", False):
        raise WsolbenchError(f"method {name!r} trains nothing: it explains a trained "
                             f"checkpoint (`wsolbench explain --checkpoint RUN/checkpoint.pt "
                             f"--method {name}`)")
    if preset is None:
        family = getattr(get_plugin("datasets", dataset), "family", dataset)
        preset = spec.default_presets.get(family, family)
        if preset not in spec.presets:
            raise WsolbenchError(
                f"method {name!r} has no preset for datasets of family {family!r} "
                f"({dataset}); give --preset ({', '.join(sorted(spec.presets))})")
    if preset not in spec.presets:
        raise WsolbenchError(f"method {name!r} has no preset {preset!r}; "
                             f"presets: {', '.join(sorted(spec.presets))}")
    config = apply_overrides(spec.presets[preset], overrides)
    config.check_models()
    return config, preset


def build_method(name: str, preset: str | None, dataset: str, overrides: dict[str, str],
                 num_classes: int):
    """Instantiate a method plugin from a preset plus `key=value` overrides."""
    config, preset = resolve_method_config(name, preset, dataset, overrides)
    return get_plugin("methods", name)(config, num_classes), preset


def check_splits(data) -> None:
    """Every split must be usable; the fair protocol needs train-fullsup."""
    from wsolbench.data.records import check_split

    check_split(data.train, "train", data.num_classes)
    check_split(data.test, "test", data.num_classes)
    if not data.fullsup:
        raise WsolbenchError(f"dataset {data.name!r} has no train-fullsup split: the fair "
                             "protocol needs one (give --fullsup-metadata/--fullsup-images)")
    check_split(data.fullsup, "fullsup", data.num_classes)


def run_paths(opts: RunOptions, pretrained: str | None = None) -> RunPaths:
    """The run folder of `opts` (docs/design.md §6), from names and configs only: no data is
    read, so the workflow computes the same folder before running. `pretrained` stands for
    the weights' identity (their pinned SHA-256, else their path) where `opts` does not carry
    them: the workflow names the folder before the weights file need exist."""
    cfg, preset = resolve_method_config(opts.method, opts.preset, opts.dataset,
                                        opts.overrides)
    data_config = dataset_config(opts)
    weights = pretrained or str(opts.pretrained_sha256 or opts.pretrained or "")
    identity = {
        "dataset": opts.dataset,
        "dataset_config": dataclasses.asdict(data_config) if data_config is not None else None,
        # Real data is identified by where it is read from; synth data by its config.
        "data_root": str(Path(opts.data_root).resolve()) if opts.data_root else None,
        "fullsup": [str(p) for p in (opts.fullsup_metadata, opts.fullsup_images) if p],
        "method": opts.method, "config": dataclasses.asdict(cfg),
        "pretrained": weights,
        "init_weights": shipped_sha256(cfg.init_weights)
        if cfg.init_weights and not weights else "",
        "protocol_steps": [opts.cam_curve_interval, opts.curve_step],
        "first_box_only": opts.first_box_only, "select_checkpoint": opts.select_checkpoint,
    }
    return RunPaths(Path(opts.results_dir), opts.dataset, opts.method,
                    run_key(preset, identity), opts.seed)
