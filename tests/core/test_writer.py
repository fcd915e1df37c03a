"""Writing fused LoRAs: kohya layout, metadata that documents the fusion, round trip, safety."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lora_factory as F
from lib_nplora import __version__
from lib_nplora.errors import OutputExistsError
from lib_nplora.formats.reader import load_lora, load_pair
from lib_nplora.formats.safetensors_file import data_sha256
from lib_nplora.formats.writer import save_fused
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams


def _files(tmp_path, arch="sdxl", comps=("unet", "te1"), meta_c=None, meta_s=None):
    rows = F.select(arch, "attn", comps, blocks=("input_blocks.4.1.transformer_blocks.0.", "layers.1."))
    c = F.make_lora(tmp_path / "subject.safetensors", arch, rows, rank=4, alpha=1, seed=1, metadata=meta_c)
    s = F.make_lora(tmp_path / "watercolor.safetensors", arch, rows, rank=8, alpha=8, seed=2, metadata=meta_s)
    return c, s


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_round_trip_layout_dtype_and_alpha(tmp_path, dtype):
    c, s = _files(tmp_path)
    C, S = load_pair(c.path, s.path)
    fused = fuse(C, S, FuseParams(), dtype=dtype)
    saved = save_fused(fused, tmp_path / "out.safetensors")
    sd = load_file(saved.path)
    downs = [k for k in sd if k.endswith(".lora_down.weight")]
    assert len(downs) == len(fused.modules)
    for k in downs:
        base = k[: -len(".lora_down.weight")]
        assert base.startswith(("lora_unet_input_blocks_4_1_", "lora_te1_text_model_encoder_layers_1_"))
        assert sd[k].dtype == dtype and sd[base + ".lora_up.weight"].dtype == dtype
        assert float(sd[base + ".alpha"]) == sd[k].shape[0] == 12  # alpha = rank = 8 + 4
    back = load_lora(saved.path)
    assert back.arch == "sdxl" and back.format == "kohya" and set(back.modules) == set(fused.modules)
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-6}[dtype]
    for n, m in fused.modules.items():
        f = back.modules[n].factors
        assert F.lowrank_rel_err(f.scale * f.up.double(), f.down, m.up, m.down) < tol


def test_metadata_documents_the_fusion(tmp_path):
    c, s = _files(tmp_path, meta_c={"ss_base_model_version": "sdxl_base_v1-0", "ss_tag_frequency": json.dumps({"dog": {"sks dog": 5}})},
                  meta_s={"ss_tag_frequency": json.dumps({"style": {"watercolor": 9}})})
    C, S = load_pair(c.path, s.path)
    params = FuseParams(mu=1.0, k=6, content_weight=0.9, style_weight=0.7)
    fused = fuse(C, S, params)
    saved = save_fused(fused, tmp_path / "fused.safetensors", output_name="dog in watercolor",
                       content_meta=C.metadata, style_meta=S.metadata)
    with safe_open(saved.path, framework="pt") as f:
        meta = f.metadata()
    assert meta == saved.metadata
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "12"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_output_name"] == meta["modelspec.title"] == "dog in watercolor"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.merged_from"] == (f"subject (content, {fused.content.short_hash}, 0.9), "
                                             f"watercolor (style, {fused.style.short_hash}, 0.7)")
    assert set(json.loads(meta["ss_tag_frequency"])) == {"content: dog", "style: style"}
    block = json.loads(meta["nplora"])
    assert block["version"] == __version__ and block["method"] == "nplora"
    assert block["mu"] == 1.0 and block["c"] == 0.5 and block["k"] == 6 and block["scope"] == "unet"
    assert block["content"]["weight"] == 0.9 and block["style"]["weight"] == 0.7
    assert block["content"]["sha256"] == data_sha256(c.path) == C.sha256
    assert block["style"]["sha256"] == data_sha256(s.path)
    assert block["content"]["file"] == "subject.safetensors"
    assert block["modules"]["fused"] == len(fused.modules) and block["modules"]["projected"] > 0


def test_base_model_version_defaults_per_architecture(tmp_path):
    for arch, comps, version in (("sd1", ("unet",), "sd_v1"), ("flux", ("unet",), "flux1")):
        d = tmp_path / arch
        d.mkdir()
        rows = F.select(arch, "attn", comps)[:6]
        c = F.make_lora(d / "c.safetensors", arch, rows, rank=2, seed=1)
        s = F.make_lora(d / "s.safetensors", arch, rows, rank=2, seed=2)
        fused = fuse(*load_pair(c.path, s.path), FuseParams())
        meta = save_fused(fused, d / "o.safetensors").metadata
        assert meta["ss_base_model_version"] == version
        assert load_lora(d / "o.safetensors").arch == arch


def test_openclip_attention_blocks_are_completed_for_a1111(tmp_path):
    """SD2 / SDXL-TE2 attention is one MHA in A1111: q, k, v and out must all be present."""
    q_k = [r for r in F.select("sd2", "attn", ("te",), blocks=("layers.3.",)) if r["name"].endswith(("q_proj", "k_proj"))]
    assert len(q_k) == 2
    c = F.make_lora(tmp_path / "c.safetensors", "sd2", q_k, rank=2, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", "sd2", q_k, rank=2, seed=2)
    fused = fuse(*load_pair(c.path, s.path), FuseParams())
    saved = save_fused(fused, tmp_path / "o.safetensors")
    sd = load_file(saved.path)
    base = "lora_te_text_model_encoder_layers_3_self_attn_"
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert f"{base}{proj}.lora_down.weight" in sd
    assert float(sd[f"{base}v_proj.lora_up.weight"].abs().max()) == 0.0
    notes = json.loads(saved.metadata["nplora"])["notes"]
    assert any("v_proj" in n for n in notes) and any("out_proj" in n for n in notes)


def test_bundled_embeddings_are_kept(tmp_path):
    c, s = _files(tmp_path)
    sd = load_file(str(c.path))
    sd["bundle_emb.sksdog.string_to_param.*"] = torch.randn(2, 768)
    save_file(sd, str(c.path))
    fused = fuse(*load_pair(c.path, s.path), FuseParams())
    out = load_file(save_fused(fused, tmp_path / "o.safetensors").path)
    assert torch.equal(out["bundle_emb.sksdog.string_to_param.*"], sd["bundle_emb.sksdog.string_to_param.*"])


def test_never_overwrites_and_leaves_no_temporary_files(tmp_path):
    c, s = _files(tmp_path)
    fused = fuse(*load_pair(c.path, s.path), FuseParams())
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputExistsError) as e:
        save_fused(fused, out)
    assert "out.safetensors" in str(e.value) and "overwrit" in str(e.value)
    assert out.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == before
    save_fused(fused, out, overwrite=True)
    assert load_lora(out).arch == "sdxl" and sorted(os.listdir(tmp_path)) == before
