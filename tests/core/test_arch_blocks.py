"""Block groups of every architecture (``arch.blocks``) against the committed module tables, and
per-block mu on the DiTs: a Z-Image and a FLUX.2-klein pair fused with two groups at different
mu against the dense reference; the analysis groups and labels of a DiT pair."""

import json

import pytest
import torch

import lora_factory as F
from lib_nplora.analysis import analyze, block_of, block_sort_key
from lib_nplora.app import block_sliders
from lib_nplora.arch import ARCH_NAMES, TABLES, blocks
from lib_nplora.errors import ParameterError
from lib_nplora.formats.reader import load_pair
from lib_nplora.fusion import reference
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams

#: numbered denoiser paths that are not blocks (embedders, heads, per-layer projections): BASE
NOT_BLOCKS = {"time_embed", "out", "label_emb", "time_embedding", "time_projection", "text_embedding",
              "cap_embedder", "caption_projection"}

#: the depths the published configs give (``config`` in the table), per block list
CONFIG_DEPTHS = {
    "double_blocks": "num_layers", "single_blocks": "num_single_layers",
    "double_stream_blocks": "num_layers", "single_stream_blocks": "num_single_layers",
    "transformer_blocks": "num_layers", "blocks": "num_layers", "joint_blocks": "num_layers",
    "layers": ("n_layers", "num_layers"), "noise_refiner": ("n_refiner_layers", "num_refiner_layers"),
    "context_refiner": ("n_refiner_layers", "num_refiner_layers"),
}


def _table(arch):
    return json.loads((TABLES / f"{arch}.json").read_text(encoding="utf-8"))


def _numbered(arch):
    """denoiser path -> the block indices its table lists (``unet.<path>.<N>.…``)."""
    out: dict[str, set[int]] = {}
    for row in _table(arch)["modules"]:
        comp, _, path = row["name"].partition(".")
        parts = path.split(".")
        if comp == "unet" and len(parts) > 2 and parts[1].isdigit():
            out.setdefault(parts[0], set()).add(int(parts[1]))
    return out


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_table_block_is_in_exactly_one_fine_group(arch):
    runs = {r.path: r for r in blocks.runs(arch)}
    numbered = _numbered(arch)
    assert runs, f"{arch} has no block groups"
    # every numbered list of the table is a block run or a known non-block (a new block list in a
    # regenerated table must not silently fall into BASE)
    assert set(numbered) - set(runs) <= NOT_BLOCKS, set(numbered) - set(runs)
    for path, run in runs.items():
        if run.depth == 1:  # SD's middle_block: one block of several numbered layers
            continue
        assert numbered[path] == set(range(run.depth)), (arch, path)
    fine = blocks.fine_groups(arch)
    assert len(fine) == len(set(fine)) == sum(r.depth for r in runs.values())
    assert not set(fine) & set(blocks.groups(arch))
    members: dict[str, set[str]] = {}
    for row in _table(arch)["modules"]:
        name = row["name"]
        coarse, group = blocks.group_of(arch, name)
        head = name.split(".")[1] if name.startswith("unet.") else None
        if head in runs:
            assert coarse == runs[head].group and group is not None, name
            assert group in fine and group.startswith(runs[head].fine), name
            members.setdefault(group, set()).add(name)
        else:
            assert group is None and coarse == ("TE" if not name.startswith("unet.") else "BASE"), name
    assert set(members) == set(fine)  # no fine group is empty
    for g in blocks.all_groups(arch):  # the names parse_block_mu accepts
        assert len(g) <= 12 and g.isalnum() and g.isupper()


@pytest.mark.parametrize("arch", [a for a in ARCH_NAMES if _table(a).get("config")])
def test_depths_agree_with_the_published_config(arch):
    config = _table(arch)["config"]
    for r in blocks.runs(arch):
        keys = CONFIG_DEPTHS[r.path]
        key = next(k for k in ((keys,) if isinstance(keys, str) else keys) if k in config)
        assert config[key] == r.depth, (arch, r.path)


@pytest.mark.parametrize("arch,name,expected", [
    ("zimage", "unet.noise_refiner.1.attention.qkv:k", ("NOISE", "NR01")),
    ("zimage", "unet.context_refiner.0.feed_forward.w2", ("CONTEXT", "CR00")),
    ("zimage", "unet.layers.29.adaLN_modulation.0", ("LAYERS", "L29")),
    ("zimage", "unet.cap_embedder.1", ("BASE", None)),
    ("lumina2", "unet.layers.25.attention.out", ("LAYERS", "L25")),
    ("qwenimage", "unet.transformer_blocks.59.img_mlp.net.2", ("BLOCKS", "B59")),
    ("flux2", "unet.single_blocks.47.linear1:mlp", ("SINGLE", "S47")),
    ("flux2", "unet.double_stream_modulation_img.lin", ("BASE", None)),
    ("flux2klein4b", "unet.double_blocks.4.img_attn.proj", ("DOUBLE", "D04")),
    ("chroma", "unet.distilled_guidance_layer.layers.4.in_layer", ("BASE", None)),
    ("wan14b", "unet.blocks.39.cross_attn.k_img", ("BLOCKS", "B39")),
    ("wan1b", "unet.time_embedding.0", ("BASE", None)),
    ("sd35m", "unet.joint_blocks.23.x_block.attn.qkv:q", ("JOINT", "J23")),
    ("hidream", "unet.double_stream_blocks.15.block.ff_i.shared_experts.w1", ("DOUBLE", "D15")),
    ("hidream", "unet.single_stream_blocks.31.block.ff_i.experts.3.w2", ("SINGLE", "S31")),
    ("hidream", "unet.caption_projection.48.linear", ("BASE", None)),
    ("hidream", "te4.model.layers.0.self_attn.q_proj", ("TE", None)),
])
def test_dit_group_of(arch, name, expected):
    assert blocks.group_of(arch, name) == expected


def test_sliders_cover_every_coarse_denoiser_group():
    groups = block_sliders.slider_groups()
    assert len(groups) == len(set(groups))
    for arch in ARCH_NAMES:
        assert set(blocks.groups(arch)) - {"BASE", "TE"} <= set(groups), arch
    assert block_sliders.with_group("L29:hard", "LAYERS", 0.4) == "L29:hard,LAYERS:0.4"
    assert block_sliders.slider_values("LAYERS:0.4,NOISE:hard")["LAYERS"] == 0.4


def _dense_check(fused, content, style, params):
    """Every fused module against ``reference.fuse_dense`` with its group's c; returns name -> c."""
    seen = {}
    for name, mod in fused.modules.items():
        fc, fs = content.modules[name].factors, style.modules[name].factors
        c = params.c_of(*blocks.group_of(content.arch, name))
        assert mod.c == pytest.approx(c), name
        ref = reference.fuse_dense([(fs.up, fs.down, fs.scale)], [(fc.up, fc.down, fc.scale)], c, params.k)
        got = mod.up.double() @ mod.down.double()
        assert float((got - ref).norm() / ref.norm()) < 2e-5, name
        seen[name] = c
    return seen


def _pair(tmp_path, arch, rows, fmt="kohya"):
    F.make_lora(tmp_path / "c.safetensors", arch, rows, rank=4, alpha=3, seed=1, fmt=fmt)
    F.make_lora(tmp_path / "s.safetensors", arch, rows, rank=5, alpha=5, seed=2, fmt=fmt)
    return load_pair(tmp_path / "c.safetensors", tmp_path / "s.safetensors")


def test_per_block_mu_on_zimage_matches_the_dense_reference(tmp_path):
    rows = [F.rows_by_name("zimage")[n] for n in (
        "unet.noise_refiner.0.adaLN_modulation.0", "unet.noise_refiner.1.adaLN_modulation.0",
        "unet.context_refiner.0.attention.out", "unet.layers.0.adaLN_modulation.0",
        "unet.layers.29.adaLN_modulation.0", "unet.x_embedder")]
    content, style = _pair(tmp_path, "zimage", rows, fmt="ldm-peft")
    assert content.arch == style.arch == "zimage"
    params = FuseParams(mu=0.5, block_mu="NOISE:0.1,LAYERS:3,L29:hard")
    seen = _dense_check(fuse(content, style, params, dtype=torch.float32), content, style, params)
    assert seen == pytest.approx({
        "unet.noise_refiner.0.adaLN_modulation.0": 0.1 / 1.1, "unet.noise_refiner.1.adaLN_modulation.0": 0.1 / 1.1,
        "unet.context_refiner.0.attention.out": 0.5 / 1.5,  # no entry: the global mu
        "unet.layers.0.adaLN_modulation.0": 0.75, "unet.layers.29.adaLN_modulation.0": 1.0,  # fine over coarse
        "unet.x_embedder": 0.5 / 1.5})
    with pytest.raises(ParameterError, match="no block group L30"):
        fuse(content, style, FuseParams(block_mu="L30:1"))
    with pytest.raises(ParameterError, match="no block group IN"):  # an SD group on a DiT
        fuse(content, style, FuseParams(block_mu="IN:1"))


def test_per_block_mu_on_flux2_klein_matches_the_dense_reference(tmp_path):
    rows = [F.rows_by_name("flux2klein4b")[n] for n in (
        "unet.double_blocks.0.img_attn.proj", "unet.double_blocks.4.txt_attn.proj",
        "unet.single_blocks.0.linear2", "unet.single_blocks.19.linear2")]
    content, style = _pair(tmp_path, "flux2klein4b", rows)
    assert content.arch == "flux2klein4b"  # klein's single blocks fit no other table
    params = FuseParams(mu=2.0, block_mu="DOUBLE:0.25,S19:hard")
    seen = _dense_check(fuse(content, style, params, dtype=torch.float32), content, style, params)
    assert seen == pytest.approx({"unet.double_blocks.0.img_attn.proj": 0.2, "unet.double_blocks.4.txt_attn.proj": 0.2,
                                  "unet.single_blocks.0.linear2": 2 / 3, "unet.single_blocks.19.linear2": 1.0})


def test_analysis_of_a_dit_pair_has_its_blocks_and_groups(tmp_path):
    rows = [F.rows_by_name("zimage")[n] for n in (
        "unet.noise_refiner.0.adaLN_modulation.0", "unet.layers.3.adaLN_modulation.0",
        "unet.layers.12.adaLN_modulation.0", "unet.t_embedder.mlp.0")]
    content, style = _pair(tmp_path, "zimage", rows)
    result = analyze(content, content, FuseParams())  # the same LoRA: full overlap everywhere
    assert [b.block for b in result.blocks] == ["noise_refiner.0", "layers.3", "layers.12", "unet (other)"]
    groups = {g.group: g for g in result.groups}
    assert {g for g in groups if groups[g].coarse} == {"NOISE", "LAYERS", "BASE"}
    assert {g for g in groups if not groups[g].coarse} == {"NR00", "L03", "L12"}
    assert groups["LAYERS"].modules == 2 and groups["LAYERS"].overlap == pytest.approx(1.0, abs=1e-4)
    assert set(result.suggested_groups()) == {"NOISE", "LAYERS", "BASE"}
    apart = analyze(content, style, FuseParams())
    assert [g.group for g in apart.groups] == ["NOISE", "LAYERS", "BASE", "NR00", "L03", "L12"]  # model order


def test_block_labels_of_the_dits():
    assert block_of("unet.layers.7.attention.qkv:k", "zimage") == "layers.7"
    assert block_of("unet.blocks.3.ffn.0", "wan1b") == "blocks.3"
    assert block_of("unet.caption_projection.3.linear", "hidream") == "unet (other)"
    assert block_of("unet.joint_blocks.0.x_block.attn.qkv:q") == "joint_blocks.0"  # any arch's lists
    labels = ["layers.10", "unet (other)", "context_refiner.1", "layers.2", "noise_refiner.0", "te1"]
    assert sorted(labels, key=block_sort_key) == ["noise_refiner.0", "context_refiner.1", "layers.2", "layers.10",
                                                  "unet (other)", "te1"]
