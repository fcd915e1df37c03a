"""The X/Y/Z plot script is found by what it is: the stock ``scripts/xyz_grid.py`` or Forge
Classic's ``extensions-builtin/xyz`` (``lib_xyz``), whatever name the loader gives its module."""

from __future__ import annotations

from types import SimpleNamespace

from lib_nplora.webui import xyz
from webui.standins.forge_classic import StandInClassicXyz, standin_classic_xyz_module
from webui.standins.webui_modules import StandInScriptClassData, standin_xyz_module, standin_xyz_scripts_data


class Named:
    """A script class loaded under ``module_name``."""


def data(cls, module, module_name, path):
    cls = type(cls.__name__, (cls,), {"__module__": module_name})
    return StandInScriptClassData(cls, path, ".", module)


def checker():
    return lambda name, role: None


def test_classic_xyz_extension_gets_the_axes():
    module = standin_classic_xyz_module()
    scripts_data = [data(StandInClassicXyz, module, "xyz_grid.py", "extensions-builtin/xyz/scripts/xyz_grid.py")]
    added = xyz.register(scripts_data, lambda: ["content", "style"], checker())
    assert added > 0
    assert all(type(o) is module.AxisOption for o in module.axis_options)  # its ui() filters by type
    assert [o.label for o in module.axis_options[:2]] == ["Nothing", "Seed"]  # appended, never inserted


def test_found_under_another_module_name_and_decoys_are_skipped():
    module = standin_classic_xyz_module()
    decoy = SimpleNamespace(axis_options=[object()])  # a peer script holding a list of that name
    no_class = SimpleNamespace(axis_options=list(module.axis_options))  # the list, without AxisOption
    scripts_data = [data(Named, decoy, "peer.py", "extensions/peer/scripts/peer.py"),
                    data(Named, no_class, "peer2.py", "extensions/peer2/scripts/peer2.py"),
                    data(StandInClassicXyz, module, "xyz_plot.py", "extensions-builtin/xyz/scripts/xyz_plot.py")]
    assert xyz.find_xyz_module(scripts_data) is module


def test_the_stock_script_wins_over_a_copy_elsewhere():
    stock = standin_xyz_module()
    copy = standin_classic_xyz_module()
    scripts_data = [data(Named, copy, "other_grid.py", "extensions/other/scripts/other_grid.py"),
                    *standin_xyz_scripts_data(stock)]
    assert xyz.find_xyz_module(scripts_data) is stock


def test_no_xyz_script_means_no_axes():
    assert xyz.find_xyz_module([data(Named, SimpleNamespace(), "a.py", "scripts/a.py")]) is None
