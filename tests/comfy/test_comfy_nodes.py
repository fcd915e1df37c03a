"""The nodes' inputs (from the parameter table), errors, Save and Analyze, on real LoRA files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import lora_factory as lf
from comfy_models import build
from lib_nplora.app.index import LoraNotFoundError
from lib_nplora.errors import ArchitectureError, NpLoraError, ParameterError
from lib_nplora.formats.atomic import OutputExistsError, OutputIsInputError
from lib_nplora.params import MAX_K, UI_PARAMS
from lib_nplora.comfy import nodes
from lib_nplora.comfy.inputs import FIRST_ROWS, request_of

ROWS = lf.select("sd1", "attn", components=("unet",), blocks=("input_blocks.1.",))
PARAMS = dict(content_weight=1.0, style_weight=1.0, mu=0.5, hard=False, k=0, scope="unet", method="nplora")


@pytest.fixture
def pair(loras):
    (loras / "styles").mkdir()
    lf.make_lora(loras / "dog.safetensors", "sd1", ROWS, rank=4, seed=1)
    lf.make_lora(loras / "styles" / "ink.safetensors", "sd1", ROWS, rank=4, seed=2)
    lf.make_lora(loras / "xl_a.safetensors", "sdxl", lf.select("sdxl", "attn", blocks=("input_blocks.7.1.",)),
                 rank=2, seed=3)
    lf.make_lora(loras / "xl_b.safetensors", "sdxl", lf.select("sdxl", "attn", blocks=("input_blocks.7.1.",)),
                 rank=2, seed=4)
    (loras / "pickled.pt").write_bytes(b"not opened")
    return loras


def test_loader_inputs_are_the_parameter_tables_widget_rows(pair):
    types = nodes.NpLoraLoader.INPUT_TYPES()
    req = {**types["required"], **types["optional"]}
    assert list(req) == ["model", "clip"] + [p.name for p in UI_PARAMS] + ["contents", "styles"]
    # the rows the nodes first shipped with are required; every later row is optional (old workflows validate)
    assert list(types["required"]) == ["model", "clip"] + list(FIRST_ROWS)
    assert set(types["optional"]) == {p.name for p in UI_PARAMS} - set(FIRST_ROWS) | {"contents", "styles"}
    assert types["optional"]["contents"][0] == types["optional"]["styles"][0] == "NPLORA_SET"
    assert req["content"][0] == req["style"][0] == ["dog.safetensors", "styles/ink.safetensors", "xl_a.safetensors",
                                                    "xl_b.safetensors"]  # no .pt: never unpickled
    kinds = {p.name: p.kind for p in UI_PARAMS}
    for name, spec in req.items():
        kind = kinds.get(name)
        if kind == "number":
            assert spec[0] == "FLOAT" and spec[1]["min"] <= spec[1]["default"] <= spec[1]["max"]
        elif kind == "flag":
            assert spec[0] == "BOOLEAN"
        elif kind == "choice":
            assert spec[0] == list(next(p for p in UI_PARAMS if p.name == name).choices)
        elif kind == "rank":
            assert spec == ("INT", {"tooltip": spec[1]["tooltip"], "default": 0, "min": 0, "max": MAX_K})
    assert nodes.NpLoraLoader.RETURN_TYPES == ("MODEL", "CLIP")
    save = nodes.NpLoraSave.INPUT_TYPES()
    assert list(save["required"]) == list(FIRST_ROWS) + ["file_name", "overwrite"]
    assert list(save["optional"]) == [p.name for p in UI_PARAMS if p.name not in FIRST_ROWS] + ["contents", "styles"]
    analyze = nodes.NpLoraAnalyze.INPUT_TYPES()
    assert list({**analyze["required"], **analyze["optional"]}) == [p.name for p in UI_PARAMS
                                                                    if p.kind == "lora" or p.analysis] \
        + ["contents", "styles"]
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)


def test_request_of_reads_k_zero_as_full_rank_and_checks_ranges():
    r = request_of(dict(content="a.safetensors", style="b.safetensors", **PARAMS))
    assert r.params.k is None and r.params.mu == 0.5 and r.content == "a.safetensors"
    assert request_of(dict(content="a", style="b", **dict(PARAMS, k=8, hard=True))).params.c == 1.0
    with pytest.raises(ParameterError, match="mu"):
        request_of(dict(content="a", style="b", **dict(PARAMS, mu=-1.0)))


def test_a_name_not_in_the_list_is_a_clear_error(pair):
    model, clip = build("sd1", [r["name"] for r in ROWS])
    for bad in ("nope.safetensors", "../dog.safetensors", "pickled.pt", "/etc/passwd"):
        with pytest.raises(LoraNotFoundError, match="not in ComfyUI's loras list"):
            nodes.NpLoraLoader().load(model, clip, content=bad, style="dog.safetensors", **PARAMS)


def test_a_pair_for_another_model_is_a_clear_error(pair):
    model, clip = build("sd1", [r["name"] for r in ROWS])
    with pytest.raises(NpLoraError) as e:
        nodes.NpLoraLoader().load(model, clip, content="xl_a.safetensors", style="xl_b.safetensors", **PARAMS)
    assert "xl_a" in str(e.value) or "xl_b" in str(e.value)


def test_a_model_type_without_a_table_is_a_clear_error(pair):
    from comfy import supported_models

    model, clip = build("sd1", [r["name"] for r in ROWS])
    model.model.model_config = supported_models.SDXLRefiner()
    with pytest.raises(ArchitectureError, match="SDXLRefiner"):
        nodes.NpLoraLoader().load(model, clip, content="dog.safetensors", style="styles/ink.safetensors", **PARAMS)
    model.model.model_config = supported_models.FluxSchnell()
    with pytest.raises(NpLoraError, match="dog"):  # read for FLUX: an SD1 file does not fit
        nodes.NpLoraLoader().load(model, clip, content="dog.safetensors", style="styles/ink.safetensors", **PARAMS)


@pytest.mark.parametrize("config, arch", [("Chroma", "chroma"), ("QwenImage", "qwenimage"), ("FluxSchnell", "flux"),
                                          ("SD20", "sd2"), ("ZImage", "zimage")])
def test_comfyuis_model_type_selects_the_architecture(config, arch):
    from comfy import supported_models

    from lib_nplora.comfy.models import arch_of

    model, _ = build("sd1", [])
    model.model.model_config = getattr(supported_models, config)()
    assert arch_of(model) == arch


@pytest.mark.parametrize("hidden, arch", [(6144, "flux2"), (3072, "flux2klein4b"), (4096, "flux2klein9b")])
def test_comfyuis_flux2_model_type_selects_the_size_by_its_hidden_size(hidden, arch):
    """ComfyUI's ``Flux2`` config (a ``Flux`` subclass) holds FLUX.2-dev and both klein sizes; the
    hidden size its detection derived picks the table, never FLUX.1's."""
    from comfy import supported_models

    from lib_nplora.comfy.models import arch_of

    model, _ = build("sd1", [])
    model.model.model_config = supported_models.Flux2({"image_model": "flux2", "hidden_size": hidden})
    assert arch_of(model) == arch
    model.model.model_config = supported_models.Flux2({"image_model": "flux2", "hidden_size": 2048})
    with pytest.raises(ArchitectureError, match="hidden size 2048"):
        arch_of(model)


@pytest.mark.parametrize("config", ["ChromaRadiance", "ZImagePixelSpace", "HiDreamO1", "Hunyuan3Dv2"])
def test_a_chroma_radiance_or_other_model_type_is_refused_by_name(config):
    from comfy import supported_models

    from lib_nplora.comfy.models import arch_of

    model, _ = build("sd1", [])
    model.model.model_config = getattr(supported_models, config)()
    with pytest.raises(ArchitectureError, match=config) as e:
        arch_of(model)
    assert "Lumina-Image-2.0, Wan 2.1 / 2.2, HiDream-I1 or SD3.5" in e.value.hint


#: every Wan config class of ComfyUI a125cd84 and 783545f6 (all derive from WAN21_T2V)
WAN_CONFIGS = ("WAN21_T2V", "WAN21_I2V", "WAN21_FunControl2V", "WAN21_Camera", "WAN22_Camera", "WAN21_Vace",
               "WAN21_HuMo", "WAN22_S2V", "WAN22_Animate", "WAN22_T2V", "WAN21_CausalAR_T2V", "WAN_Animate2",
               "WAN21_FlowRVS", "WAN21_SCAIL", "WAN21_SCAIL2", "WAN22_WanDancer")


@pytest.mark.parametrize("config", WAN_CONFIGS)
@pytest.mark.parametrize("dim, arch", [(5120, "wan14b"), (3072, "wan5b"), (1536, "wan1b")])
def test_every_comfyui_wan_model_type_selects_the_size_by_its_dim(config, dim, arch):
    """ComfyUI's Wan configs hold all sizes; the ``dim`` its detection read picks the table, and a
    size NP-LoRA has no table for is refused naming the model type and the size."""
    from comfy import supported_models

    from lib_nplora.comfy.models import arch_of

    model, _ = build("sd1", [])
    model.model.model_config = getattr(supported_models, config)({"image_model": "wan2.1", "dim": dim})
    assert arch_of(model) == arch
    model.model.model_config = getattr(supported_models, config)({"image_model": "wan2.1", "dim": 2048})
    with pytest.raises(ArchitectureError, match=f"Wan model \\({config}\\) of hidden size 2048") as e:
        arch_of(model)
    assert "14B (5120)" in e.value.hint and "1.3B (1536)" in e.value.hint


@pytest.mark.parametrize("unet, arch", [({"depth": 38, "x_block_self_attn_layers": []}, "sd35l"),
                                        ({"depth": 24, "x_block_self_attn_layers": list(range(13))}, "sd35m")])
def test_comfyuis_sd3_model_type_selects_large_or_medium_by_its_depth(unet, arch):
    """SD3.5 Large (depth 38) and SD3.5 Medium (24, MMDiT-X); another depth is refused naming it,
    and SD3 Medium (3.0: depth 24 without the second attention, whose blocks 0-12 modulation has
    other rows than the SD3.5 Medium table's) is refused naming the shapes."""
    from comfy import supported_models

    from lib_nplora.comfy.models import arch_of

    model, _ = build("sd1", [])
    model.model.model_config = supported_models.SD3(unet)
    assert arch_of(model) == arch
    model.model.model_config = supported_models.SD3({"depth": 18})
    with pytest.raises(ArchitectureError, match="SD3 model \\(SD3\\) of depth 18") as e:
        arch_of(model)
    assert "SD3.5 Large (38)" in e.value.hint
    model.model.model_config = supported_models.SD3({"depth": 24, "x_block_self_attn_layers": []})
    with pytest.raises(ArchitectureError, match="SD3 Medium \\(3.0\\).*9216 rows where SD3.5 Medium's has 13824"):
        arch_of(model)


def test_comfyuis_lumina2_and_hidream_model_types_select_their_tables():
    """``Lumina2`` with Lumina-Image-2.0's caption width is ``lumina2`` (its subclass ``ZImage``
    stays Z-Image); another width (NewBie's Gemma-3, a Z-Image checkpoint in a ComfyUI without
    ``ZImage``) is refused naming it; ``HiDream`` is ``hidream``."""
    from comfy import supported_models

    from lib_nplora.comfy.models import arch_of

    model, _ = build("sd1", [])
    model.model.model_config = supported_models.Lumina2({"image_model": "lumina2", "dim": 2304, "cap_feat_dim": 2304})
    assert arch_of(model) == "lumina2"
    model.model.model_config = supported_models.ZImage({"image_model": "lumina2", "dim": 3840, "cap_feat_dim": 2560})
    assert arch_of(model) == "zimage"
    model.model.model_config = supported_models.Lumina2({"image_model": "lumina2", "dim": 2304, "cap_feat_dim": 2560})
    with pytest.raises(ArchitectureError, match="Lumina2 model \\(Lumina2\\) of caption width 2560"):
        arch_of(model)
    model.model.model_config = supported_models.HiDream({"image_model": "hidream"})
    assert arch_of(model) == "hidream"


def test_a_qwen_image_pair_is_loaded_on_a_qwen_image_model(loras):
    """A Qwen-Image pair in diffusers names (``transformer.…``, ``lora_A/B``) on ComfyUI's QwenImage
    model: the type is detected, every module is projected and patched (strength wc, ws)."""
    rows = lf.select("qwenimage", "attn", blocks=("transformer_blocks.0.",))
    lf.make_lora(loras / "qc.safetensors", "qwenimage", rows, fmt="peft", rank=2, seed=7)
    lf.make_lora(loras / "qs.safetensors", "qwenimage", rows, fmt="peft", rank=3, seed=8)
    model, clip = build("qwenimage", [r["name"] for r in rows])
    patched, _ = nodes.NpLoraLoader().load(model, clip, content="qc.safetensors", style="qs.safetensors",
                                           **dict(PARAMS, content_weight=0.7, style_weight=1.1))
    assert len(rows) >= 4 and set(patched.patches) == set(model.model.state_dict())
    assert all([p[0] for p in patched.patches[k]] == [0.7, 1.1] for k in patched.patches)
    base = model.patched_weight(next(iter(patched.patches)))
    assert not torch.equal(patched.patched_weight(next(iter(patched.patches))), base)


#: a block's attention (fused qkv where the model has one) and one more module, per DiT
DIT_BLOCKS = {"lumina2": ("layers.0.attention.", "final_layer.linear"), "wan14b": ("blocks.0.cross_attn.", "head.head"),
              "wan5b": ("blocks.1.self_attn.", "head.head"), "wan1b": ("blocks.2.", "text_embedding.0"),
              "hidream": ("double_stream_blocks.0.block.attn1.", "experts.3.w2"),
              "sd35l": ("joint_blocks.0.x_block.attn.", "context_embedder"),
              "sd35m": ("joint_blocks.0.x_block.attn2.", "joint_blocks.23.context_block.adaLN_modulation.1")}


@pytest.mark.parametrize("arch", list(DIT_BLOCKS))
def test_a_pair_is_loaded_on_each_dit_model_comfyui_holds(loras, arch):
    """A kohya pair (``lora_unet_<original path>``, fused qkv as one module) on ComfyUI's Lumina 2,
    Wan 14B / 5B / 1.3B, HiDream, SD3.5 Large / Medium model (its config class, with the sizes
    its detection derives): the type picks the table, every module is projected and patched on
    its weight (strengths wc, ws), the patched weight differs from the base."""
    blocks = DIT_BLOCKS[arch]
    rows = [r for r in lf.table(arch) if r["name"].startswith("unet.") and ":" not in r["name"]
            and any(b in r["name"] for b in blocks)]
    lf.make_lora(loras / f"{arch}_c.safetensors", arch, rows, fmt="kohya", rank=2, seed=7)
    lf.make_lora(loras / f"{arch}_s.safetensors", arch, rows, fmt="kohya", rank=3, seed=8)
    model, clip = build(arch, [r["name"] for r in rows])
    patched, _ = nodes.NpLoraLoader().load(model, clip, content=f"{arch}_c.safetensors", style=f"{arch}_s.safetensors",
                                           **dict(PARAMS, content_weight=0.7, style_weight=1.1))
    targets = {k if isinstance(k, str) else k[0] for k in patched.patches}
    assert len(rows) >= 2 and targets == set(model.model.state_dict()), (targets, rows)
    # (strength, adapter, model strength, row slice, function); a fused qkv: the content on its parts'
    # row slices, the style on the whole weight
    assert all({p[0] for p in ps} == {0.7, 1.1} for ps in patched.patches.values()), patched.patches
    sliced = {k for k, ps in patched.patches.items() if any(p[3] is not None for p in ps)}
    assert bool(sliced) == (arch in ("lumina2", "sd35l", "sd35m")) and all(k.endswith("qkv.weight") for k in sliced)
    key = next(iter(patched.patches))
    assert not torch.equal(patched.patched_weight(key), model.patched_weight(key))


def test_save_writes_the_tabs_file_into_the_loras_folder_and_never_over_a_file(pair):
    out = nodes.NpLoraSave().save(content="dog.safetensors", style="styles/ink.safetensors", file_name="",
                                  overwrite=False, **PARAMS)
    name = out["result"][0]
    assert name == "dog+ink_nplora_mu0.5.safetensors" and out["ui"]["text"] == [f"saved {name}"]
    path = pair / name
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert json.loads(meta["nplora"])  # the tab's metadata block
    assert any(k.endswith(".lora_down.weight") for k in keys)
    assert name in nodes.NpLoraLoader.INPUT_TYPES()["required"]["content"][0]  # listed at once
    first = path.read_bytes()
    with pytest.raises(OutputExistsError):
        nodes.NpLoraSave().save(content="dog.safetensors", style="styles/ink.safetensors", file_name="",
                                overwrite=False, **dict(PARAMS))
    assert path.read_bytes() == first
    nodes.NpLoraSave().save(content="dog.safetensors", style="styles/ink.safetensors", file_name=name,
                            overwrite=True, **dict(PARAMS, mu=2.0))
    assert path.read_bytes() != first
    dog = (pair / "dog.safetensors").read_bytes()
    with pytest.raises(OutputIsInputError):
        nodes.NpLoraSave().save(content="dog.safetensors", style="styles/ink.safetensors", file_name="dog",
                                overwrite=True, **PARAMS)
    assert (pair / "dog.safetensors").read_bytes() == dog
    with pytest.raises(NpLoraError, match="path|folder"):
        nodes.NpLoraSave().save(content="dog.safetensors", style="styles/ink.safetensors", file_name="../up",
                                overwrite=True, **PARAMS)


def test_the_saved_file_through_the_stock_loader_is_the_fusion(pair):
    import comfy.lora
    import comfy.utils
    from lib_nplora.comfy.patching import lora_key_map

    model, clip = build("sd1", [r["name"] for r in ROWS])
    fused_model, _ = nodes.NpLoraLoader().load(model, clip, content="dog.safetensors",
                                               style="styles/ink.safetensors", **PARAMS)
    name = nodes.NpLoraSave().save(content="dog.safetensors", style="styles/ink.safetensors", file_name="saved",
                                   overwrite=False, **PARAMS)["result"][0]
    stock = model.clone()
    patches = comfy.lora.load_lora(comfy.utils.load_torch_file(str(pair / name), safe_load=True),
                                   lora_key_map(model, clip))
    assert len(stock.add_patches(patches, 1.0)) == len(ROWS)
    for key in model.model.state_dict():
        base = model.patched_weight(key)
        want, got = fused_model.patched_weight(key) - base, stock.patched_weight(key) - base
        assert torch.allclose(got, want, atol=2e-3 * want.abs().max().item()), key  # fp16 file


def test_analyze_gives_a_chart_image_and_the_numbers(pair):
    image, text = nodes.NpLoraAnalyze().analyze(content="dog.safetensors", style="styles/ink.safetensors", k=0,
                                                 scope="unet")
    assert image.dtype == torch.float32 and image.dim() == 4 and image.shape[0] == 1 and image.shape[3] == 3
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
    assert "dog (content) vs ink (style)" in text and "input_blocks" in text


def _set(*refs):
    out = None
    for name, w in refs:
        (out,) = nodes.NpLoraSet().add(lora_name=name, weight=w, previous=out)
    return out


@pytest.fixture
def four(pair):
    lf.make_lora(pair / "hat.safetensors", "sd1", ROWS, rank=3, seed=5)
    lf.make_lora(pair / "oil.safetensors", "sd1", ROWS, rank=2, seed=6)
    return pair


def test_the_set_node_chains_in_order_and_checks_names_and_weights(four):
    types = nodes.NpLoraSet.INPUT_TYPES()
    assert types["required"]["lora_name"][0] == nodes.NpLoraLoader.INPUT_TYPES()["required"]["content"][0]
    assert types["optional"]["previous"][0] == nodes.NpLoraSet.RETURN_TYPES[0] == "NPLORA_SET"
    assert _set(("dog.safetensors", 1.0), ("hat.safetensors", 0.5)) == (("dog.safetensors", 1.0),
                                                                        ("hat.safetensors", 0.5))
    with pytest.raises(ParameterError, match="twice"):
        _set(("dog.safetensors", 1.0), ("dog.safetensors", 0.5))
    with pytest.raises(NpLoraError, match="control"):
        _set(("dog\n.safetensors", 1.0))
    with pytest.raises(ParameterError, match="at most 8"):
        nodes.NpLoraSet().add(lora_name="dog.safetensors", weight=1.0,
                              previous=tuple((f"x{i}.safetensors", 1.0) for i in range(8)))
    with pytest.raises(ParameterError, match="weight"):
        nodes.NpLoraSet().add(lora_name="dog.safetensors", weight=float("nan"))
    model, clip = build("sd1", [r["name"] for r in ROWS])
    with pytest.raises(ParameterError, match="LoRA name, weight"):  # a prompt's JSON literal that is no set
        nodes.NpLoraLoader().load(model, clip, contents=[["dog.safetensors"]], **dict(PARAMS, content="dog.safetensors",
                                                                                      style="hat.safetensors"))


def test_a_set_with_a_name_not_listed_or_for_another_model_names_the_file(four):
    model, clip = build("sd1", [r["name"] for r in ROWS])
    args = dict(PARAMS, content="dog.safetensors", style="styles/ink.safetensors")
    with pytest.raises(LoraNotFoundError, match="nope"):
        nodes.NpLoraLoader().load(model, clip, contents=(("dog.safetensors", 1.0), ("nope.safetensors", 1.0)), **args)
    with pytest.raises(NpLoraError, match="xl_a"):
        nodes.NpLoraLoader().load(model, clip, contents=_set(("dog.safetensors", 1.0), ("xl_a.safetensors", 1.0)),
                                  **args)
    with pytest.raises(NpLoraError, match="xl_a|xl_b|hat"):  # Save reads for no model: the files disagree
        nodes.NpLoraSave().save(file_name="", overwrite=False, contents=_set(("hat.safetensors", 1.0)),
                                styles=_set(("xl_a.safetensors", 1.0), ("xl_b.safetensors", 1.0)), **args)


def test_the_loaders_console_line_counts_the_sets(four, capsys):
    model, clip = build("sd1", [r["name"] for r in ROWS])
    args = dict(PARAMS, content="dog.safetensors", style="styles/ink.safetensors")
    sets = dict(contents=_set(("dog.safetensors", 1.0), ("hat.safetensors", 0.5)),
                styles=_set(("styles/ink.safetensors", 1.0), ("oil.safetensors", 0.3)))
    nodes.NpLoraLoader().load(model, clip, **sets, **args)
    nodes.NpLoraLoader().load(model, clip, **sets, **args)
    first, second = [line for line in capsys.readouterr().out.splitlines() if line.startswith("NP-LoRA:")]
    assert first.startswith("NP-LoRA: 2 contents (dog*1, hat*0.5) + 2 styles (ink*1, oil*0.3), mu=0.5: ")
    assert f"{2 * len(ROWS)} modules projected" in first and "inputs read, style subspace computed" in first
    assert "inputs from the cache, style subspace from the cache" in second


def test_save_writes_the_fused_set_with_every_input_in_merged_from(four):
    import comfy.lora
    import comfy.utils
    from lib_nplora.comfy.patching import lora_key_map

    args = dict(PARAMS, content="xl_a.safetensors", style="xl_b.safetensors")  # replaced by the sets
    sets = dict(contents=_set(("dog.safetensors", 1.0), ("hat.safetensors", 0.5)),
                styles=_set(("styles/ink.safetensors", 1.0), ("oil.safetensors", 0.3)))
    out = nodes.NpLoraSave().save(file_name="", overwrite=False, **sets, **args)
    name = out["result"][0]
    assert name == "dog+hat+ink+oil_nplora_mu0.5.safetensors"
    with safe_open(str(four / name), "pt") as f:
        meta = f.metadata()
    merged = meta["modelspec.merged_from"]
    assert all(n in merged for n in ("dog", "hat", "ink", "oil")) and "xl_a" not in merged
    # the file through the stock loader is the Loader's fusion of the same sets
    model, clip = build("sd1", [r["name"] for r in ROWS])
    fused_model, _ = nodes.NpLoraLoader().load(model, clip, **sets, **args)
    stock = model.clone()
    stock.add_patches(comfy.lora.load_lora(comfy.utils.load_torch_file(str(four / name), safe_load=True),
                                           lora_key_map(model, clip)), 1.0)
    for key in model.model.state_dict():
        base = model.patched_weight(key)
        want, got = fused_model.patched_weight(key) - base, stock.patched_weight(key) - base
        assert torch.allclose(got, want, atol=2e-3 * want.abs().max().item()), key
    with pytest.raises(OutputIsInputError):  # never onto any input of a set
        nodes.NpLoraSave().save(file_name="hat", overwrite=True, **sets, **args)


def test_analyze_takes_the_sets(four):
    _, one = nodes.NpLoraAnalyze().analyze(content="dog.safetensors", style="styles/ink.safetensors", k=0,
                                           scope="unet")
    _, text = nodes.NpLoraAnalyze().analyze(content="dog.safetensors", style="styles/ink.safetensors", k=0,
                                            scope="unet", styles=_set(("styles/ink.safetensors", 1.0),
                                                                      ("oil.safetensors", 1.0)))
    assert "oil" in text and "oil" not in one and text != one
