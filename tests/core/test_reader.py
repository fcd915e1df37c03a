"""Reading every supported LoRA family into canonical form, with real SD1.5 / SDXL / FLUX names."""

import json

import pytest
import torch
from safetensors.torch import save_file

import lora_factory as F
from lib_nplora.errors import ArchitectureError, FormatError, UnsafeFileError
from lib_nplora.formats.reader import load_lora, load_pair, peek


def _check_truth(lora, made, tol=1e-5):
    assert set(lora.modules) == set(made.truth)
    for name, truth in made.truth.items():
        f = lora.modules[name].factors
        if truth.down.shape[0] == truth.down.shape[1]:  # dense truth (LoHa, LoKr, Tucker)
            ref = truth.dense()
            err = float((f.dense().double() - ref).norm() / ref.norm())
        else:
            err = F.lowrank_rel_err(f.scale * f.up.double(), f.down, truth.scale * truth.up, truth.down)
        assert err < tol, (name, err)


@pytest.mark.parametrize("arch,components,fmt", [
    ("sd1", ("unet", "te"), "kohya"), ("sd1", ("unet", "te"), "peft"), ("sd1", ("unet",), "ldm"),
    ("sdxl", ("unet", "te1", "te2"), "kohya"), ("sdxl", ("unet", "te1", "te2"), "peft"),
    ("flux", ("unet", "te1", "te3"), "kohya"), ("flux", ("unet",), "peft"),
])
def test_families_resolve_to_canonical_modules(tmp_path, arch, components, fmt):
    rows = F.select(arch, "attn", components)
    if arch == "flux":
        rows += F.select("flux", "linear", ("unet",), blocks=("single_blocks.0.", "double_blocks.3."))
        if "te3" in components:
            rows += F.select("flux", "linear", ("te3",), blocks=("block.0.",))
    made = F.make_lora(tmp_path / "x.safetensors", arch, rows, fmt=fmt, rank=4,
                       alpha=2 if fmt != "peft" else None, seed=3)
    lora = load_lora(made.path)
    assert lora.arch == arch
    assert lora.format == {"kohya": "kohya", "peft": "diffusers", "ldm": "ldm"}[fmt]
    _check_truth(lora, made)
    assert len(lora.sha256) == 64 and lora.short_hash == lora.sha256[:12]


def test_sdxl_full_unet_lora_has_the_722_kohya_modules(tmp_path):
    rows = [r for r in F.select("sdxl", "linear", ("unet",))
            if ".transformer_blocks." in r["name"] or r["name"].endswith((".proj_in", ".proj_out"))]
    assert len(rows) == 722
    made = F.make_lora(tmp_path / "x.safetensors", "sdxl", rows, rank=2, dtype=torch.float16)
    lora = load_lora(made.path)
    assert lora.arch == "sdxl" and len(lora.modules) == 722
    assert lora.kinds() == {"lora": 722}


def test_sd1_locon_3x3_and_tucker(tmp_path):
    conv = F.select("sd1", "conv", ("unet",), blocks=("input_blocks.1.0", "output_blocks.11.0", "input_blocks.3.0"))
    assert any(r["shape"][2:] == [3, 3] for r in conv)
    made = F.make_lora(tmp_path / "locon.safetensors", "sd1", conv, rank=4, alpha=4)
    lora = load_lora(made.path)
    _check_truth(lora, made)
    assert {m.kind for m in lora.modules.values()} == {"locon"}
    conv33 = [r for r in conv if r["shape"][2:] == [3, 3]]
    made = F.make_lora(tmp_path / "tucker.safetensors", "sd1", conv33, rank=4, alpha=2, kind="tucker")
    lora = load_lora(made.path)
    _check_truth(lora, made)
    assert {m.kind for m in lora.modules.values()} == {"tucker"}
    assert all(m.factors.rank == 4 for m in lora.modules.values())


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_become_exact_factors(tmp_path, kind):
    rows = F.select("sd1", "attn", ("unet",), blocks=("input_blocks.1.1", "output_blocks.3.1"))
    made = F.make_lora(tmp_path / f"{kind}.safetensors", "sd1", rows, rank=4, alpha=2, kind=kind)
    lora = load_lora(made.path)
    _check_truth(lora, made, tol=1e-5)
    for m in lora.modules.values():
        assert m.kind == kind and not m.lossy
        assert "exact" in m.note


def test_full_diff_is_truncated_with_a_warning(tmp_path):
    row = F.select("sd1", "attn", ("unet",), limit=1)[0]
    key = F.kohya_key("sd1", row)
    g = torch.Generator().manual_seed(0)
    diff = torch.randn(*row["shape"], generator=g)
    save_file({f"{key}.diff": diff}, str(tmp_path / "full.safetensors"))
    lora = load_lora(tmp_path / "full.safetensors", max_converted_rank=16)
    m = lora.modules[row["name"]]
    assert m.kind == "full" and m.lossy and m.factors.rank == 16
    assert any("energy kept" in w for w in lora.warnings)
    # the truncation is the optimal rank-16 approximation
    s = torch.linalg.svdvals(diff.double())
    err = (m.factors.dense().double() - diff.double()).norm()
    assert abs(err - s[16:].norm()) < 1e-3 * s.norm()


def test_peft_alpha_from_metadata(tmp_path):
    rows = F.select("sdxl", "attn", ("unet",), limit=8)
    made = F.make_lora(tmp_path / "p.safetensors", "sdxl", rows, fmt="peft", rank=4)
    special = rows[3]["aliases"][0].split(".", 1)[1]
    meta = {"unet.r": 4, "unet.lora_alpha": 2, "unet.alpha_pattern": {special: 8}}
    sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(made.path))
    save_file(sd, str(made.path), metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
    lora = load_lora(made.path)
    for i, r in enumerate(rows):
        assert lora.modules[r["name"]].factors.scale == (2.0 if i == 3 else 0.5)


def test_xlabs_flux(tmp_path):
    rows = [r for r in F.select("flux", "attn", ("unet",)) if ".double_blocks.2." in r["name"]]
    assert {r["name"].rsplit(".", 2)[-2] + "." + r["name"].rsplit(".", 1)[-1] for r in rows} == \
        {"img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj"}
    made = F.make_lora(tmp_path / "x.safetensors", "flux", rows, fmt="xlabs", rank=4)
    lora = load_lora(made.path)
    assert lora.format == "xlabs" and lora.arch == "flux"
    _check_truth(lora, made)
    assert "unet.double_blocks.2.img_attn.qkv:k" in lora.modules


def test_flux_fused_and_split_give_the_same_parts(tmp_path):
    """A kohya fused-qkv file and the diffusers split file of the same update read identically."""
    row = F.rows_by_name("flux")["unet.single_blocks.5.linear1"]
    made = F.make_lora(tmp_path / "fused.safetensors", "flux", [row], rank=4, alpha=4)
    parts = F.parts_of("flux", row)
    sd = {}
    offset = 0
    for p in parts:
        t = made.truth[p["name"]]
        key = p["aliases"][0]
        sd[f"{key}.lora_A.weight"] = t.down.float()
        sd[f"{key}.lora_B.weight"] = t.up.float()
        offset += p["shape"][0]
    save_file(sd, str(tmp_path / "split.safetensors"))
    fused, split = load_lora(made.path), load_lora(tmp_path / "split.safetensors")
    assert set(fused.modules) == set(split.modules) == {p["name"] for p in parts}
    for n in fused.modules:
        torch.testing.assert_close(fused.modules[n].factors.dense(), split.modules[n].factors.dense(),
                                   rtol=1e-6, atol=1e-7)


def test_passthrough_types_are_kept_and_reported(tmp_path):
    rows = F.select("sd1", "attn", ("unet",), limit=3)
    made = F.make_lora(tmp_path / "d.safetensors", "sd1", rows, rank=4)
    sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(made.path))
    k0 = F.kohya_key("sd1", rows[0])
    sd[f"{k0}.dora_scale"] = torch.ones(1, rows[0]["shape"][1])
    k1 = F.kohya_key("sd1", rows[1])
    for s in (".lora_down.weight", ".lora_up.weight"):
        del sd[k1 + s]
    sd[f"{k1}.oft_blocks"] = torch.zeros(4, 80, 80)
    sd[f"{k1}.alpha"] = torch.tensor(4.0)
    norm = next(r for r in F.table("sd1") if r["kind"] == "norm" and r["name"].startswith("unet."))
    sd[F.kohya_key("sd1", norm) + ".w_norm"] = torch.ones(norm["shape"])
    save_file(sd, str(made.path))
    lora = load_lora(made.path)
    assert lora.modules[rows[0]["name"]].kind == "dora"
    assert lora.modules[rows[1]["name"]].kind == "oft"
    assert lora.modules[norm["name"]].kind == "norm"
    assert lora.modules[rows[2]["name"]].kind == "lora"
    assert sum("carried over unchanged" in w for w in lora.warnings) == 3


# ------------------------------------------------------------------ architecture detection


def test_text_encoder_only_clip_l_fits_several_and_pairs(tmp_path):
    te = F.select("sdxl", "attn", ("te1",))
    a = F.make_lora(tmp_path / "te.safetensors", "sdxl", te, rank=2)
    flux_rows = F.select("flux", "attn", ("unet", "te1"), blocks=("double_blocks.0.", "layers.0."))
    b = F.make_lora(tmp_path / "flux.safetensors", "flux", flux_rows, rank=2)
    lora = load_lora(a.path)
    assert set(lora.arch_candidates) >= {"sdxl", "flux"}
    c, s = load_pair(a.path, b.path)
    assert c.arch == s.arch == "flux"


def test_metadata_breaks_ties(tmp_path):
    te = F.select("sdxl", "attn", ("te1",))
    made = F.make_lora(tmp_path / "te.safetensors", "sdxl", te, rank=2,
                       metadata={"modelspec.architecture": "flux-1-dev/lora"})
    assert load_lora(made.path).arch == "flux"
    assert peek(made.path).arch == "flux"


def test_pair_from_different_models_is_refused(tmp_path):
    a = F.make_lora(tmp_path / "sd15.safetensors", "sd1", F.select("sd1", "attn", ("unet",)), rank=2)
    b = F.make_lora(tmp_path / "xl.safetensors", "sdxl", F.select("sdxl", "attn", ("unet",)), rank=2)
    with pytest.raises(ArchitectureError) as e:
        load_pair(a.path, b.path)
    msg = str(e.value)
    assert "sd15" in msg and "xl" in msg and "SD1" in msg and "SDXL" in msg


def test_peek_reads_only_the_header(tmp_path):
    made = F.make_lora(tmp_path / "x.safetensors", "sdxl", F.select("sdxl", "attn", ("unet",)), rank=2)
    p = peek(made.path)
    assert p.arch == "sdxl" and p.modules == len(made.truth) and p.format == "kohya"


# ------------------------------------------------------------------ bad input


def _write(tmp_path, sd, name="bad.safetensors", meta=None):
    p = tmp_path / name
    save_file(sd, str(p), metadata=meta)
    return p


def test_nan_values(tmp_path):
    row = F.select("sd1", "attn", ("unet",), limit=1)[0]
    k = F.kohya_key("sd1", row)
    down = torch.randn(4, row["shape"][1])
    down[0, 0] = float("nan")
    p = _write(tmp_path, {f"{k}.lora_down.weight": down, f"{k}.lora_up.weight": torch.randn(row["shape"][0], 4)})
    with pytest.raises(FormatError, match="NaN or infinite") as e:
        load_lora(p)
    assert k in str(e.value) and "bad.safetensors" in str(e.value)


def test_wrong_shape_names_module_and_expected_shape(tmp_path):
    rows = F.select("sd1", "attn", ("unet",))
    made = F.make_lora(tmp_path / "bad.safetensors", "sd1", rows, rank=4)
    sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(made.path))
    k = F.kohya_key("sd1", rows[5])
    sd[f"{k}.lora_down.weight"] = torch.randn(4, 123)
    save_file(sd, str(made.path))
    with pytest.raises(FormatError, match="does not fit") as e:
        load_lora(made.path)
    assert k in str(e.value) and "weight shape" in str(e.value)


def test_rank_mismatch_between_up_and_down(tmp_path):
    row = F.select("sd1", "attn", ("unet",), limit=1)[0]
    k = F.kohya_key("sd1", row)
    p = _write(tmp_path, {f"{k}.lora_down.weight": torch.randn(4, row["shape"][1]),
                          f"{k}.lora_up.weight": torch.randn(row["shape"][0], 8)})
    with pytest.raises(FormatError, match="inconsistent") as e:
        load_lora(p)
    assert k in str(e.value)


def test_int_dtype(tmp_path):
    row = F.select("sd1", "attn", ("unet",), limit=1)[0]
    k = F.kohya_key("sd1", row)
    p = _write(tmp_path, {f"{k}.lora_down.weight": torch.ones(4, row["shape"][1], dtype=torch.int32),
                          f"{k}.lora_up.weight": torch.ones(row["shape"][0], 4, dtype=torch.int32)})
    with pytest.raises(FormatError, match="not a floating-point"):
        load_lora(p)


def test_missing_partner_and_unknown_keys(tmp_path):
    row = F.select("sd1", "attn", ("unet",), limit=1)[0]
    k = F.kohya_key("sd1", row)
    p = _write(tmp_path, {f"{k}.lora_down.weight": torch.randn(4, row["shape"][1])})
    with pytest.raises(FormatError, match="incomplete") as e:
        load_lora(p)
    assert "up weights" in str(e.value)
    p = _write(tmp_path, {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(320, 4, 3, 3)}, "ckpt.safetensors")
    with pytest.raises(FormatError, match="not part of any known LoRA module type"):
        load_lora(p)


def test_unknown_module_names(tmp_path):
    p = _write(tmp_path, {"lora_unet_totally_made_up.lora_down.weight": torch.randn(4, 8),
                          "lora_unet_totally_made_up.lora_up.weight": torch.randn(8, 4)})
    with pytest.raises(ArchitectureError, match="not a LoRA for SD1, SD2, SDXL, FLUX"):
        load_lora(p)


def test_empty_lora_and_pickles(tmp_path):
    p = _write(tmp_path, {}, "empty.safetensors")
    with pytest.raises(FormatError, match="no LoRA modules"):
        load_lora(p)
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x04junk")
    with pytest.raises(UnsafeFileError, match="unpickl"):
        load_lora(tmp_path / "old.ckpt")
