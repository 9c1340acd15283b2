"""The normalisations' gradients against the same normalisations written as mean and variance.

PyTorch's CPU batch-norm backward (2.13) gives wrong input gradients for some memory layouts
of the input and the output gradient. mridip's normalisations
(:func:`mridip.models.cnn.batch_norm_train`) keep PyTorch's forward and compute the backward
by formula. These tests compare them, and every generator's parameter gradients, with the same
normalisations computed from means and variances by autograd, which does not depend on
memory layout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mridip.models import PRESETS, build_generator
from mridip.models.cnn import BatchNorm2d, InstanceNorm2d, batch_norm_train, instance_norm
from mridip.models.graph import NeighbourConv, use_fast_paths


def _normalised(x, dims, weight, bias, eps):
    """``(x − mean) / √(var + eps)`` over ``dims``, then the per-channel scale and shift."""
    m = x.mean(dim=dims, keepdim=True)
    v = x.var(dim=dims, unbiased=False, keepdim=True)
    y = (x - m) / (v + eps).sqrt()
    shape = [1, -1] + [1] * (x.dim() - 2)
    if weight is not None:
        y = y * weight.view(shape)
    return y if bias is None else y + bias.view(shape)


def _by_formula_batch(
    x, running_mean, running_var, weight=None, bias=None, training=True, momentum=0.1, eps=1e-5
):
    """``F.batch_norm`` in training mode: statistics over all but the channels."""
    assert training
    return _normalised(x, [0, *range(2, x.dim())], weight, bias, eps)


def _by_formula_instance(
    x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
    momentum=0.1, eps=1e-5,
):  # fmt: skip
    """``F.instance_norm``: statistics over space, per sample and channel."""
    assert use_input_stats
    return _normalised(x, list(range(2, x.dim())), weight, bias, eps)


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values ``(1, C, H, W)`` in three memory layouts."""
    _, c, h, w = x.shape
    return {
        "nchw": x.contiguous(),
        "channels-last": x.contiguous(memory_format=torch.channels_last),
        # channels-last with the batch stride a grouped view of (H, W, C) node features has
        "grouped-view": x.permute(0, 2, 3, 1).reshape(h, w, c).contiguous().permute(2, 0, 1)[None],
    }


@pytest.mark.parametrize("x_layout", ["nchw", "channels-last", "grouped-view"])
@pytest.mark.parametrize("g_layout", ["nchw", "channels-last", "grouped-view"])
def test_instance_norm_gradient_is_right_in_every_layout(x_layout: str, g_layout: str) -> None:
    torch.manual_seed(0)
    x0 = torch.randn(1, 16, 9, 7) * 3 + 1
    g0 = torch.randn(1, 16, 9, 7)
    x_in = _layouts(x0)[x_layout].clone().requires_grad_()
    instance_norm(x_in).backward(_layouts(g0)[g_layout])
    x_ref = x0.clone().requires_grad_()
    _by_formula_batch(x_ref, None, None).backward(g0)
    torch.testing.assert_close(x_in.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def _parameter_gradients(gen: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen.zero_grad()
    y = gen()
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    (y * g.conj()).real.sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}


CASES = [(name, "default") for name in PRESETS] + [
    ("mridip", "NCHW slot-first"),  # the default before: its gradients were wrong
    ("mridip", "earlier paths"),
    ("lrdip", "channels-last"),  # FitConfig.channels_last: wrong before too
    ("tddip", "channels-last"),
]


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_generator_gradients_match_normalisations_by_formula(name, variant, monkeypatch) -> None:
    times = torch.arange(8, dtype=torch.float64) * 0.05
    gen = build_generator(name, matrix=(16, 16), frame_times=times, seed=3, width=8)
    if variant == "channels-last":
        gen = gen.to(memory_format=torch.channels_last)
    if variant == "earlier paths":
        use_fast_paths(gen, False)
    if variant == "NCHW slot-first":
        for m in gen.modules():
            if isinstance(m, NeighbourConv):
                m.channels_last = False
    torch.manual_seed(0)
    with torch.no_grad():  # away from the zero start, so every part carries a gradient
        for p in gen.parameters():
            p.add_(0.05 * torch.randn_like(p))
    y, grads = _parameter_gradients(gen)
    with monkeypatch.context() as m:
        m.setattr(F, "batch_norm", _by_formula_batch)
        m.setattr(F, "instance_norm", _by_formula_instance)
        y_ref, grads_ref = _parameter_gradients(gen)
    torch.testing.assert_close(y, y_ref, rtol=1e-3, atol=1e-4)
    assert grads.keys() == grads_ref.keys() and grads
    for key, ref in grads_ref.items():
        scale = float(ref.abs().max())
        if scale < 1e-3:  # biases before a normalisation: zero up to rounding
            continue
        err = float((grads[key] - ref).abs().max()) / scale
        assert err < 2e-3, (key, err)


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kind", ["instance", "batch"])
def test_norm_modules_match_torch_forward_and_the_formula_backward(
    kind: str, channels_last: bool, frames: int
) -> None:
    torch.manual_seed(1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if kind == "instance":
        ours, theirs = InstanceNorm2d(5, affine=True), torch.nn.InstanceNorm2d(5, affine=True)
        formula = _by_formula_instance
    else:
        ours = BatchNorm2d(5, track_running_stats=False)
        theirs = torch.nn.BatchNorm2d(5, track_running_stats=False)
        formula = _by_formula_batch
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(torch.linspace(0.5, 2, 5))
            m.bias.copy_(torch.linspace(-1, 1, 5))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x0 = torch.randn(frames, 5, 6, 7) * 2 + 0.5
    g = torch.randn(frames, 5, 6, 7).contiguous(memory_format=fmt)
    x = x0.clone(memory_format=fmt).requires_grad_()
    y = ours(x)
    torch.testing.assert_close(y, theirs(x0))  # PyTorch's forward
    y.backward(g)
    xr = x0.clone().requires_grad_()
    w = theirs.weight.detach().clone().requires_grad_()
    b = theirs.bias.detach().clone().requires_grad_()
    formula(xr, None, None, w, b).backward(g.contiguous())
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, w.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_batch_norm_train_without_affine_needs_no_parameter_gradients() -> None:
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    y = batch_norm_train(x)
    assert y.shape == x.shape
    y.sum().backward()  # the normalised maps sum to zero: so does their gradient
    assert float(x.grad.abs().max()) < 1e-5
