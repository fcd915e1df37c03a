"""The overlap analysis on constructed cases with known answers."""

import math

import torch
from safetensors.torch import load_file, save_file

import lora_factory as F
from lib_nplora.analysis import analyze, block_of
from lib_nplora.formats.reader import load_pair
from lib_nplora.params import FuseParams


def test_same_lora_overlaps_fully_and_orthogonal_not_at_all(tmp_path):
    rows = F.select("sd1", "attn", ("unet",), blocks=("input_blocks.1.1.", "middle_block.1."))
    s = F.make_lora(tmp_path / "s.safetensors", "sd1", rows, rank=4, seed=1)
    same = analyze(*load_pair(s.path, s.path))
    assert all(abs(m.overlap - 1) < 1e-5 and abs(m.cosines[0] - 1) < 1e-5 for m in same.modules)
    assert abs(same.total.overlap - 1) < 1e-5 and abs(same.total.style_energy_kept - 1) < 1e-9
    # content whose down rows are orthogonal to the style's row space
    sd = load_file(str(s.path))
    for key in [k for k in sd if k.endswith("lora_down.weight")]:
        a = sd[key].double()
        q, _ = torch.linalg.qr(a.T)
        x = torch.randn(4, a.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        sd[key] = (x - (x @ q) @ q.T).float()
    save_file(sd, str(tmp_path / "c.safetensors"))
    orth = analyze(*load_pair(tmp_path / "c.safetensors", s.path))
    assert all(m.overlap < 1e-4 and m.cosines[0] < 1e-3 for m in orth.modules)
    assert [b.block for b in orth.blocks] == ["input_blocks.1", "middle_block"]


def test_energy_kept_by_k_matches_dense_singular_values(tmp_path):
    rows = F.select("sd1", "attn", ("unet",), blocks=("input_blocks.2.1.",))
    c = F.make_lora(tmp_path / "c.safetensors", "sd1", rows, rank=4, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", "sd1", rows, rank=8, seed=2)
    result = analyze(*load_pair(c.path, s.path), FuseParams(k=3))
    for m in result.modules:
        sv = torch.linalg.svdvals(s.truth[m.name].dense())
        assert m.k == 3 and m.style_rank == 8 and m.content_rank == 4
        assert math.isclose(m.style_energy_kept, float((sv[:3] ** 2).sum() / (sv ** 2).sum()), rel_tol=1e-5)
        # overlap against the dense definition ||dW_c V_k|| / ||dW_c||
        v = F.style_basis_ref(s.truth[m.name], k=3)
        dwc = c.truth[m.name].dense()
        assert math.isclose(m.overlap, float((dwc @ v).norm() / dwc.norm()), rel_tol=1e-4)
        assert len(m.cosines) == 4 and all(0 <= x <= 1 for x in m.cosines)


def test_block_labels():
    assert block_of("unet.input_blocks.4.1.transformer_blocks.0.attn1.to_q") == "input_blocks.4"
    assert block_of("unet.single_blocks.12.linear1:q") == "single_blocks.12"
    assert block_of("unet.time_embed.0") == "unet (other)"
    assert block_of("te2.text_model.encoder.layers.1.mlp.fc1") == "te2"
