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


def _parts_of_parent(arch, parent, downs, seed):
    """FusedModules for a fused parent's parts: random ups, the given downs (R_i, n) each."""
    from lib_nplora import arch as archmod
    from lib_nplora.fused import FusedModule
    a = archmod.get(arch)
    g = torch.Generator().manual_seed(seed)
    parts = {}
    for name, d in zip(a.modules[parent].parts, downs):
        up = torch.randn(a.modules[name].out_features, d.shape[0], generator=g).to(d.dtype)
        parts[name] = FusedModule(name, up, d)
    return a, parts


def _stacked_truth(a, parent, parts):
    """The parent's exact update as factors: blockdiag(up_i) placed at its rows, stacked downs."""
    spec = a.modules[parent]
    ups, col = [], 0
    total = sum(m.rank for m in parts.values())
    up = torch.zeros(spec.out_features, total, dtype=torch.float64)
    for name, m in parts.items():
        ps = a.modules[name]
        up[ps.row_offset:ps.row_offset + m.up.shape[0], col:col + m.rank] = m.up.double()
        col += m.rank
    return up, torch.cat([m.down.double() for m in parts.values()])


@pytest.mark.parametrize("case", ["shared-f32", "shared-f16", "own-downs"])
def test_fused_parent_join_is_exact_and_uses_shared_rows(monkeypatch, case):
    """The writer's join of a fused parent's parts (sd35m's qkv, 3 parts of (1536, 1536)) gives
    the stacked update at its joint rank. Parts whose downs span the same rows (inputs that named
    the fused weight) take one part's QR; parts with their own downs the QR of all of them."""
    from lib_nplora.formats import writer
    parent, n, r = "unet.joint_blocks.0.x_block.attn.qkv", 1536, 6
    g = torch.Generator().manual_seed(3)
    if case == "own-downs":
        downs = [torch.randn(r, n, generator=g) for _ in range(3)]
    else:   # every part's rows are combinations of one (r, n) base, as style + projected content are
        base = torch.randn(r, n, generator=g)
        downs = [torch.randn(r, r, generator=g) @ base for _ in range(3)]
        if case == "shared-f16":
            downs = [d.half() for d in downs]
    a, parts = _parts_of_parent("sd35m", parent, downs, seed=4)
    qr_cols = []
    real_qr = torch.linalg.qr

    def counting_qr(x, *args, **kw):
        qr_cols.append(x.shape[-1])
        return real_qr(x, *args, **kw)

    monkeypatch.setattr(torch.linalg, "qr", counting_qr)
    up, down = writer._join_parts(a, parent, parts, torch.float32)
    truth_up, truth_down = _stacked_truth(a, parent, parts)
    err = F.lowrank_rel_err(up, down, truth_up, truth_down)
    if case == "own-downs":
        assert down.shape[0] == 3 * r and 3 * r in qr_cols     # the stacked down's QR
        assert err < 1e-5
    else:
        assert down.shape[0] == r and max(qr_cols) == r          # no QR wider than one part
        assert err < (1e-5 if case == "shared-f32" else 2 * torch.finfo(torch.float16).eps)
        # balanced: each rank direction's norm split evenly (no factor near float16's subnormals)
        assert torch.allclose(up.norm(dim=0), down.norm(dim=1), rtol=1e-4)
