"""The X/Y/Z LoRA-set axis: one value sets the content and the style sets together, through the
same attributes as the content and style axes, and every name is checked when the plot starts."""

from types import SimpleNamespace

import pytest

from lib_nplora.errors import ParameterError
from lib_nplora.webui import xyz
from webui.standins.webui_modules import standin_xyz_module, standin_xyz_scripts_data


def test_lora_set_axis_sets_both_sides_and_checks_every_name():
    checked = []
    spec = xyz.lora_set_spec(lambda name, role: checked.append((name, role)))
    p = SimpleNamespace()
    spec["apply"](p, " dog + hat*0.5 |ink ", [])
    assert (p.nplora_content, p.nplora_style) == ("dog + hat*0.5", "ink")
    assert xyz.overrides(p) == {"nplora_content": "dog + hat*0.5", "nplora_style": "ink"}
    spec["confirm"](p, ["dog | ink + oil*2"])
    assert checked == [("dog", "content"), ("ink", "style"), ("oil", "style")]
    for bad in ("dog", "a | b | c", "dog*x | ink"):
        with pytest.raises(ParameterError):
            spec["confirm"](p, [bad])


def test_content_axis_takes_sets_and_the_set_axis_is_registered_once():
    checked = []
    module = standin_xyz_module()
    data = standin_xyz_scripts_data(module)
    xyz.register(data, lambda: ["dog", "ink"], lambda name, role: checked.append((name, role)))
    assert xyz.register(data, lambda: [], lambda name, role: None) == 0  # Reload UI: nothing twice
    by_label = {o.label: o for o in module.axis_options}
    assert xyz.LORA_SET_LABEL in by_label
    by_label[xyz.LABEL_PREFIX + "content LoRA"].confirm(SimpleNamespace(), ["dog + hat*0.5"])
    assert checked == [("dog", "content"), ("hat", "content")]
