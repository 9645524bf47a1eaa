import subprocess
import sys

import pytest

from wsolbench.errors import WsolbenchError
from wsolbench.registry import get_plugin, list_plugins


def test_builtin_plugins_are_registered_through_entry_points():
    assert "cam" in list_plugins("methods")
    assert {"classification", "loc_acc", "maxboxacc", "maxboxacc_v2", "pxap"} <= set(
        list_plugins("protocols"))
    assert {"cub", "synth-cub"} <= set(list_plugins("datasets"))


def test_wildcards():
    assert list_plugins("protocols", "maxbox*") == ["maxboxacc", "maxboxacc_v2"]
    assert list_plugins("datasets", "synth-*") == ["synth-cub", "synth-imagenet",
                                                   "synth-openimages", "synth-pretrain"]
    assert list_plugins("methods", "zzz*") == []


def test_unknown_name_suggests_the_closest():
    with pytest.raises(WsolbenchError, match="did you mean 'cam'"):
        get_plugin("methods", "camm")
    with pytest.raises(WsolbenchError, match="unknown plugin kind"):
        list_plugins("models")


def test_duplicate_name_is_an_error(monkeypatch):
    from importlib.metadata import EntryPoint

    import wsolbench.registry as registry

    eps = [EntryPoint("cam", "methods.cam:CAM", "wsolbench.methods"),
           EntryPoint("cam", "other.pkg:CAM", "wsolbench.methods")]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    registry.clear_cache()
    try:
        with pytest.raises(WsolbenchError, match="registered twice"):
            list_plugins("methods")
    finally:
        registry.clear_cache()


def test_method_presets_come_from_the_torch_free_group_else_from_the_class(monkeypatch):
    """The built-in methods' presets are the objects their classes carry (one copy); a
    method without a `wsolbench.method_presets` entry point is read from its class."""
    from importlib.metadata import EntryPoint

    import wsolbench.registry as registry
    from wsolbench.method_config import MethodPresets

    for name in ("cam", "tscam", "trt"):
        spec = registry.method_presets(name)
        cls = get_plugin("methods", name)
        assert isinstance(spec, MethodPresets)
        assert spec.presets is cls.presets and spec.config_class is cls.config_class
    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [] if group == (
        registry.PRESETS_GROUP) else real(group=group))
    registry.clear_cache()
    try:
        assert registry.method_presets("cam") is get_plugin("methods", "cam")
        with pytest.raises(WsolbenchError, match="did you mean 'cam'"):
            registry.method_presets("camm")
    finally:
        registry.clear_cache()
    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint(
        "cam", "wsolbench.no_such_module:PRESETS", group)] if group == registry.PRESETS_GROUP
        else real(group=group))
    registry.clear_cache()
    try:
        with pytest.raises(WsolbenchError, match="method presets 'cam'.*failed to load"):
            registry.method_presets("cam")
    finally:
        registry.clear_cache()


def test_a_preset_of_another_config_class_is_refused():
    from wsolbench.method_config import MethodConfig, MethodPresets, ViTMethodConfig

    with pytest.raises(WsolbenchError, match="preset 'synth' is a MethodConfig, not a "
                                             "ViTMethodConfig"):
        MethodPresets(ViTMethodConfig, {"synth": MethodConfig()})


def test_listing_does_not_import_torch():
    code = ("import sys; from wsolbench.cli import cli; "
            "cli.main(['list', 'methods'], standalone_mode=False); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "cam" in out.stdout


@pytest.mark.slow
def test_plugins_load_beside_a_users_own_methods_and_protocols(tmp_path):
    """The built-in plugins install as `wsolbench.methods` / `wsolbench.protocols`: a user's
    `methods.py` and `protocols/` package in the working directory (first on sys.path)
    neither break plugin loading nor get wsolbench's modules grafted on."""
    (tmp_path / "methods.py").write_text("MINE = 'methods'\n")
    (tmp_path / "protocols").mkdir()
    (tmp_path / "protocols" / "__init__.py").write_text("MINE = 'protocols'\n")
    code = ("import methods, protocols\n"
            "from wsolbench.registry import get_plugin, list_plugins\n"
            "names = [get_plugin('methods', n).__module__ for n in list_plugins('methods')]\n"
            "names += [get_plugin('protocols', n).__module__ for n in list_plugins('protocols')]\n"
            "import sys\n"
            "assert methods.MINE == 'methods' and protocols.MINE == 'protocols'\n"
            "assert not [m for m in sys.modules if m.startswith(('methods.', 'protocols.'))]\n"
            "print(sorted(set(names)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "wsolbench.methods.trt" in out.stdout and "wsolbench.protocols.pxap" in out.stdout
