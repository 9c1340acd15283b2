"""mridip's per-slot graph convolutions: the slot-first path against a plain reference.

The reference convolves every (target, slot) pair separately (what GIP's code does, frame by
frame); the slot-first path (one batched convolution of every source with all slot weights,
then a gather-sum) and the earlier grouped path must give the same image, and the slot-first
path the same gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mridip.models import build_generator
from mridip.models.graph import NeighbourConv, cosine_knn, knn_edge_index, use_slot_first


def _reference_forward(self, x, edge_index, targets=None):
    """Per target and slot, one ``conv2d`` of the neighbour's map (GIP's loop)."""
    k = self.k
    src = edge_index[0].view(-1, k)
    maps = x.permute(2, 3, 0, 1)  # (N, C, H, W)
    w = self.slot_weight[0]  # (out, k, in, ks, ks)
    out = []
    for i in range(src.shape[0]):
        acc = sum(
            F.conv2d(
                maps[src[i, s]][None],
                w[:, s],
                None if self.bias is None else self.bias[s],
                padding=self.kernel_size // 2,
            )
            for s in range(k)
        )
        out.append(acc / k)
    return torch.cat(out).permute(2, 3, 0, 1).contiguous()


def _fit_signals(gen, loss_seed: int = 0):
    gen.zero_grad()
    y = gen()
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(loss_seed))
    (y * g.conj()).real.sum().backward()
    grads = {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}
    return y.detach(), grads


@pytest.fixture()
def mridip_gen():
    times = torch.arange(8, dtype=torch.float64) * 0.05
    gen = build_generator("mridip", matrix=(16, 16), frame_times=times, seed=3, width=8)
    torch.manual_seed(0)
    with torch.no_grad():  # away from the zero start, so every part carries a gradient
        for p in gen.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return gen


def test_slot_first_matches_the_per_slot_reference_image_and_gradients(
    mridip_gen, monkeypatch
) -> None:
    use_slot_first(mridip_gen, True)
    y, grads = _fit_signals(mridip_gen)
    with monkeypatch.context() as m:
        m.setattr(NeighbourConv, "forward", _reference_forward)
        y_ref, grads_ref = _fit_signals(mridip_gen)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for name, g in grads_ref.items():
        scale = float(g.abs().max())
        if scale < 1e-3:  # biases before an instance norm: zero up to rounding
            continue
        err = float((grads[name] - g).abs().max()) / scale
        assert err < 1e-3, (name, err)


def test_grouped_path_gives_the_same_image(mridip_gen) -> None:
    use_slot_first(mridip_gen, True)
    with torch.no_grad():
        new = mridip_gen()
        use_slot_first(mridip_gen, False)
        old = mridip_gen()
    torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-5)


def test_use_slot_first_switches_only_per_slot_convolutions() -> None:
    times = torch.arange(6, dtype=torch.float64)
    gip = build_generator("gip", matrix=(16, 16), frame_times=times, width=4)
    use_slot_first(gip, True)
    # gip's weights are per (node, slot): they always take the grouped path
    convs = [m for m in gip.modules() if isinstance(m, NeighbourConv)]
    assert convs and all(m.node_specific for m in convs)


def test_slot_first_with_bias_and_frame_subset_edges() -> None:
    torch.manual_seed(1)
    n, k, c = 5, 3, 4
    conv = NeighbourConv(c, c, k)
    x = torch.randn(7, 6, n, c)
    nb = cosine_knn(torch.randn(n, 3), k)[[0, 3]]  # two targets only
    got = conv(x, knn_edge_index(nb))
    ref = _reference_forward(conv, x, knn_edge_index(nb))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="exactly k edges"):
        conv(x, knn_edge_index(nb)[:, :-1])


def test_fit_bench_times_both_graph_paths_side_by_side() -> None:
    from mridip.bench import fit_step_benchmark

    r = fit_step_benchmark(
        matrix=16, coils=2, frames=6, spokes=5, presets=("tddip", "mridip"), repeats=1
    )
    assert "graph_paths" not in r["presets"]["tddip"]
    g = r["presets"]["mridip"]["graph_paths"]
    assert g["rounds"] == 3 and len(g["grouped_all_s"]) == len(g["slot_first_all_s"]) == 3
    assert g["grouped_s"] > 0 and g["slot_first_s"] > 0
    assert g["speedup"] == pytest.approx(g["grouped_s"] / g["slot_first_s"])
