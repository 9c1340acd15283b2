"""mridip's fast CPU paths against plain references.

The graph convolutions' reference convolves every (target, slot) pair separately (what GIP's
code does, frame by frame); the slot-first path (one batched convolution of every source with
all slot weights, then a gather-sum as one product) and the earlier grouped path must give the
same image, and the slot-first path the same gradients. The per-frame convolutions' split
backward (weight gradient from NCHW copies) must give plain autograd's gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mridip.models import build_generator
from mridip.models.cnn import PerFrameConv2d
from mridip.models.graph import (
    NeighbourConv,
    cosine_knn,
    knn_edge_index,
    use_fast_paths,
    use_slot_first,
)


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


def test_fast_paths_match_the_per_slot_reference_image_and_gradients(
    mridip_gen, monkeypatch
) -> None:
    use_fast_paths(mridip_gen, True)
    convs = [m for m in mridip_gen.modules() if isinstance(m, PerFrameConv2d)]
    assert convs and all(m.split_backward for m in convs)
    y, grads = _fit_signals(mridip_gen)
    use_fast_paths(mridip_gen, False)  # plain autograd for the per-frame convolutions
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


def test_earlier_paths_give_the_same_image(mridip_gen) -> None:
    use_fast_paths(mridip_gen, True)
    with torch.no_grad():
        new = mridip_gen()
        use_fast_paths(mridip_gen, False)
        assert not any(m.slot_first for m in mridip_gen.modules() if isinstance(m, NeighbourConv))
        old = mridip_gen()
    torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("n_frames", "shared_base", "bias", "subset", "shared_input"),
    [
        (5, True, True, True, False),  # mridip's stage 1: base + per-frame part, frame subset
        (5, False, False, False, False),  # GIP-like, no bias
        (1, False, True, False, True),  # one weight set, one shared input (groups=1)
    ],
)
def test_split_backward_matches_autograd(n_frames, shared_base, bias, subset, shared_input):
    torch.manual_seed(2)
    conv = PerFrameConv2d(n_frames, 3, 4, bias=bias, shared_base=shared_base, frame_scale=0.1)
    with torch.no_grad():
        for p in conv.parameters():
            p.add_(0.1 * torch.randn_like(p))
    frames = torch.tensor([0, 2, 4]) if subset else None
    n = 3 if subset else 5
    cin = 3 if shared_input else n * 3
    x0 = torch.randn(1, cin, 9, 7).contiguous(memory_format=torch.channels_last)
    g = torch.randn(1, n * 4, 9, 7)

    def run(split: bool):
        conv.split_backward = split
        conv.zero_grad()
        x = x0.clone().requires_grad_()
        y = conv(x, frames, n)
        y.backward(g)
        grads = {k: p.grad.clone() for k, p in conv.named_parameters() if p.grad is not None}
        return y.detach(), x.grad, grads

    y, gx, grads = run(True)
    y_ref, gx_ref, grads_ref = run(False)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    assert grads.keys() == grads_ref.keys() and grads
    for k, v in grads_ref.items():
        torch.testing.assert_close(grads[k], v, rtol=1e-4, atol=1e-5)


def test_split_backward_is_skipped_under_autocast_and_without_grad() -> None:
    conv = PerFrameConv2d(2, 3, 4)
    x = torch.randn(1, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert conv(x).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert "SplitBackward" not in type(y.grad_fn).__name__
    assert "SplitBackward" in type(conv(x).grad_fn).__name__


def test_use_slot_first_switches_only_per_slot_convolutions() -> None:
    times = torch.arange(6, dtype=torch.float64)
    gip = build_generator("gip", matrix=(16, 16), frame_times=times, width=4)
    use_slot_first(gip, True)
    # gip's weights are per (node, slot): they always take the grouped path
    convs = [m for m in gip.modules() if isinstance(m, NeighbourConv)]
    assert convs and all(m.node_specific for m in convs)


@pytest.mark.parametrize("channels_last", [True, False])
def test_slot_first_with_bias_and_frame_subset_edges(channels_last: bool) -> None:
    torch.manual_seed(1)
    n, k, c, o = 5, 3, 4, 6
    conv = NeighbourConv(c, o, k)
    conv.channels_last = channels_last
    x0 = torch.randn(7, 6, n, c)
    g = torch.randn(7, 6, 2, o)
    edges = knn_edge_index(cosine_knn(torch.randn(n, 3), k)[[0, 3]])  # two targets only

    def run(forward):
        conv.zero_grad()
        x = x0.clone().requires_grad_()
        y = forward(conv, x, edges)
        y.backward(g)
        return y.detach(), x.grad, conv.weight.grad.clone(), conv.bias.grad.clone()

    got = run(NeighbourConv.forward)
    ref = run(_reference_forward)
    assert got[0].shape == (7, 6, 2, o) and got[0].is_contiguous()
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="exactly k edges"):
        conv(x0, edges[:, :-1])


def test_fast_paths_switch_the_graph_convolutions_memory_format(mridip_gen) -> None:
    convs = [m for m in mridip_gen.modules() if isinstance(m, NeighbourConv)]
    assert convs and all(m.channels_last for m in convs)  # the default
    use_fast_paths(mridip_gen, False)
    assert not any(m.channels_last or m.slot_first for m in convs)
    use_fast_paths(mridip_gen, True)
    assert all(m.channels_last and m.slot_first for m in convs)


def test_fit_bench_times_both_graph_paths_side_by_side() -> None:
    from mridip.bench import fit_step_benchmark

    r = fit_step_benchmark(
        matrix=16, coils=2, frames=6, spokes=5, presets=("tddip", "mridip"), repeats=1
    )
    assert "graph_paths" not in r["presets"]["tddip"]
    g = r["presets"]["mridip"]["graph_paths"]
    assert g["rounds"] == 3 and len(g["old_all_s"]) == len(g["new_all_s"]) == 3
    assert g["old_s"] > 0 and g["new_s"] > 0
    assert g["speedup"] == pytest.approx(g["old_s"] / g["new_s"])
    assert len(g["load_average"]) == 2
    a = r["presets"]["mridip"]["amp_cpu"]  # the same step under CPU bfloat16 autocast
    assert a["rounds"] == 3 and len(a["fp32_all_s"]) == len(a["bf16_all_s"]) == 3
    assert a["speedup"] == pytest.approx(a["fp32_s"] / a["bf16_s"])
    assert isinstance(a["native_bf16"], bool)
    assert "amp_cpu" not in r["presets"]["tddip"]
