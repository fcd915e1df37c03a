"""The fused LoRA through ComfyUI's patching: mu = 0 is the two-LoraLoader stack bit for bit,
mu > 0 is the engine's fusion, and every key ComfyUI's map yields is patched (SD1.5, SDXL, FLUX.1,
Chroma, Qwen-Image)."""

from __future__ import annotations

import logging

import pytest
import torch

import comfy.lora
import lora_factory as lf
from comfy_models import build, comfy_key
from lib_nplora.cache import Caches
from lib_nplora.comfy.nodes import NpLoraLoader
from lib_nplora.comfy.patching import comfy_patches, lora_key_map, project_patches
from lib_nplora.comfy.projection import projected_downs
from lib_nplora.formats.reader import load_pair
from lib_nplora.fusion import linalg
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams

SD1_ATTN = lf.select("sd1", "attn", components=("unet",), blocks=("input_blocks.1.", "output_blocks.11."))
SD1_TE = lf.select("sd1", "attn", components=("te",), blocks=("layers.0.",))
ROWS = SD1_ATTN + SD1_TE
NAMES = [r["name"] for r in ROWS]


def loader_args(content="content.safetensors", style="style.safetensors", **kw):
    base = dict(content=content, style=style, content_weight=0.8, style_weight=1.2, mu=0.5, hard=False, k=0,
                scope="unet", method="nplora")
    return dict(base, **kw)


def stacked(model, clip, loras, names):
    """Two chained LoraLoader nodes (``comfy.sd.load_lora_for_models``, content then style)."""
    import comfy.utils

    for path, w in names:
        key_map = lora_key_map(model, clip)
        patches = comfy.lora.load_lora(comfy.utils.load_torch_file(str(loras / path), safe_load=True), key_map)
        model, clip = model.clone(), clip.clone()
        model.add_patches(patches, w)
        clip.add_patches(patches, w)
    return model, clip


@pytest.fixture
def pair(loras):
    lf.make_lora(loras / "content.safetensors", "sd1", ROWS, rank=4, alpha=2.0, seed=1, dtype=torch.float16)
    lf.make_lora(loras / "style.safetensors", "sd1", ROWS, rank=6, alpha=3.0, seed=2, dtype=torch.float16)
    return loras


def weights(model, clip) -> dict[str, torch.Tensor]:
    out = {k: model.patched_weight(k) for k in model.model.state_dict()}
    out.update({k: clip.patcher.patched_weight(k) for k in clip.cond_stage_model.state_dict()})
    return out


def test_project_out_with_c_zero_returns_the_content_down_itself():
    a = torch.randn(3, 4, 10)
    v = torch.linalg.qr(torch.randn(3, 10, 5))[0]
    assert linalg.project_out(a, v, 0.0) is a


def test_mu_zero_is_bit_identical_to_two_chained_lora_loaders(pair):
    model, clip = build("sd1", NAMES)
    before = {k: t.clone() for k, t in weights(model, clip).items()}
    ours = weights(*NpLoraLoader().load(model, clip, **loader_args(mu=0.0)))
    ref = weights(*stacked(model, clip, pair, [("content.safetensors", 0.8), ("style.safetensors", 1.2)]))
    assert ours.keys() == ref.keys() and len(ours) == len(NAMES)
    assert all(torch.equal(ours[k], ref[k]) for k in ours)
    base = weights(model, clip)
    assert all(not torch.equal(ours[k], base[k]) for k in ours)  # every module got the LoRAs
    assert all(torch.equal(base[k], before[k]) for k in base)  # the base model is untouched


@pytest.mark.parametrize("kw", [dict(mu=0.5), dict(hard=True, k=2), dict(mu=2.0, scope="all")])
def test_mu_above_zero_is_the_engines_fusion(pair, kw):
    model, clip = build("sd1", NAMES)
    ours = weights(*NpLoraLoader().load(model, clip, **loader_args(**kw)))
    base = weights(model, clip)
    params = FuseParams.from_values(**{k: v for k, v in loader_args(**kw).items()
                                       if k not in ("content", "style")} | {"k": kw.get("k") or "full"})
    content, style = load_pair(pair / "content.safetensors", pair / "style.safetensors", arch="sd1")
    fused = fuse(content, style, params, dtype=torch.float32)
    stack = weights(*stacked(model, clip, pair, [("content.safetensors", 0.8), ("style.safetensors", 1.2)]))
    for name in NAMES:
        key = comfy_key("sd1", name)
        delta = (ours[key] - base[key]).flatten(1).double()
        expect = fused.modules[name].dense().double()
        assert torch.allclose(delta, expect, atol=1e-5 * expect.abs().max().item()), name
        projected = fused.modules[name].c > 0
        assert torch.equal(ours[key], stack[key]) != projected, name  # only projected modules change


def test_the_projection_is_kept_and_the_style_subspace_computed_once_per_style(pair, monkeypatch):
    import lib_nplora.cache as cache_mod

    calls = []
    real = cache_mod.compute_bases
    monkeypatch.setattr(cache_mod, "compute_bases", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    caches = Caches()
    content, style = caches.load_pair(pair / "content.safetensors", pair / "style.safetensors", "sd1")
    seen = []
    for mu in (0.25, 0.5, 1.0, 0.5):
        downs, computed = projected_downs(content, style, FuseParams(mu=mu), caches)
        seen.append(computed)
        assert len(downs) == len(SD1_ATTN)  # the UNet modules (scope "unet")
    assert calls == [1] and seen == [True, False, False, False]
    assert projected_downs(content, style, FuseParams(mu=0.0), caches) == ({}, False)


ALL = {arch: [r for r in lf.table(arch) if ":" not in r["name"] and r["kind"] != "norm"]
       for arch in ("sd1", "sdxl", "flux", "chroma", "qwenimage")}


@pytest.mark.slow
@pytest.mark.parametrize("arch, fmt", [("sd1", "kohya"), ("sdxl", "kohya"), ("flux", "kohya"), ("chroma", "kohya"),
                                       ("qwenimage", "kohya"), ("qwenimage", "peft")])
def test_every_key_comfyuis_map_yields_is_patched(arch, fmt, tmp_path, caplog):
    """LoRAs on every weight module of the model (kohya names; SD1's UNet in diffusers spelling, as
    kohya writes it; Qwen-Image also in diffusers ``transformer.`` names, which ComfyUI maps for a
    ``QwenImage`` model): ComfyUI loads every file key, every patch lands on a model weight, and
    every module the fusion projects is carried by the patches (none missed)."""
    rows = ALL[arch]
    c_path, s_path = tmp_path / "c.safetensors", tmp_path / "s.safetensors"
    lf.make_lora(c_path, arch, rows, fmt=fmt, rank=1, seed=3, dtype=torch.float16)
    lf.make_lora(s_path, arch, rows, fmt=fmt, rank=1, seed=4, dtype=torch.float16)
    model, clip = build(arch, meta=True)
    key_map = lora_key_map(model, clip)
    caches = Caches()
    content, style = caches.load_pair(c_path, s_path, arch)
    params = FuseParams(mu=0.5, scope="all")
    downs, _ = projected_downs(content, style, params, caches)
    import comfy.utils

    sd_c, sd_s = comfy.utils.load_torch_file(str(c_path)), comfy.utils.load_torch_file(str(s_path))
    with caplog.at_level(logging.WARNING):
        patches_c, patches_s = comfy_patches(sd_c, key_map), comfy_patches(sd_s, key_map)
    assert "lora key not loaded" not in caplog.text
    cp = project_patches(patches_c, sd_c, content, downs)
    assert cp.missed == [] and cp.projected == set(downs) and len(downs) == len(content.modules)
    model_keys = set(model.model.state_dict()) | set(clip.cond_stage_model.state_dict())
    for patches in (cp.patches, patches_s):
        assert all((k if isinstance(k, str) else k[0]) in model_keys for k in patches)
    targets = {k if isinstance(k, str) else k[0] for k in cp.patches}
    assert targets == {k if isinstance(k, str) else k[0] for k in patches_s}
    assert len(targets) == len(rows)


@pytest.mark.parametrize("arch, parent", [("flux", "unet.double_blocks.0.img_attn.qkv"),
                                          ("chroma", "unet.double_blocks.3.txt_attn.qkv"),
                                          ("chroma", "unet.single_blocks.7.linear1")])
def test_a_fused_weight_is_projected_part_by_part_on_row_slices(loras, arch, parent):
    """A FLUX / Chroma fused weight (double-block qkv, single-block linear1 = q, k, v, mlp) in a
    kohya file is one module that the engine splits into parts (each paired and projected with its
    own style basis): ComfyUI gets one LoRA patch per part on the part's rows of the weight, and
    the patched weight is the engine's fusion."""
    rows = [lf.rows_by_name(arch)[parent]]
    parts = [(p, n) for p, n in rows[0]["parts"]]
    lf.make_lora(loras / "fc.safetensors", arch, rows, rank=2, seed=5)
    lf.make_lora(loras / "fs.safetensors", arch, rows, rank=3, seed=6)
    model, clip = build(arch, [r["name"] for r in rows])
    args = loader_args(content="fc.safetensors", style="fs.safetensors")
    patched, _ = NpLoraLoader().load(model, clip, **args)
    key = comfy_key(arch, parent)
    starts = [sum(n for _, n in parts[:i]) for i in range(len(parts))]
    # the content's parts on their row slices, then the style's whole-weight patch
    assert [p[3] for p in patched.patches[key]] == [(0, s, n) for s, (_, n) in zip(starts, parts)] + [None]
    assert starts[-1] + parts[-1][1] == rows[0]["shape"][0]  # the slices tile the weight's rows
    delta = (patched.patched_weight(key) - model.patched_weight(key)).double()
    content, style = load_pair(loras / "fc.safetensors", loras / "fs.safetensors", arch=arch)
    fused = fuse(content, style, FuseParams(mu=0.5, content_weight=0.8, style_weight=1.2), dtype=torch.float32)
    expect = torch.cat([fused.modules[f"{parent}:{p}"].dense() for p, _ in parts]).double()
    assert all(fused.modules[f"{parent}:{p}"].c > 0 for p, _ in parts)
    assert torch.allclose(delta, expect, atol=1e-5 * expect.abs().max().item())


def test_a_workflow_saved_before_the_later_rows_fuses_as_with_their_defaults(pair):
    """loader_args has only the first rows (as a workflow saved before per-block mu and chain):
    it validates (they are optional inputs) and equals the same call with the table's defaults;
    a per-block mu given through the optional input changes the patched weights."""
    model, clip = build("sd1", NAMES)
    old = weights(*NpLoraLoader().load(model, clip, **loader_args()))
    new = weights(*NpLoraLoader().load(model, clip, **loader_args(block_mu="", chain=False)))
    assert all(torch.equal(old[k], new[k]) for k in old)
    blocks = weights(*NpLoraLoader().load(model, clip, **loader_args(block_mu="IN:hard,OUT:0")))
    assert any(not torch.equal(old[k], blocks[k]) for k in old)


@pytest.fixture
def four(loras):
    """Two contents and two styles of different ranks on the same modules (one style in a folder)."""
    (loras / "styles").mkdir()
    for name, rank, seed in (("c1", 4, 11), ("c2", 3, 12), ("styles/s1", 6, 13), ("s2", 2, 14)):
        lf.make_lora(loras / f"{name}.safetensors", "sd1", ROWS, rank=rank, alpha=2.0, seed=seed, dtype=torch.float16)
    return loras


def chain(*refs):
    """NP-LoRA Set nodes chained (each one's output is the next one's ``previous``)."""
    from lib_nplora.comfy.nodes import NpLoraSet

    out = None
    for name, w in refs:
        (out,) = NpLoraSet().add(lora_name=name, weight=w, previous=out)
    return out


CONTENTS = (("c1.safetensors", 1.0), ("c2.safetensors", 0.5))
STYLES = (("styles/s1.safetensors", 0.7), ("s2.safetensors", 1.3))


@pytest.mark.parametrize("kw", [dict(mu=0.5), dict(mu=1.0, hard=True, k=3)])
def test_two_contents_and_two_styles_through_sets_are_fuse_sets_update(four, kw):
    from lib_nplora.fusion.merge import fuse_set

    model, clip = build("sd1", NAMES)
    args = loader_args(content="s2.safetensors", style="c1.safetensors", **kw)  # the pickers: replaced
    ours = weights(*NpLoraLoader().load(model, clip, contents=chain(*CONTENTS), styles=chain(*STYLES), **args))
    base = weights(model, clip)
    params = FuseParams.from_values(**{k: v for k, v in args.items() if k not in ("content", "style")}
                                    | {"k": kw.get("k") or "full"})
    caches = Caches()
    loras = caches.load_set([four / n for n, _ in CONTENTS + STYLES], "sd1")
    fused = fuse_set(list(zip(loras[:2], [w for _, w in CONTENTS])), list(zip(loras[2:], [w for _, w in STYLES])),
                     params, dtype=torch.float32)
    projected = 0
    for name in NAMES:
        key = comfy_key("sd1", name)
        delta = (ours[key] - base[key]).flatten(1).double()
        expect = fused.modules[name].dense().double()
        assert torch.allclose(delta, expect, atol=1e-5 * expect.abs().max().item()), name
        projected += fused.modules[name].c > 0
    assert projected == len(SD1_ATTN)  # scope "unet": the UNet modules are projected, the text encoder's not


def test_sets_at_mu_zero_are_four_chained_lora_loaders_bit_for_bit(four):
    model, clip = build("sd1", NAMES)
    args = loader_args(mu=0.0, content_weight=0.8, style_weight=1.2)
    ours = weights(*NpLoraLoader().load(model, clip, contents=chain(*CONTENTS), styles=chain(*STYLES), **args))
    ref = weights(*stacked(model, clip, four, [(n, w * 0.8) for n, w in CONTENTS] + [(n, w * 1.2) for n, w in STYLES]))
    assert ours.keys() == ref.keys() and len(ours) == len(NAMES)
    assert all(torch.equal(ours[k], ref[k]) for k in ours)
    three = weights(*stacked(model, clip, four, [(n, w * 0.8) for n, w in CONTENTS] + [(STYLES[0][0], 0.7 * 1.2)]))
    assert all(not torch.equal(ours[k], three[k]) for k in ours)  # the fourth LoRA counts


def test_one_side_as_a_set_keeps_the_other_sides_picker(four):
    """Only ``styles`` connected: the content picker is the one content (own weight 1)."""
    model, clip = build("sd1", NAMES)
    args = loader_args(content="c1.safetensors", mu=0.0)
    ours = weights(*NpLoraLoader().load(model, clip, styles=chain(*STYLES), **args))
    ref = weights(*stacked(model, clip, four, [("c1.safetensors", 0.8)] + [(n, w * 1.2) for n, w in STYLES]))
    assert all(torch.equal(ours[k], ref[k]) for k in ours)


def test_a_one_entry_set_of_weight_one_is_the_old_pair_and_the_old_workflow_is_unchanged(pair, capsys):
    model, clip = build("sd1", NAMES)
    old = weights(*NpLoraLoader().load(model, clip, **loader_args()))
    line = capsys.readouterr().out
    assert "NP-LoRA: content + style, mu=0.5: " in line  # the pair's console line, as before
    via = weights(*NpLoraLoader().load(model, clip, contents=chain(("content.safetensors", 1.0)),
                                       styles=chain(("style.safetensors", 1.0)), **loader_args()))
    assert all(torch.equal(old[k], via[k]) for k in old)
