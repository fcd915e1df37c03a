"""NP-LoRA on a real WebUI whose weights are stored in low bits (A1111's "FP8 weight", Forge's
"Diffusion in Low Bits"). Runs only when the WebUI was started that way, e.g. with
``NPLORA_WEBUI_ARGS="--ui-settings-file low-bit.json"`` and in that file
``{"fp8_storage": "Enable", "cache_fp16_weight": true}`` (A1111) or
``{"forge_unet_storage_dtype": "float8-e4m3fn (fp16 LoRA)"}`` (Forge, Forge Neo) or
``{"fp8_storage": true}`` (Forge Classic); otherwise it skips. Forge Classic stores the UNet in fp8
only on an NVIDIA GPU (``model_management.prefer_fp8``), so on a CPU install it runs in full
precision whatever the setting says: the test reads the image's infotext (``FP8 weight: True``)
and skips when the host did not store fp8. A Forge that loads a ``.gguf`` checkpoint (Forge Neo,
Forge main; ``tools/e2e-hosts/make_gguf.py`` writes one) stores its quantized UNet weights as GGUF
whatever the setting: that runs too.
"""

from __future__ import annotations

import numpy as np
import pytest

from e2e_loras import NAMES
from test_e2e_webui import PROMPT, TAG, one, warning_of

C = NAMES["content"]


def low_bit_mode(webui) -> str | None:
    opts = webui.get("/sdapi/v1/options")
    if webui.forge and ".gguf" in str(opts.get("sd_model_checkpoint", "")).lower():  # its title: "name.gguf [hash]"
        return "gguf"
    if webui.host == "a1111" and opts.get("fp8_storage") == "Enable":
        return "fp8, fp16 cache" if opts.get("cache_fp16_weight") else "fp8"
    if webui.forge and opts.get("forge_unet_storage_dtype", "Automatic") != "Automatic":
        return opts["forge_unet_storage_dtype"]
    if webui.host == "forge_classic" and opts.get("fp8_storage") is True:
        return "classic fp8"
    return None


def test_low_bit_weights_get_the_fusion_and_the_user_is_told_what_the_host_drops(webui):
    mode = low_bit_mode(webui)
    if mode is None:
        pytest.skip("the WebUI was not started with low-bit weight storage (see this module's docstring)")
    base, base_info, _ = one(webui, PROMPT)
    if mode == "classic fp8" and "FP8 weight: True" not in base_info["infotexts"][0]:
        pytest.skip("Forge Classic was set to fp8 storage but stores fp8 only on an NVIDIA GPU: this host runs "
                    "the UNet in full precision")
    tagged, info, _ = one(webui, f"{PROMPT} {TAG}")
    assert info["extra_generation_params"]["NP-LoRA"] == "True"
    assert not np.array_equal(base, tagged)
    with_other, info_other, _ = one(webui, f"{PROMPT} <lora:{C}:0.5> {TAG}")
    assert info_other["extra_generation_params"]["NP-LoRA"] == "True"
    if mode == "fp8, fp16 cache":  # A1111 then applies only the last network: said in the infotext
        assert "only the last network" in warning_of(info_other) and C in warning_of(info_other)
    else:
        assert "NP-LoRA warning" not in info_other["extra_generation_params"]
        assert not np.array_equal(with_other, tagged)  # the user's LoRA still applies
    after, _, _ = one(webui, PROMPT)
    assert np.array_equal(base, after)  # NP-LoRA off: the host restores its backed-up weights
