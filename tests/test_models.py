"""Tests of the generators: shapes, joint fitting, per-frame independence, graph, fidelity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mridip.bench_generators import _ReferenceGIP, generator_step_benchmark
from mridip.errors import ConfigError
from mridip.models import PRESETS, build_generator, describe_presets, time_manifold
from mridip.models.cnn import ConvDecoder, PerFrameConv2d, PerFrameDecoder, level_sizes, to_grouped
from mridip.models.graph import FrameGraph, NeighbourConv, cosine_knn, knn_edge_index
from mridip.models.latents import MapNet

NAMES = sorted(PRESETS)


def _times(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64) * 0.04


# ---------------------------------------------------------------------------------------------
# every preset


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("matrix", "n_frames"), [((32, 32), 4), ((20, 36), 5), ((24, 16), 3)])
def test_preset_returns_complex_series(name: str, matrix: tuple[int, int], n_frames: int) -> None:
    g = (
        build_generator(name, matrix=matrix, frame_times=_times(n_frames), k=3)
        if name
        in (
            "gip",
            "mridip",
        )
        else build_generator(name, matrix=matrix, frame_times=_times(n_frames))
    )
    y = g()
    assert y.shape == (n_frames, *matrix)
    assert y.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(y)).all()
    assert y.abs().mean() > 0


@pytest.mark.parametrize("name", NAMES)
def test_joint_fit_reaches_every_parameter(name: str) -> None:
    g = build_generator(name, matrix=(24, 24), frame_times=_times(4))
    target = torch.randn(4, 24, 24, dtype=torch.complex64)
    # one Adam step first: mridip's graph refinement starts at zero (its head is zero, so the
    # rest of the graph stage gets gradients from the second step on, as in a zero-initialised
    # residual branch)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    (g() - target).abs().pow(2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss = (g() - target).abs().pow(2).mean()
    loss.backward()
    params = dict(g.named_parameters())
    assert params
    no_grad = [n for n, p in params.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert no_grad == []


@pytest.mark.parametrize("name", NAMES)
def test_fitting_a_moving_target_reduces_the_misfit(name: str) -> None:
    t = torch.arange(4, dtype=torch.float32)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    target = torch.exp(-((xx - 5 - 2 * t) ** 2 + (yy - 8) ** 2) / 8).to(torch.complex64)
    g = build_generator(name, matrix=(16, 16), frame_times=_times(4), seed=0)
    opt = torch.optim.Adam(g.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = (g() - target).abs().pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_learned_embeddings_are_fitted_with_the_network() -> None:
    g = build_generator("mridip", matrix=(16, 16), frame_times=_times(3), latent="embedding")
    g().abs().pow(2).mean().backward()
    emb = g.code.weight
    assert emb.grad is not None and bool((emb.grad.abs().sum(dim=1) > 0).all())


# gip normalises its graph stage over the nodes it computes (GIP's batch norm), so a subset of
# frames equals the full series there only when stage 2 sees every frame: all frames, reordered
SUBSETS = [(n, [4, 1]) for n in NAMES if n != "gip"] + [(n, [5, 0, 3, 1, 4, 2]) for n in NAMES]


@pytest.mark.parametrize(("name", "frames"), SUBSETS)
def test_frame_subset_matches_full_series(name: str, frames: list[int]) -> None:
    g = build_generator(name, matrix=(16, 24), frame_times=_times(6), seed=3)
    g.eval()  # the graph computed by the first call stays fixed
    with torch.no_grad():
        full = g()
        sub = g(torch.tensor(frames))
    assert sub.shape == (len(frames), 16, 24)
    torch.testing.assert_close(sub, full[frames], rtol=1e-4, atol=1e-5)


def test_graph_subset_computes_only_the_two_hop_neighbourhood() -> None:
    g = build_generator("mridip", matrix=(16, 16), frame_times=_times(8), k=2, knn_every=0)
    g.eval()
    with torch.no_grad():
        full = g()
        nb = g.graph.neighbours
        nodes = g._closure(torch.tensor([0]))
        assert nodes is not None and nodes.numel() < 8
        hop1 = torch.unique(torch.cat([torch.tensor([0]), nb[0]]))
        expected = torch.unique(torch.cat([hop1, nb[hop1].reshape(-1)]))
        assert torch.equal(nodes, expected)
        torch.testing.assert_close(g([0]), full[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_construction_is_deterministic(name: str) -> None:
    kw = {"matrix": (16, 16), "frame_times": _times(3)}
    state = torch.random.get_rng_state()
    a = build_generator(name, seed=7, **kw)
    b = build_generator(name, seed=7, **kw)
    c = build_generator(name, seed=8, **kw)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    with torch.no_grad():
        assert torch.equal(a(), b())


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_conversion_keeps_the_output(name: str) -> None:
    g = build_generator(name, matrix=(16, 16), frame_times=_times(3))
    g.eval()
    with torch.no_grad():
        before = g()
        after = g.to(memory_format=torch.channels_last)()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_describe_presets_counts_match_built_models() -> None:
    rows = describe_presets((24, 20), 5)
    assert [r["name"] for r in rows] == list(PRESETS)
    for r in rows:
        built = build_generator(r["name"], matrix=(24, 20), frame_times=_times(5))
        assert r["params"] == sum(p.numel() for p in built.parameters())
        assert r["description"]


@pytest.mark.parametrize(
    ("matrix", "width"), [((48, 48), 32), ((64, 64), 32), ((96, 96), 48), ((128, 128), 64)]
)
def test_lrdip_decoder_width_follows_its_rule(matrix: tuple[int, int], width: int) -> None:
    """docs/models.md: ``64 · N/128``, at least 32; the decoder's convolutions have that width."""
    g = build_generator("lrdip", matrix=matrix, frame_times=_times(4))
    convs = [m for m in g.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert {c.out_channels for c in convs[:-1]} == {width}


@pytest.mark.parametrize(("frames", "k"), [(4, 2), (8, 2), (9, 3), (16, 3), (30, 3)])
def test_mridip_neighbours_follow_their_rule(frames: int, k: int) -> None:
    """docs/models.md: a third of the frames, 2 or 3; the graph convolutions have k slots."""
    g = build_generator("mridip", matrix=(16, 16), frame_times=_times(frames))
    convs = [m for m in g.modules() if isinstance(m, NeighbourConv)]
    assert convs and {c.k for c in convs} == {k}
    assert build_generator("mridip", matrix=(16, 16), frame_times=_times(16), k=5).stage2.k == 5


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown generator"):
        build_generator("unet", matrix=(16, 16), frame_times=_times(2))
    with pytest.raises(ConfigError, match="no option"):
        build_generator("tddip", matrix=(16, 16), frame_times=_times(2), k=3)
    with pytest.raises(ConfigError, match="unknown time manifold|unknown latent"):
        build_generator("tddip", matrix=(16, 16), frame_times=_times(2), latent="spiral")
    with pytest.raises(ConfigError, match="NaN"):
        build_generator("dip", matrix=(16, 16), frame_times=[0.0, float("nan")])
    g = build_generator("dip", matrix=(16, 16), frame_times=_times(2))
    with pytest.raises(ConfigError, match=r"\[0, 2\)"):
        g([2])


# ---------------------------------------------------------------------------------------------
# latents


def test_helix_is_a_function_of_time_not_of_the_index() -> None:
    regular = time_manifold([0.0, 0.2, 0.4, 0.6], "helix", period=0.8)
    irregular = time_manifold([0.0, 0.2, 0.6], "helix", period=0.8)
    torch.testing.assert_close(irregular[:, :2], regular[[0, 1, 3], :2])
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1 / 3], [0.0, -1.0, 1.0]])
    torch.testing.assert_close(irregular, expected, atol=1e-6, rtol=0)


def test_cycles_close_the_loop_over_the_covered_span() -> None:
    z = time_manifold(torch.arange(8) * 0.1, "circle", cycles=1)  # span 0.8 s
    angles = torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi)
    torch.testing.assert_close(angles, torch.arange(8) * (2 * math.pi / 8), atol=1e-5, rtol=0)
    two = time_manifold(torch.arange(8) * 0.1, "circle", cycles=2)
    torch.testing.assert_close(two[4], two[0], atol=1e-6, rtol=0)


def test_line_and_cardiac_respiratory_manifolds() -> None:
    t = torch.tensor([0.0, 1.0, 4.0])
    line = time_manifold(t, "line")
    torch.testing.assert_close(line[:, 0], torch.tensor([0.0, 0.25, 1.0]))
    z = time_manifold(t, "cardiac_resp", period=1.0, resp_period=4.0)
    assert z.shape == (3, 4)
    torch.testing.assert_close(z[:, :2], torch.tensor([[1.0, 0.0]] * 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        z[:, 2:], torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), atol=1e-6, rtol=0
    )


def test_mapnet_lifts_codes_to_maps() -> None:
    m = MapNet(3, (1, 8, 8))
    assert sum(p.numel() for p in m.parameters()) == 3 * 512 + 512 + 512 * 64 + 64
    assert m(torch.randn(5, 3)).shape == (5, 1, 8, 8)


# ---------------------------------------------------------------------------------------------
# stage 1


@pytest.mark.parametrize("size", [(96, 96), (144, 144), (208, 208), (100, 76)])
def test_level_sizes_reach_any_matrix(size: tuple[int, int]) -> None:
    sizes = level_sizes(size, 4)
    assert sizes[-1] == size
    assert all(2 * a >= b for (a, _), (b, _) in zip(sizes, sizes[1:], strict=False))


def test_decoders_produce_non_power_of_two_sizes() -> None:
    dec = ConvDecoder(2, (20, 12), width=8, n_up=3)
    assert dec(torch.randn(2, *dec.in_shape)).shape == (2, 2, 20, 12)
    per = PerFrameDecoder(3, 2, (20, 12), width=2, n_up=3)
    out = per(torch.randn(3, *per.in_shape))
    assert out.shape == (1, 3 * per.out_channels, 20, 12)


def test_per_frame_weights_change_only_their_frame() -> None:
    torch.manual_seed(0)
    dec = PerFrameDecoder(4, 2, (16, 16), width=2, n_up=2)
    z = torch.randn(4, *dec.in_shape)
    with torch.no_grad():
        before = dec(z).reshape(1, 4, -1, 16, 16)
        for m in dec.modules():
            if isinstance(m, PerFrameConv2d):
                m.frame_weight[2].add_(0.5)
        after = dec(z).reshape(1, 4, -1, 16, 16)
    # grouped channels-last layout: channel block t holds frame t
    diff = (after - before).abs().amax(dim=(0, 2, 3, 4))
    assert diff[2] > 1e-3
    assert torch.equal(diff[[0, 1, 3]], torch.zeros(3))


def test_per_frame_weights_in_a_graph_generator_change_only_that_frames_stage1() -> None:
    g = build_generator("gip", matrix=(16, 16), frame_times=_times(4), k=2)
    with torch.no_grad():
        before = g.stage1_features()
        g.stage1.convs[1].frame_weight[1].mul_(-1.0)
        after = g.stage1_features()
    changed = (after - before).flatten(1).abs().amax(dim=1)
    assert changed[1] > 1e-3
    assert torch.equal(changed[[0, 2, 3]], torch.zeros(3))


def test_mridip_stage1_shared_base_and_own_parts() -> None:
    """Frame t's weights are base + 0.1·own[t]: own[t] moves only frame t, the base moves all;
    at construction every frame has the same network (own parts start at zero)."""
    g = build_generator("mridip", matrix=(16, 16), frame_times=_times(4), k=2)
    conv = g.stage1.convs[1]
    assert conv.base is not None and conv.frame_scale == 0.1
    assert torch.equal(conv.frame_weight, torch.zeros_like(conv.frame_weight))
    with torch.no_grad():
        before = g.stage1_features()
        conv.frame_weight[2].normal_()
        mid = g.stage1_features()
        conv.base.mul_(-1.0)
        after = g.stage1_features()
    changed = (mid - before).flatten(1).abs().amax(dim=1)
    assert changed[2] > 1e-3 and torch.equal(changed[[0, 1, 3]], torch.zeros(3))
    assert bool(((after - mid).flatten(1).abs().amax(dim=1) > 1e-3).all())
    # the grouped convolution computes conv(x, base + 0.1·own[t]) for every frame
    x = torch.randn(4, conv.in_ch, 5, 6)
    got = conv(to_grouped(x)).permute(0, 2, 3, 1).reshape(5, 6, 4, -1).permute(2, 3, 0, 1)
    for t in range(4):
        w = conv.base + 0.1 * conv.frame_weight[t]
        b = conv.base_bias + 0.1 * conv.bias[t]
        ref = nn.functional.conv2d(x[t : t + 1], w, b, padding=1)
        torch.testing.assert_close(got[t : t + 1], ref, rtol=1e-4, atol=1e-5)


def test_grouped_convolution_equals_separate_convolutions() -> None:
    torch.manual_seed(1)
    conv = PerFrameConv2d(3, 4, 5)
    x = torch.randn(3, 4, 9, 7)
    got = conv(to_grouped(x)).permute(0, 2, 3, 1).reshape(9, 7, 3, 5).permute(2, 3, 0, 1)
    for t in range(3):
        ref = nn.functional.conv2d(x[t : t + 1], conv.frame_weight[t], conv.bias[t], padding=1)
        torch.testing.assert_close(got[t : t + 1], ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# stage 2


def test_cosine_knn_on_toy_features() -> None:
    angles = torch.tensor([0.0, 0.1, 0.3, 1.5, 1.6, 3.0])
    f = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * torch.tensor(
        [[1.0], [5.0], [0.2], [2.0], [1.0], [3.0]]
    )  # cosine similarity ignores the length
    nb = cosine_knn(f, 3)
    expected = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 4, 2], [4, 3, 2], [5, 4, 3]])
    assert torch.equal(nb, expected)
    ei = knn_edge_index(nb)
    assert torch.equal(ei[1], torch.arange(6).repeat_interleave(3))
    assert torch.equal(ei[0], expected.reshape(-1))


def test_knn_puts_self_first_even_for_identical_frames() -> None:
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    nb = cosine_knn(f, 2)
    assert torch.equal(nb[:, 0], torch.arange(3))
    assert nb[0, 1] == 1 and nb[1, 1] == 0


def test_graph_schedule_recomputes_then_freezes() -> None:
    graph = FrameGraph(4, 2, every=2)
    graph.train()
    due = []
    for _ in range(5):
        due.append(graph.due())
        if due[-1]:
            graph.update(torch.randn(4, 3))
        graph.tick()
    assert due == [True, False, True, False, True]
    graph.freeze()
    assert not graph.due()
    graph.eval()
    assert not graph.due()


def test_neighbour_conv_is_gips_per_node_per_slot_mean() -> None:
    torch.manual_seed(2)
    n, k, c_in, c_out = 4, 3, 2, 3
    conv = NeighbourConv(c_in, c_out, k, n_frames=n)
    x = torch.randn(n, c_in, 6, 5)
    nb = cosine_knn(torch.randn(n, 4), k)
    got = conv(x.permute(2, 3, 0, 1).contiguous(), knn_edge_index(nb))  # (H, W, n, c_out)
    for i in range(n):
        ref = (
            sum(
                nn.functional.conv2d(
                    x[j : j + 1], conv.slot_weight[i, :, s], conv.bias[i, s], padding=1
                )
                for s, j in enumerate(nb[i].tolist())
            )
            / k
        )
        torch.testing.assert_close(got[:, :, i].permute(2, 0, 1)[None], ref, rtol=1e-4, atol=1e-5)


def test_graph_models_leave_no_file_in_the_temporary_folder(tmp_path) -> None:
    # PyG renders a TorchScript template for a MessagePassing layer into a temporary file and
    # never removes it: one file per process. NeighbourConv keeps PyG's generic propagate instead.
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from mridip.models.graph import NeighbourConv, cosine_knn, knn_edge_index\n"
        "conv = NeighbourConv(2, 3, 2, n_frames=3)\n"
        "nb = cosine_knn(torch.randn(3, 4), 2)\n"
        "y = conv(torch.randn(5, 5, 3, 2), knn_edge_index(nb))\n"
        "assert y.shape == (5, 5, 3, 3)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# fidelity to the references


def test_tddip_has_the_reference_structure_at_128() -> None:
    g = build_generator("tddip", matrix=(128, 128), frame_times=_times(20))
    n = g.param_count()
    assert n == 1_368_000 and abs(n - 1.37e6) / 1.37e6 < 0.10
    linears = [m for m in g.mapnet.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 512), (512, 64)]
    assert g.decoder.in_shape == (1, 8, 8)
    convs = [m for m in g.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 11 and all(m.bias is None for m in convs)
    assert (convs[0].in_channels, convs[-1].out_channels) == (1, 2)
    ups = [m for m in g.decoder.modules() if isinstance(m, nn.Upsample)]
    assert [(u.mode, tuple(u.size)) for u in ups] == [
        ("nearest", (s, s)) for s in (16, 32, 64, 128)
    ]


def test_gip_per_frame_stage_has_the_reference_layer_plan() -> None:
    g = build_generator("gip", matrix=(128, 128), frame_times=_times(2), k=2)
    s1 = g.stage1
    convs = [s1.stem, *s1.convs]
    plan = [(c.in_ch, c.out_ch) for c in convs]
    assert plan == [(8, 384), (384, 192), (192, 96), (96, 48), (48, 24), (24, 24), (24, 24)]
    assert [tuple(u.size) for u in s1.ups] == [(16, 16), (32, 32), (64, 64), (128, 128)]
    assert all(u.mode == "bilinear" for u in s1.ups)
    assert isinstance(s1.act, nn.ELU)
    per_frame = sum(p.numel() for p in s1.parameters()) // 2
    assert per_frame == 920_088  # GIP's ≈ 0.9 M per frame, without its pretraining head
    assert tuple(g.code.codes.shape) == (1, 8, 8, 8)  # one N(0, 1) code shared by the frames


def test_gip_preset_computes_what_the_reference_structure_computes() -> None:
    """Copy the preset's weights into the re-created reference and compare outputs."""
    n, k, size = 4, 3, (32, 32)
    g = build_generator("gip", matrix=size, frame_times=_times(n), k=k, seed=5, width=24)
    ref = _ReferenceGIP(n, size, k=k)
    fen_params = sum(p.numel() for p in ref.fen.parameters())
    assert g.param_count() == sum(p.numel() for p in ref.parameters()) - fen_params
    s1, s2 = g.stage1, g.stage2
    with torch.no_grad():
        ref.stage1.z.copy_(g.code.codes)
        for t, cnn in enumerate(ref.stage1.cnns):
            cnn[0].weight.copy_(s1.stem.frame_weight[t])
            cnn[0].bias.copy_(s1.stem.bias[t])
            for i, conv in enumerate(s1.convs):
                cnn[i + 1].conv.weight.copy_(conv.frame_weight[t])
                cnn[i + 1].conv.bias.copy_(conv.bias[t])
        for i, m in enumerate(ref.fen):
            m.weight.copy_(getattr(g.features, f"w{i}"))
        for i in range(n):
            for s in range(k):
                ref.agg[i][s].weight.copy_(s2.agg.slot_weight[i, :, s])
                ref.agg[i][s].bias.copy_(s2.agg.bias[i, s])
                w_upd = torch.cat([s2.upd_a.slot_weight[i, :, s], s2.upd_h.slot_weight[i, :, s]], 1)
                ref.upd[i][s].weight.copy_(w_upd)
                ref.upd[i][s].bias.copy_(s2.upd_a.bias[i, s])
            ref.upd0[i].weight.copy_(s2.upd_in.frame_weight[i])
            ref.upd0[i].bias.copy_(s2.upd_in.bias[i])
            for r in range(2):
                ref.res[i][r].conv.weight.copy_(s2.res[r].frame_weight[i])
                ref.res[i][r].conv.bias.copy_(s2.res[r].bias[i])
        ref.agg_norm.weight.copy_(s2.agg_weight)
        ref.agg_norm.bias.copy_(s2.agg_bias)
        ref.final.weight.copy_(s2.head.weight[:, :, None, None])
        ref.final.bias.copy_(s2.head.bias)
        ours, theirs = g(), ref()
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# benchmark and GPU


def test_benchmark_returns_plain_numbers_and_the_ratios_it_names() -> None:
    import json

    res = generator_step_benchmark((16, 16), 3, steps=2, presets=("gip",))
    assert json.loads(json.dumps(res)) == res  # plain numbers: no tensors, no NaN
    row = res["presets"]["gip"]
    assert row["step_min_s"] <= row["step_s"]  # the minimum and the median of the steps
    # each speedup is the peer's median step over ours, and the peers compute the same model
    g, s = res["gip_vs_reference"], res["stage1_batched_vs_loop"]
    assert g["speedup"] == g["reference"]["step_s"] / g["gip"]["step_s"]
    assert s["speedup"] == s["loop"]["step_s"] / s["batched"]["step_s"]
    assert s["batched"]["params"] == s["loop"]["params"]
    with pytest.raises(ConfigError, match="unknown preset"):
        generator_step_benchmark((16, 16), 3, presets=("nope",))
    # the comparison uses GIP's 128² channel plan at every matrix, as the reference does
    ours = build_generator("gip", matrix=(16, 16), frame_times=_times(3), width=24)
    assert res["gip_vs_reference"]["gip"]["params"] == ours.param_count()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_presets_on_cuda_match_cpu(name: str) -> None:
    g = build_generator(name, matrix=(32, 32), frame_times=_times(4), seed=1)
    g.eval()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            cpu = g()
            gpu = g.to("cuda")()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert gpu.device.type == "cuda" and gpu.dtype == torch.complex64
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)
    g.train()
    g().abs().pow(2).mean().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_lrdip_series_has_the_rank_it_is_built_with() -> None:
    """The Casorati matrix (frames × voxels) of ``lrdip`` has rank ``r``: its singular values
    beyond the ``r``-th vanish, and the image is the product of the two bases it names."""
    g = build_generator("lrdip", matrix=(24, 24), frame_times=_times(8), rank=3)
    with torch.no_grad():
        x = g()
        s = torch.linalg.svdvals(x.reshape(8, -1))
        assert s[2] > 1e-3 * s[0]
        assert s[3:].max() < 1e-5 * s[0]
        u, v = g.spatial_bases(), g.temporal_bases()
    assert u.shape == (3, 24, 24) and v.shape == (8, 3)
    torch.testing.assert_close(x, torch.einsum("br,rhw->bhw", v, u))


def test_lrdip_rank_default_and_free_coefficients() -> None:
    from mridip.models.generators import default_rank

    assert [default_rank(n) for n in (1, 3, 8, 16, 20, 40)] == [1, 3, 8, 8, 10, 16]
    g = build_generator("lrdip", matrix=(16, 16), frame_times=_times(5), temporal="free", rank=9)
    assert g.rank == 5  # clipped to the frames
    # the free coefficients are the fitted parameter itself: a frame's row moves only its frame
    with torch.no_grad():
        before = g()
        g.temporal.weight[2].add_(1.0)
        after = g()
    changed = (after - before).abs().flatten(1).amax(1) > 0
    assert changed.tolist() == [False, False, True, False, False]
    with pytest.raises(ConfigError, match="temporal"):
        build_generator("lrdip", matrix=(16, 16), frame_times=_times(5), temporal="spline")
