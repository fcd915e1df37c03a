"""The factor-level SVD, the style basis and the projection, against dense float64 references."""

import pytest
import torch

from lib_nplora.fusion import linalg, reference


def _lowrank(g, m, n, r, dead=0):
    up = torch.randn(m, r, generator=g)
    down = torch.randn(r, n, generator=g)
    if dead:
        up[:, :dead] = 0  # dead rank components, as in many community LoRAs
    return up, down


def _dense_basis(dw, k=None, tol_rank=True):
    u, s, vh = torch.linalg.svd(dw.double(), full_matrices=False)
    rank = int((s > max(dw.shape) * torch.finfo(torch.float32).eps * s[0]).sum())
    k = rank if k is None else min(k, rank)
    return vh[:k].T, s


@pytest.mark.parametrize("m,n,r", [(320, 320, 8), (640, 2048, 32), (1280, 640, 4), (48, 5, 8)])
def test_lowrank_svd_matches_dense_svd(m, n, r):
    g = torch.Generator().manual_seed(m + n + r)
    up, down = _lowrank(g, m, n, r)
    left, right, s, rank = linalg.lowrank_svd(up, down)
    ref_s = torch.linalg.svdvals((up.double() @ down.double()))
    assert rank == min(m, n, r)
    torch.testing.assert_close(s[:rank].double(), ref_s[:rank], rtol=1e-5, atol=1e-4)
    rel = (left @ right - up @ down).norm() / (up @ down).norm()
    assert rel < 1e-5


def test_numerical_rank_drops_dead_components():
    g = torch.Generator().manual_seed(0)
    up, down = _lowrank(g, 640, 640, 16, dead=3)
    v, s, rank, k = linalg.style_basis(up[None], down[None])
    assert int(rank[0]) == 13 and int(k[0]) == 13
    # the kept basis spans exactly the row space of the dense update
    dense_v, _ = _dense_basis(up @ down)
    p1 = v[0].double() @ v[0].double().T
    p2 = dense_v @ dense_v.T
    assert (p1 - p2).norm() < 1e-4


def test_batched_basis_equals_reference_per_module():
    g = torch.Generator().manual_seed(1)
    ups, downs = zip(*[_lowrank(g, 320, 768, 8) for _ in range(5)])
    up, down = torch.stack(ups), torch.stack(downs)
    v, s, rank, k = linalg.style_basis(up, down, k=5)
    for i in range(5):
        ref = reference.style_basis(ups[i], downs[i], k=5)
        assert ref.shape == (768, 5)
        torch.testing.assert_close(v[i, :, :5] @ v[i, :, :5].T, ref @ ref.T, atol=1e-5, rtol=0)
        assert torch.all(v[i, :, 5:] == 0)
        eye = v[i, :, :5].T @ v[i, :, :5]
        torch.testing.assert_close(eye, torch.eye(5), atol=1e-5, rtol=0)


def test_energy_selects_smallest_k_reaching_share():
    s = torch.tensor([[4.0, 2.0, 1.0, 1.0, 0.0]])
    rank = torch.tensor([4])
    total = 16 + 4 + 1 + 1
    assert int(linalg.select_k(s, rank, None, 16 / total)) == 1
    assert int(linalg.select_k(s, rank, None, 16 / total + 1e-3)) == 2
    assert int(linalg.select_k(s, rank, None, 1.0)) == 4
    assert int(linalg.select_k(s, rank, 3, None)) == 3
    assert int(linalg.select_k(s, rank, 9, None)) == 4


@pytest.mark.parametrize("c", [0.0, 1 / 3, 0.5, 1.0])
def test_projection_scales_in_subspace_part_and_keeps_the_rest(c):
    g = torch.Generator().manual_seed(2)
    up_s, down_s = _lowrank(g, 640, 1280, 16)
    up_c, down_c = _lowrank(g, 640, 1280, 16)
    v, *_ = linalg.style_basis(up_s[None], down_s[None])
    new = linalg.project_out(down_c[None], v, c)[0]
    v0 = v[0]
    before, after = up_c @ down_c, up_c @ new
    # inside the style subspace the content response is multiplied by (1 - c) = 1/(1+mu)
    torch.testing.assert_close(after @ v0, (1 - c) * (before @ v0), atol=1e-3, rtol=1e-4)
    # outside it nothing changes
    rest = torch.eye(1280) - v0 @ v0.T
    torch.testing.assert_close(after @ rest, before @ rest, atol=1e-3, rtol=1e-4)
    if c == 1.0:
        assert (after @ v0).abs().max() < 1e-3 * before.abs().max()


def test_reference_fuse_module_matches_dense_formula():
    g = torch.Generator().manual_seed(3)
    up_s, down_s = _lowrank(g, 1280, 2048, 8)
    up_c, down_c = _lowrank(g, 1280, 2048, 12)
    c, ws, wc = 0.5 / 1.5, 0.8, 1.3
    up, down = reference.fuse_module(up_s, down_s, ws, up_c, down_c, wc, c, k=6)
    dws, dwc = (up_s @ down_s).double(), (up_c @ down_c).double()
    vk, _ = _dense_basis(dws, k=6)
    expect = ws * dws + wc * dwc @ (torch.eye(2048, dtype=torch.float64) - c * vk @ vk.T)
    got = (up.double() @ down.double())
    assert up.shape == (1280, 20) and down.shape == (20, 2048)
    assert ((got - expect).norm() / expect.norm()) < 1e-5
