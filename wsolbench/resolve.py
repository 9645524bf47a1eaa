"""Names to objects: a dataset plugin to its `WSOLData`, a method name and preset to its
config and instance; checked before any data is read or generated."""

from __future__ import annotations

from typing import Any

from wsolbench.config import apply_overrides
from wsolbench.errors import WsolbenchError
from wsolbench.options import RunOptions
from wsolbench.registry import get_plugin


def load_dataset(opts: RunOptions):
    """The dataset plugin's `WSOLData` (synth generates on first use)."""
    plugin = get_plugin("datasets", opts.dataset)
    kwargs: dict[str, Any] = {}
    config_class = getattr(plugin, "config_class", None)
    if config_class is not None:
        kwargs["config"] = apply_overrides(config_class(), opts.dataset_overrides)
    elif opts.dataset_overrides:
        raise WsolbenchError(f"dataset {opts.dataset!r} takes no --data-set overrides")
    if opts.fullsup_metadata:
        kwargs["fullsup_metadata"] = opts.fullsup_metadata
    if opts.fullsup_images:
        kwargs["fullsup_images"] = opts.fullsup_images
    root = opts.data_root
    if root is None and config_class is not None:
        root = opts.results_dir / "data"
    return plugin.load(root, **kwargs)


def resolve_method_config(name: str, preset: str | None, dataset: str,
                          overrides: dict[str, str]):
    """`(method class, config, preset name)`; checked before any data is read or generated."""
    method_cls = get_plugin("methods", name)
    preset = preset or ("synth" if dataset.startswith("synth") else dataset)
    if preset not in method_cls.presets:
        raise WsolbenchError(f"method {name!r} has no preset {preset!r}; "
                             f"presets: {', '.join(sorted(method_cls.presets))}")
    return method_cls, apply_overrides(method_cls.presets[preset], overrides), preset


def build_method(name: str, preset: str | None, dataset: str, overrides: dict[str, str],
                 num_classes: int):
    """Instantiate a method plugin from a preset plus `key=value` overrides."""
    method_cls, config, preset = resolve_method_config(name, preset, dataset, overrides)
    return method_cls(config, num_classes), preset


def check_splits(data) -> None:
    """Every split must be usable; the fair protocol needs train-fullsup."""
    from wsolbench.data.records import check_split

    check_split(data.train, "train", data.num_classes)
    check_split(data.test, "test", data.num_classes)
    if not data.fullsup:
        raise WsolbenchError(f"dataset {data.name!r} has no train-fullsup split: the fair "
                             "protocol needs one (give --fullsup-metadata/--fullsup-images)")
    check_split(data.fullsup, "fullsup", data.num_classes)
