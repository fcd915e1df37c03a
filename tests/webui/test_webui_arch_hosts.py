"""The A1111 adapter refuses a fused LoRA for a base model A1111 does not run, naming the model,
before it touches the host (the architecture's descriptor says which hosts run it)."""

import pytest
import torch

import lora_factory as F
from lib_nplora.formats.reader import load_pair
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams
from lib_nplora.webui.hosts import HostError
from lib_nplora.webui.hosts.a1111 import build_network


class UntouchedHost:
    """Stands for the host's networks module, model and Network class: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the host was touched ({name}) for a model it does not run")


@pytest.mark.parametrize("arch_name,module,label", [
    ("zimage", "unet.layers.0.attention.out", "Z-Image"),
    ("qwenimage", "unet.transformer_blocks.0.img_mod.1", "Qwen-Image"),
    ("flux2", "unet.single_blocks.0.linear1", "FLUX.2"),
    ("chroma", "unet.distilled_guidance_layer.in_proj", "Chroma"),
    ("flux", "unet.double_blocks.0.img_mod.lin", "FLUX"),
])
def test_a1111_refuses_models_it_does_not_run(tmp_path, arch_name, module, label):
    row = F.rows_by_name(arch_name)[module]
    c = F.make_lora(tmp_path / "c.safetensors", arch_name, [row], rank=2, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", arch_name, [row], rank=2, seed=2)
    fused = fuse(*load_pair(c.path, s.path), FuseParams(), dtype=torch.float32)
    host = UntouchedHost()
    with pytest.raises(HostError, match=f"AUTOMATIC1111 cannot run {label} models") as e:
        build_network(fused, host, host, host, "nplora")
    assert "Forge Neo or ComfyUI" in e.value.hint
