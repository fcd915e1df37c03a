"""NP-LoRA fusion on real-layout files: the method's properties, exactness of the written file
against the dense formula, cross-format and FLUX fused/split equivalence, weights and scope."""

import pytest
import torch
from safetensors.torch import load_file, save_file

import lora_factory as F
from lib_nplora.errors import ParameterError, UnsupportedModuleError
from lib_nplora.formats.reader import load_lora, load_pair
from lib_nplora.formats.writer import save_fused
from lib_nplora.fusion import reference
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams


def _pair(tmp_path, arch, rows, rank_c=4, rank_s=6, fmt_c="kohya", fmt_s="kohya", kind_c="lora", kind_s="lora",
          alpha_c=2, alpha_s=3, rows_s=None):
    c = F.make_lora(tmp_path / "content.safetensors", arch, rows, fmt=fmt_c, rank=rank_c, alpha=alpha_c,
                    seed=11, kind=kind_c)
    s = F.make_lora(tmp_path / "style.safetensors", arch, rows_s if rows_s is not None else rows, fmt=fmt_s,
                    rank=rank_s, alpha=alpha_s, seed=22, kind=kind_s)
    return c, s


def _style_basis_dense(truth, k=None):
    dws = truth.dense()
    _, s, vh = torch.linalg.svd(dws, full_matrices=False)
    rank = int((s > max(dws.shape) * torch.finfo(torch.float32).eps * s[0]).sum())
    return vh[: (rank if k is None else min(k, rank))].T


SD1_ROWS = (F.select("sd1", "attn", ("unet", "te"), blocks=("input_blocks.1.", "output_blocks.11.", "middle_block",
                                                             "layers.0.", "layers.11."))
            + F.select("sd1", "conv", ("unet",), blocks=("input_blocks.1.0.in_layers", "output_blocks.9.1.proj_in")))


def test_mu_zero_is_the_direct_merge_exactly(tmp_path):
    c, s = _pair(tmp_path, "sd1", SD1_ROWS)
    C, S = load_pair(c.path, s.path)
    a = fuse(C, S, FuseParams(mu=0.0), dtype=torch.float32)
    b = fuse(C, S, FuseParams(method="direct", mu=0.7), dtype=torch.float32)
    assert a.modules.keys() == b.modules.keys()
    for n in a.modules:
        assert torch.equal(a.modules[n].up, b.modules[n].up) and torch.equal(a.modules[n].down, b.modules[n].down)
        assert a.modules[n].c == 0


def test_caller_autocast_does_not_change_the_float32_math(tmp_path):
    """A1111's FP8 mode runs the generation hook under CPU autocast to bfloat16 (which also
    rejects fp16 inputs in some ops): the fusion is the same as outside it."""
    c, s = _pair(tmp_path, "sd1", SD1_ROWS)
    C, S = load_pair(c.path, s.path)
    plain = fuse(C, S, FuseParams(), dtype=torch.float16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = fuse(C, S, FuseParams(), dtype=torch.float16)
    for n, m in plain.modules.items():
        assert torch.equal(m.up, under.modules[n].up) and torch.equal(m.down, under.modules[n].down)


@pytest.mark.parametrize("mu", [0.5, 1.0, 10.0, "hard"])
def test_content_in_style_subspace_is_scaled_by_one_over_one_plus_mu(tmp_path, mu):
    c, s = _pair(tmp_path, "sd1", SD1_ROWS)
    C, S = load_pair(c.path, s.path)
    params = FuseParams(hard=True) if mu == "hard" else FuseParams(mu=mu)
    keep = 0.0 if mu == "hard" else 1 / (1 + mu)
    fused = fuse(C, S, params, dtype=torch.float32)
    checked = 0
    for n, m in fused.modules.items():
        if n.startswith("te."):
            assert m.c == 0  # text encoders are not projected by default
            continue
        rs = S.modules[n].factors.rank
        u1, d1 = m.up[:, rs:].double(), m.down[rs:].double()           # wc * dW_c' as factors
        t = c.truth[n]
        u0, d0 = t.scale * t.up, t.down                                 # wc * dW_c before
        v = F.style_basis_ref(s.truth[n])
        # inside the style subspace: multiplied by 1/(1+mu); hard: gone
        inside_ref = float(((u0.T @ u0) * ((d0 @ v) @ (d0 @ v).T)).sum()) ** 0.5
        if keep == 0.0:
            inside = float(((u1.T @ u1) * ((d1 @ v) @ (d1 @ v).T)).sum()) ** 0.5
            assert inside < 1e-5 * inside_ref, n
        else:
            assert F.lowrank_rel_err(u1, d1 @ v, keep * u0, d0 @ v) < 1e-5, n
        # outside it: unchanged
        assert F.lowrank_rel_err(u1, d1 - (d1 @ v) @ v.T, u0, d0 - (d0 @ v) @ v.T) < 1e-5, n
        checked += 1
    assert checked >= 10


def test_explicit_k_below_rank(tmp_path):
    c, s = _pair(tmp_path, "sd1", SD1_ROWS, rank_s=8)
    C, S = load_pair(c.path, s.path)
    fused = fuse(C, S, FuseParams(mu=1.0, k=3), dtype=torch.float32)
    for n, m in fused.modules.items():
        if n.startswith("te."):
            continue
        assert m.k == 3
        up, down = F.fused_factors(s.truth[n], c.truth[n], 1.0, 1.0, 0.5, k=3)
        assert F.lowrank_rel_err(m.up, m.down, up, down) < 1e-5, n


def _read_output(path, arch):
    """(up * alpha/rank, down) per canonical module from a written kohya file, mapped independently."""
    return F.read_output(path, arch)


@pytest.mark.parametrize("arch", ["sd1", "sdxl", "flux"])
def test_written_file_reconstructs_the_dense_formula(tmp_path, arch):
    if arch == "sd1":
        rows = SD1_ROWS
        only_c = F.select("sd1", "attn", ("unet",), blocks=("output_blocks.5.",))
        only_s = F.select("sd1", "attn", ("te",), blocks=("layers.5.",))
    elif arch == "sdxl":
        rows = F.select("sdxl", "attn", ("unet", "te1", "te2"), blocks=("input_blocks.4.1.", "layers.0.", "layers.31."))
        only_c = F.select("sdxl", "linear", ("unet",), blocks=("middle_block.1.transformer_blocks.3.",))
        only_s = F.select("sdxl", "attn", ("te2",), blocks=("layers.7.",))[:2]  # q, k only: padded for A1111
    else:
        rows = F.select("flux", "linear", ("unet", "te1"), blocks=("double_blocks.0.", "single_blocks.1.", "layers.2."))
        only_c = F.select("flux", "linear", ("unet",), blocks=("single_blocks.7.",))
        only_s = F.select("flux", "attn", ("unet",), blocks=("double_blocks.9.",))
    c = F.make_lora(tmp_path / "c.safetensors", arch, rows + only_c, rank=4, alpha=2, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", arch, rows + only_s, rank=6, alpha=3, seed=2)
    C, S = load_pair(c.path, s.path)
    params = FuseParams(mu=0.5, content_weight=0.8, style_weight=1.2)
    fused = fuse(C, S, params, dtype=torch.float32)
    saved = save_fused(fused, tmp_path / "out.safetensors", content_meta=C.metadata, style_meta=S.metadata)
    got = _read_output(saved.path, arch)
    expected_names = set(c.truth) | set(s.truth)
    assert expected_names <= set(got)
    for n in expected_names:
        te = n.split(".")[0] != "unet"
        up, down = F.fused_factors(s.truth.get(n), c.truth.get(n), 1.2, 0.8, 0.0 if te else 1 / 3)
        err = F.lowrank_rel_err(*got[n], up, down)
        assert err < 1e-5, (n, err)
    for n in set(got) - expected_names:  # only padding may be extra: zero updates
        assert arch == "sdxl" and n.startswith("te2.")
        assert float(got[n][0].abs().max()) == 0.0 or float(got[n][1].abs().max()) == 0.0


def test_cross_format_pair_equals_same_format_pair(tmp_path):
    rows = F.select("sdxl", "attn", ("unet", "te1"), blocks=("input_blocks.7.1.transformer_blocks.3", "layers.4."))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    c1, s1 = _pair(tmp_path / "a", "sdxl", rows, fmt_c="kohya", fmt_s="kohya", alpha_c=None, alpha_s=None)
    c2, s2 = _pair(tmp_path / "b", "sdxl", rows, fmt_c="peft", fmt_s="kohya", alpha_c=None, alpha_s=None)
    f1 = fuse(*load_pair(c1.path, s1.path), FuseParams(), dtype=torch.float32)
    f2 = fuse(*load_pair(c2.path, s2.path), FuseParams(), dtype=torch.float32)
    assert f1.modules.keys() == f2.modules.keys() and len(f1.modules) == len(rows)
    for n in f1.modules:
        assert F.lowrank_rel_err(f2.modules[n].up, f2.modules[n].down, f1.modules[n].up, f1.modules[n].down) < 1e-6


def test_flux_split_content_equals_fused_content(tmp_path):
    parents = [F.rows_by_name("flux")[n] for n in ("unet.double_blocks.4.img_attn.qkv", "unet.single_blocks.2.linear1")]
    style = F.make_lora(tmp_path / "s.safetensors", "flux", parents, fmt="peft", rank=4, seed=5)
    fused_c = F.make_lora(tmp_path / "cf.safetensors", "flux", parents, rank=4, alpha=4, seed=6)
    sd = {}
    for p in parents:
        for part in F.parts_of("flux", p):
            t = fused_c.truth[part["name"]]
            sd[part["aliases"][0] + ".lora_A.weight"] = t.down.float()
            sd[part["aliases"][0] + ".lora_B.weight"] = t.up.float()
    save_file(sd, str(tmp_path / "cs.safetensors"))
    a = fuse(*load_pair(fused_c.path, style.path), FuseParams(), dtype=torch.float32)
    b = fuse(*load_pair(tmp_path / "cs.safetensors", style.path), FuseParams(), dtype=torch.float32)
    assert a.modules.keys() == b.modules.keys() and len(a.modules) == 7
    for n in a.modules:
        assert F.lowrank_rel_err(b.modules[n].up, b.modules[n].down, a.modules[n].up, a.modules[n].down) < 1e-6
    # written back, the fused qkv of a shared-down content stays compact (joint numerical rank)
    saved = save_fused(a, tmp_path / "o.safetensors")
    out = load_file(saved.path)
    r = out["lora_unet_double_blocks_4_img_attn_qkv.lora_down.weight"].shape[0]
    assert r == 3 * 4 + 4  # three split style parts (rank 4 each) + one shared content down (rank 4)


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_style_and_content(tmp_path, kind):
    rows = F.select("sd1", "attn", ("unet",), blocks=("input_blocks.2.1", "output_blocks.10.1"))
    c, s = _pair(tmp_path, "sd1", rows, kind_c=kind, kind_s="lora", rank_c=3)
    fused = fuse(*load_pair(c.path, s.path), FuseParams(), dtype=torch.float32)
    for n, m in fused.modules.items():
        expect = F.dense_fused(s.truth[n], c.truth[n], 1.0, 1.0, 1 / 3)
        assert float((m.dense().double() - expect).norm() / expect.norm()) < 1e-5


def test_locon_3x3_projection_on_flattened_input(tmp_path):
    rows = F.select("sd1", "conv", ("unet",), blocks=("input_blocks.4.0.in_layers", "output_blocks.2.1.conv"))
    assert all(r["shape"][2:] == [3, 3] for r in rows)
    c, s = _pair(tmp_path, "sd1", rows, kind_c="tucker")
    fused = fuse(*load_pair(c.path, s.path), FuseParams(hard=True), dtype=torch.float32)
    for n, m in fused.modules.items():
        expect = F.dense_fused(s.truth[n], c.truth[n], 1.0, 1.0, 1.0)
        assert float((m.dense().double() - expect).norm() / expect.norm()) < 1e-5
    saved = save_fused(fused, tmp_path / "o.safetensors")
    out = load_file(saved.path)
    key = F.kohya_key("sd1", rows[0])
    assert out[key + ".lora_down.weight"].dim() == 4 and out[key + ".lora_down.weight"].shape[2:] == (3, 3)
    assert out[key + ".lora_up.weight"].shape[2:] == (1, 1)


def test_weights_zero_and_scope(tmp_path):
    rows = F.select("sd1", "attn", ("unet", "te"), blocks=("input_blocks.1.", "layers.0."))
    c, s = _pair(tmp_path, "sd1", rows)
    C, S = load_pair(c.path, s.path)
    only_content = fuse(C, S, FuseParams(style_weight=0.0, content_weight=0.5), dtype=torch.float32)
    for n, m in only_content.modules.items():
        assert m.origin == "content" and m.c == 0
        expect = 0.5 * c.truth[n].dense()
        assert float((m.dense().double() - expect).norm() / expect.norm()) < 1e-6
    with pytest.raises(ParameterError, match="both weights are 0"):
        fuse(C, S, FuseParams(style_weight=0.0, content_weight=0.0))
    scoped = fuse(C, S, FuseParams(scope="all"), dtype=torch.float32)
    te = [m for n, m in scoped.modules.items() if n.startswith("te.")]
    assert te and all(m.c > 0 for m in te)


def test_batched_path_equals_reference_on_every_architecture(tmp_path):
    for arch, comps, blocks in (("sd1", ("unet", "te"), ("input_blocks.1.", "layers.3.")),
                                ("sd2", ("unet", "te"), ("output_blocks.4.", "layers.2.")),
                                ("sdxl", ("unet", "te1", "te2"), ("input_blocks.7.1.transformer_blocks.0.", "layers.9.")),
                                ("flux", ("unet", "te3"), ("double_blocks.1.", "single_blocks.0.", "block.1."))):
        d = tmp_path / arch
        d.mkdir()
        rows = F.select(arch, "linear", comps, blocks=blocks)
        c, s = _pair(d, arch, rows, rank_c=3, rank_s=5)
        C, S = load_pair(c.path, s.path)
        params = FuseParams(mu=0.5, k=4, content_weight=0.9, style_weight=1.1, scope="all")
        fused = fuse(C, S, params, dtype=torch.float32)
        assert len(fused.modules) >= 8, arch
        for n, m in fused.modules.items():
            fs, fc = S.modules[n].factors, C.modules[n].factors
            up, down = reference.fuse_module(fs.up, fs.down, 1.1 * fs.scale, fc.up, fc.down, 0.9 * fc.scale,
                                             params.c, k=4)
            assert F.lowrank_rel_err(m.up, m.down, up, down) < 1e-5, (arch, n)


def test_dora_on_both_sides_is_refused_and_passthrough_is_kept(tmp_path):
    rows = F.select("sd1", "attn", ("unet",), blocks=("input_blocks.1.1",))
    c, s = _pair(tmp_path, "sd1", rows)
    sd = load_file(str(c.path))
    key = F.kohya_key("sd1", rows[0])
    sd[f"{key}.dora_scale"] = torch.ones(1, rows[0]["shape"][1])
    save_file(sd, str(c.path))
    with pytest.raises(UnsupportedModuleError) as e:
        fuse(*load_pair(c.path, s.path), FuseParams())
    assert "dora" in str(e.value) and rows[0]["name"] in str(e.value)
    # the same DoRA module with the style not touching that layer: carried over unchanged
    s2 = F.make_lora(tmp_path / "s2.safetensors", "sd1", rows[1:], rank=4, seed=3)
    C, S = load_pair(c.path, s2.path)
    fused = fuse(C, S, FuseParams())
    assert fused.passthrough[rows[0]["name"]].kind == "dora"
    out = load_file(save_fused(fused, tmp_path / "o.safetensors").path)
    assert torch.equal(out[f"{key}.dora_scale"], sd[f"{key}.dora_scale"])
    with pytest.raises(UnsupportedModuleError, match="cannot be scaled"):
        fuse(C, S, FuseParams(content_weight=0.5))
