"""Several content and style LoRAs, and per-block mu: the batched fusion against the dense
reference (``fusion.reference.fuse_dense``) for n, m in {1, 2, 3}, every mode, k below the
rank, per-block mu and the chain option; one content and one style bit for bit the pair path;
the caches keep a new mu / per-block mu off the SVD."""

import itertools

import pytest
import torch

import lora_factory as F
from lib_nplora.arch import blocks
from lib_nplora.cache import Caches
from lib_nplora.errors import ParameterError, UnsupportedModuleError
from lib_nplora.formats.reader import load_lora, load_pair
from lib_nplora.fusion import basis, linalg, merge, reference
from lib_nplora.fusion.merge import fuse, fuse_set, write_balanced
from lib_nplora.params import BlockMu, FuseParams, parse_block_mu

# SD1 modules in the input, middle and output blocks and the text encoder
ROWS = F.select("sd1", "attn", ("unet", "te"), blocks=(
    "input_blocks.1.1.transformer_blocks.0.attn1.", "input_blocks.2.1.transformer_blocks.0.attn2.to_k",
    "middle_block.1.transformer_blocks.0.attn2.", "output_blocks.11.1.transformer_blocks.0.attn1.",
    "layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj"))
RANKS = (3, 4, 5)


def _inputs(tmp_path, n, m):
    """n contents and m styles; each input leaves out a different part of ROWS (modules held by
    only some inputs), ranks and alphas differ."""
    out = []
    for role, count, seed in (("c", n, 10), ("s", m, 50)):
        loras = []
        for i in range(count):
            rows = [r for j, r in enumerate(ROWS) if (j + i) % 4 != 3]
            made = F.make_lora(tmp_path / f"{role}{i}.safetensors", "sd1", rows, rank=RANKS[i], alpha=RANKS[i] - 1,
                               seed=seed + i)
            loras.append(load_lora(made.path))
        out.append(loras)
    return out


def _dense_check(fused, contents, styles, params, wc, ws):
    """Every fused module against ``reference.fuse_dense`` (float64), and its rank."""
    arch = contents[0].arch
    for name, mod in fused.modules.items():
        cs = [(lo.modules[name].factors, w * params.content_weight) for lo, w in zip(contents, wc)
              if name in lo.modules]
        ss = [(lo.modules[name].factors, w * params.style_weight) for lo, w in zip(styles, ws) if name in lo.modules]
        projected = bool(cs) and (bool(ss) or (params.chain and len(cs) > 1)) and (
            params.scope == "all" or not name.startswith("te."))
        c = params.c_of(*blocks.group_of(arch, name)) if projected else 0.0
        assert mod.c == pytest.approx(c), name
        ref = reference.fuse_dense([(f.up, f.down, w * f.scale) for f, w in ss],
                                   [(f.up, f.down, w * f.scale) for f, w in cs], c, params.k, params.energy,
                                   params.chain)
        got = mod.up.double() @ mod.down.double()
        err = float((got - ref).norm() / ref.norm())
        assert err < 2e-5, (name, err)
        assert mod.rank == sum(f.rank for f, _ in cs + ss), name


MODES = {
    "paper": FuseParams(),
    "mu_k_below_rank": FuseParams(mu=0.8, k=2, content_weight=0.7, style_weight=1.3),
    "hard_scope_all": FuseParams(hard=True, scope="all"),
    "direct": FuseParams(method="direct", block_mu="IN:hard"),  # direct ignores per-block mu
    "energy": FuseParams(mu=2.0, energy=0.6),
    "block_mu": FuseParams(mu=0.5, block_mu="IN:0.1,MID:hard,OUT11:0,OUT:3"),
    "chain": FuseParams(mu=1.5, k=3, chain=True),
    "chain_hard_blocks": FuseParams(hard=True, chain=True, block_mu="IN01:0.2", scope="all"),
}


@pytest.mark.parametrize("n,m", list(itertools.product((1, 2, 3), repeat=2)))
def test_batched_fusion_equals_the_dense_reference(tmp_path, n, m):
    contents, styles = _inputs(tmp_path, n, m)
    wc, ws = (1.0, 0.6, -0.4)[:n], (1.0, 0.5, 1.7)[:m]
    for label, params in MODES.items():
        fused = fuse_set(list(zip(contents, wc)), list(zip(styles, ws)), params, dtype=torch.float32)
        held = set().union(*(lo.modules for lo in contents + styles))
        assert fused.modules.keys() == held, label
        _dense_check(fused, contents, styles, params, wc, ws)
        # the metadata's inputs: every one, in order, with its effective weight
        assert [i.sha256 for i in fused.inputs] == [lo.sha256 for lo in contents + styles]
        assert [i.weight for i in fused.contents] == [w * params.content_weight for w in wc]


def _pair_path(content, style, params, dtype):
    """The pair fusion as the code before several inputs wrote it, from the same primitives:
    bases of the style, content down projected, [style | content] balanced (fused modules only)."""
    out = {}
    for name, mc in content.modules.items():
        if name not in style.modules:
            continue
        fs, fc = style.modules[name].factors, mc.factors
        a_c = fc.down.float()[None]
        if params.c > 0 and (params.scope == "all" or not name.startswith("te.")):
            v = basis.compute_bases(style, [name], params.k, params.energy)[name].v
            a_c = linalg.project_out(a_c, v[None], params.c)
        r = fs.rank + fc.rank
        up = torch.empty(1, fs.out_features, r, dtype=dtype)
        down = torch.empty(1, r, fs.in_features, dtype=dtype)
        write_balanced(up, down, [([fs.up], torch.tensor([params.style_weight * fs.scale]), [fs.down]),
                                  ([fc.up], torch.tensor([params.content_weight * fc.scale]), a_c)])
        out[name] = (up[0], down[0])
    return out


@pytest.mark.parametrize("params", [FuseParams(), FuseParams(mu=0.3, k=2, content_weight=0.8, style_weight=1.2),
                                    FuseParams(hard=True, scope="all"), FuseParams(energy=0.5)])
def test_one_content_and_one_style_is_the_pair_path_bit_for_bit(tmp_path, params):
    (content,), (style,) = _inputs(tmp_path, 1, 1)
    via_set = fuse_set([(content, 1.0)], [(style, 1.0)], params, dtype=torch.float16)
    via_pair = fuse(content, style, params, dtype=torch.float16, cache=Caches())
    expected = _pair_path(content, style, params, torch.float16)
    assert expected
    for name, (up, down) in expected.items():
        for fused in (via_set, via_pair):
            assert torch.equal(fused.modules[name].up, up) and torch.equal(fused.modules[name].down, down), name
    assert via_set.counts() == via_pair.counts()


def test_chain_keeps_an_earlier_contents_directions(tmp_path):
    """Hard chain: the second content's projected update has nothing left in the first one's
    input directions, nor in the style's; without chain it has."""
    contents, styles = _inputs(tmp_path, 2, 1)
    name = next(n for n in contents[1].modules if n in contents[0].modules and n in styles[0].modules
                and n.startswith("unet."))
    w1 = basis.compute_bases(contents[0], [name])[name].v
    for chain in (False, True):
        fused = fuse_set([(contents[0], 1.0), (contents[1], 1.0)], [(styles[0], 1.0)],
                         FuseParams(hard=True, chain=chain), dtype=torch.float32)
        mod = fused.modules[name]
        r_s, r_c0 = styles[0].modules[name].factors.rank, contents[0].modules[name].factors.rank
        second = mod.down[r_s + r_c0:]  # the second content's down rows
        leak = float((second @ w1).norm() / second.norm())
        assert (leak < 1e-5) if chain else (leak > 0.05), (chain, leak)


def test_per_block_mu_sets_c_by_group_and_refuses_unknown_groups(tmp_path):
    contents, styles = _inputs(tmp_path, 1, 1)
    params = FuseParams(mu=0.5, block_mu="IN:0,OUT11:hard,MID:3")
    fused = fuse(contents[0], styles[0], params, dtype=torch.float32)
    by_group = {}
    for name, mod in fused.modules.items():
        by_group.setdefault(blocks.group_of("sd1", name)[0], set()).add(mod.c)
    assert by_group["IN"] == {0.0} and by_group["OUT"] == {1.0} and by_group["MID"] == {0.75}
    assert by_group["TE"] == {0.0}  # scope unet: text encoders are never projected
    with pytest.raises(ParameterError, match="no block group OUT12"):
        fuse(contents[0], styles[0], FuseParams(block_mu="OUT12:1"))


@pytest.mark.parametrize("arch,name,expected", [
    ("sdxl", "unet.input_blocks.4.1.transformer_blocks.0.attn1.to_q", ("IN", "IN04")),
    ("sdxl", "unet.middle_block.1.proj_in", ("MID", "M00")),
    ("sd1", "unet.output_blocks.11.1.proj_out", ("OUT", "OUT11")),
    ("sdxl", "unet.label_emb.0.0", ("BASE", None)),
    ("flux", "unet.single_blocks.37.linear1:mlp", ("SINGLE", "S37")),
    ("flux", "unet.double_blocks.0.img_attn.qkv:q", ("DOUBLE", "D00")),
    ("flux", "te3.encoder.block.1.layer.0.SelfAttention.q", ("TE", None)),
    ("newarch", "unet.blocks.3.attn", ("BASE", None)),  # an architecture without a table
])
def test_block_groups(arch, name, expected):
    assert blocks.group_of(arch, name) == expected


def test_every_table_module_has_a_group_that_the_arch_lists():
    for arch in ("sd1", "sd2", "sdxl", "flux"):
        known = blocks.all_groups(arch)
        for row in F.table(arch):
            coarse, fine = blocks.group_of(arch, row["name"])
            assert coarse in known and (fine is None or fine in known), (arch, row["name"])


@pytest.mark.parametrize("text,expected", [
    ("IN:0.2,OUT:1.0", (BlockMu("IN", 0.2), BlockMu("OUT", 1.0))),
    (" out : hard , in04:0 ", (BlockMu("IN04", 0.0), BlockMu("OUT", 0.0, True))),
    ("", ()),
])
def test_block_mu_text(text, expected):
    assert parse_block_mu(text) == expected


@pytest.mark.parametrize("text,match", [("IN", "needs GROUP:MU"), ("IN:-1", "between 0"), ("IN:nan", "finite"),
                                        ("IN:1,in:2", "given twice"), ("I/N:1", "not a block group"),
                                        (",".join(f"G{i}:1" for i in range(65)), "at most|too long")])
def test_block_mu_text_refused(text, match):
    with pytest.raises(ParameterError, match=match):
        parse_block_mu(text)


def test_several_styles_joint_subspace_is_cached_and_a_new_mu_skips_the_svd(tmp_path, monkeypatch):
    contents, styles = _inputs(tmp_path, 2, 2)
    caches = Caches()
    calls = []
    real = basis.compute_joint_bases
    monkeypatch.setattr(merge, "compute_joint_bases", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr("lib_nplora.cache.compute_joint_bases", lambda *a, **k: calls.append(1) or real(*a, **k))
    ins = ([(contents[0], 1.0), (contents[1], 0.5)], [(styles[0], 1.0), (styles[1], 0.7)])
    fuse_set(*ins, FuseParams(mu=0.5), cache=caches)
    assert len(calls) == 1
    for params in (FuseParams(mu=2.0), FuseParams(block_mu="IN:hard,OUT:0.1"), FuseParams(style_weight=0.3)):
        fused = fuse_set(*ins, params, cache=caches, dtype=torch.float32)
        _dense_check(fused, contents, styles, params, (1.0, 0.5), (1.0, 0.7))
    assert len(calls) == 1  # a new mu, per-block mu or global weight: the joint bases are reused
    fuse_set(ins[0], [(styles[0], 1.0), (styles[1], 0.2)], FuseParams(), cache=caches)
    assert len(calls) == 2  # other ratios between the styles: another subspace


@pytest.mark.parametrize("params", [FuseParams(mu=1.5), FuseParams(block_mu="IN:hard,OUT:0.1"),
                                    FuseParams(mu=0.8, k=2, chain=True)])
def test_kept_coordinates_give_the_uncached_result_bit_for_bit(tmp_path, params):
    """A warm fusion projects with the kept A_c V (``Caches.coordinates``): the same bits as a
    fusion without any cache, for several inputs and per-block mu; a new mu computes none, nor
    does a new per-block mu that groups the modules as the one before."""
    contents, styles = _inputs(tmp_path, 2, 2)
    ins = ([(contents[0], 1.0), (contents[1], 0.5)], [(styles[0], 1.0), (styles[1], 0.7)])
    caches = Caches()
    fuse_set(*ins, FuseParams(mu=0.3, k=params.k), cache=caches)
    computed = []
    real = caches.coordinates

    def spy(content, key, names, compute):
        return real(content, key, names, lambda: computed.extend(names) or compute())

    caches.coordinates = spy
    warm = fuse_set(*ins, params, cache=caches, dtype=torch.float32)
    plain = fuse_set(*ins, params, dtype=torch.float32)
    if params.block_mu:  # the modules are grouped by their block's c: once per new batch
        assert computed
        computed.clear()
        again = fuse_set(*ins, FuseParams(block_mu="IN:0.5,OUT:0.2"), cache=caches, dtype=torch.float32)
        assert again.modules
    assert computed == []  # every content's coordinates were kept from the fusion before
    assert any(m.c > 0 for m in warm.modules.values())
    for n, mod in plain.modules.items():
        assert torch.equal(warm.modules[n].up, mod.up) and torch.equal(warm.modules[n].down, mod.down), n


@pytest.mark.parametrize("params", [FuseParams(mu=0.7, k=2), FuseParams(block_mu="IN:hard,OUT:0.1"),
                                    FuseParams(hard=True, chain=True)])
def test_projected_contents_applied_as_separate_loras_is_the_fusion(tmp_path, params):
    """``merge.projected_contents`` (what ComfyUI applies): each content's up at its weight with the
    projected downs, plus every style unchanged, equals the fused update of ``fuse_set``."""
    contents, styles = _inputs(tmp_path, 2, 2)
    wc, ws = (1.0, 0.5), (1.0, 0.7)
    ins = (list(zip(contents, wc)), list(zip(styles, ws)))
    fused = fuse_set(*ins, params, dtype=torch.float32)
    c_parts, s_parts = merge.parts_of(*ins, params)
    downs = merge.projected_contents(c_parts, s_parts, params, cache=Caches())
    assert len(downs) == 2 and all(downs) and set(downs[0]) | set(downs[1]) <= set(fused.modules)
    for name, mod in fused.modules.items():
        total = torch.zeros(mod.up.shape[0], mod.down.shape[1], dtype=torch.float64)
        for parts, projected in ((s_parts, None), (c_parts, downs)):
            for i, part in enumerate(parts):
                f = part.lora.modules.get(name)
                if f is None:
                    continue
                down = projected[i].get(name, f.factors.down) if projected is not None else f.factors.down
                assert projected is None or name not in projected[i] or mod.c > 0
                total += part.weight * f.factors.scale * (f.factors.up.double() @ down.double())
        got = mod.up.double() @ mod.down.double()
        assert float((got - total).norm() / total.norm()) < 1e-5, name


def test_zero_weight_input_takes_no_part_and_passthrough_conflicts_name_the_file(tmp_path):
    contents, styles = _inputs(tmp_path, 2, 2)
    params = FuseParams()
    with_zero = fuse_set([(contents[0], 1.0), (contents[1], 0.0)], [(styles[0], 1.0), (styles[1], 0.0)], params,
                         dtype=torch.float32)
    alone = fuse(contents[0], styles[0], params, dtype=torch.float32)
    assert with_zero.modules.keys() == alone.modules.keys()
    for n, m in alone.modules.items():
        assert torch.equal(with_zero.modules[n].up, m.up) and torch.equal(with_zero.modules[n].down, m.down)
    with pytest.raises(ParameterError, match="every weight is 0"):
        fuse_set([(contents[0], 0.0)], [(styles[0], 0.0), (styles[1], 0.0)], params)
    # a DoRA module in the third input where the first changes the same weight: refused, naming it
    from safetensors.torch import load_file, save_file
    third = tmp_path / "s1.safetensors"
    sd = load_file(str(third))
    row = next(r for r in ROWS if r["name"] in styles[1].modules and r["name"] in contents[0].modules)
    sd[f"{F.kohya_key('sd1', row)}.dora_scale"] = torch.ones(1, row["shape"][1])
    save_file(sd, str(third))
    with pytest.raises(UnsupportedModuleError) as e:
        fuse_set([(contents[0], 1.0)], [(styles[0], 1.0), (load_lora(third), 1.0)], params)
    assert "dora" in str(e.value) and row["name"] in str(e.value) and "s1.safetensors" in str(e.value)


def test_inputs_of_different_architectures_are_refused(tmp_path):
    (content,), (style,) = _inputs(tmp_path, 1, 1)
    xl = F.make_lora(tmp_path / "xl.safetensors", "sdxl", F.select("sdxl", "attn", limit=2), rank=2)
    with pytest.raises(Exception, match="xl"):
        fuse_set([(content, 1.0)], [(style, 1.0), (load_lora(xl.path), 1.0)], FuseParams())
    assert load_pair  # the pair reader stays the way to read two inputs
