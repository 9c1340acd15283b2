"""Stage 1 of the generators: the shared upsampling decoder and the per-frame decoders.

Two layouts of a batch of ``B`` frames' feature maps are used:

- *batched*: ``(B, C, H, W)``, the ordinary layout, for the shared decoder (one set of weights);
- *grouped*: ``(1, B·C, H, W)`` in channels-last memory, i.e. memory order ``(H, W, B, C)``, for
  everything that has independent weights per frame. A per-frame convolution is then one grouped
  convolution with ``groups=B`` (no Python loop over frames), per-frame instance normalisation is
  one batch-norm call over the single batch entry, and the same memory read as ``(H, W, B, C)``
  is the node-feature tensor that the graph stage gathers from (``index_select`` along axis 2)
  without a copy. On two CPU cores the channels-last grouped convolutions of the graph stage ran
  1.3–1.6× faster (forward and backward) than the same convolutions on ``(B, C, H, W)`` tensors.

Spatial sizes: a decoder with ``n_up`` upsamplings to ``(Ny, Nx)`` starts at
``(⌈Ny/2^n_up⌉, ⌈Nx/2^n_up⌉)`` and upsamples to ``⌈N/2^(n_up-k)⌉`` at level ``k``, so any matrix
works (96, 144, 208, 100, non-square), not only multiples of ``2^n_up``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mridip.errors import ConfigError

_CL = torch.channels_last


# ---------------------------------------------------------------------------------------------
# layouts


def level_sizes(size: tuple[int, int], n_up: int) -> list[tuple[int, int]]:
    """Spatial sizes of a decoder's levels, coarsest first.

    Parameters
    ----------
    size
        Output size ``(Ny, Nx)``.
    n_up
        Number of upsamplings.

    Returns
    -------
    list of (int, int)
        ``n_up + 1`` sizes ``(⌈Ny/2^(n_up-k)⌉, ⌈Nx/2^(n_up-k)⌉)``, ``k = 0 … n_up``.
    """
    ny, nx = (int(s) for s in size)
    if ny < 1 or nx < 1 or n_up < 0:
        raise ConfigError(f"invalid decoder size {size} with {n_up} upsamplings")
    return [(math.ceil(ny / 2**k), math.ceil(nx / 2**k)) for k in range(n_up, -1, -1)]


def usable_levels(size: tuple[int, int], n_up: int) -> int:
    """Upsamplings that keep the coarsest level at least 2×2 (≤ ``n_up``).

    Normalisation over a 1×1 map is undefined, so a matrix smaller than ``2^(n_up+1)`` gets
    fewer levels (16² with ``n_up=4`` gets 3).
    """
    n = n_up
    while n > 0 and min(math.ceil(int(s) / 2**n) for s in size) < 2:
        n -= 1
    return n


def to_grouped(x: Tensor) -> Tensor:
    """``(B, C, H, W)`` → grouped ``(1, B·C, H, W)`` in channels-last memory (copies)."""
    b, c, h, w = x.shape
    return x.permute(2, 3, 0, 1).reshape(h, w, b * c).permute(2, 0, 1).unsqueeze(0)


def node_view(g: Tensor, n: int) -> Tensor:
    """Grouped ``(1, n·C, H, W)`` → node features ``(H, W, n, C)`` (a view when channels-last)."""
    _, nc, h, w = g.shape
    return g.permute(0, 2, 3, 1).contiguous().view(h, w, n, nc // n)


def grouped_view(v: Tensor) -> Tensor:
    """Node features ``(H, W, n, C)`` → grouped ``(1, n·C, H, W)`` channels-last (a view)."""
    h, w, n, c = v.shape
    return v.reshape(h, w, n * c).permute(2, 0, 1).unsqueeze(0)


def frames_view(g: Tensor, n: int) -> Tensor:
    """Grouped ``(1, n·C, H, W)`` → ``(n, C, H, W)`` (a strided view, not contiguous)."""
    return node_view(g, n).permute(2, 3, 0, 1)


class _BatchNormTrain(torch.autograd.Function):
    """Batch normalisation with batch statistics: PyTorch's forward kernel, a backward by
    formula.

    PyTorch's CPU batch-norm backward (2.13, float32 and float64) returns wrong input gradients
    for some memory layouts of the input and the output gradient: a channels-last ``(1, C, H,
    W)`` input with an NCHW gradient gave 160% error, and ``F.instance_norm`` of a one-frame
    channels-last input 139% with both channels-last, against the same normalisation written
    as mean and variance (tests/test_norm_gradients.py). This backward is written with
    elementwise operations and reductions, which do not depend on layout:
    ``∂x = σ⁻¹ (γ∂y − mean(γ∂y) − x̂ · mean(γ∂y · x̂))``, ``∂γ = Σ ∂y · x̂``, ``∂β = Σ ∂y``.
    First-order gradients only.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> Tensor:
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        shape = [1, -1] + [1] * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gw = (g * xhat).sum(dim=dims) if need_w or need_x else None
        gb = g.sum(dim=dims) if need_b or need_x else None
        gx = None
        if need_x:
            n = x.numel() // x.shape[1]
            scale = invstd if weight is None else invstd * weight
            assert gw is not None and gb is not None
            gx = (g - (gb / n).view(shape) - xhat * (gw / n).view(shape)) * scale.view(shape)
        # under autocast the statistics are float32 while x may be bfloat16
        pdtype = x.dtype if weight is None else weight.dtype
        return (
            None if gx is None else gx.to(x.dtype),
            gw.to(pdtype) if need_w and gw is not None else None,
            gb.to(pdtype) if need_b and ctx.has_bias and gb is not None else None,
            None,
        )


def batch_norm_train(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)`` with a backward
    that is right in every memory layout (:class:`_BatchNormTrain`)."""
    return _BatchNormTrain.apply(x, weight, bias, eps)  # type: ignore[no-any-return]


def instance_norm(g: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-frame, per-channel normalisation over space of a grouped tensor (no affine)."""
    return batch_norm_train(g, eps=eps)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "elu":
        return nn.ELU()
    raise ConfigError(f"unknown activation {name!r}; choose 'relu' or 'elu'")


def _upsample(size: tuple[int, int], mode: str) -> nn.Module:
    if mode == "nearest":
        return nn.Upsample(size=size, mode="nearest")
    if mode == "bilinear":
        return nn.Upsample(size=size, mode="bilinear", align_corners=False)
    raise ConfigError(f"unknown upsampling mode {mode!r}; choose 'nearest' or 'bilinear'")


# ---------------------------------------------------------------------------------------------
# shared decoder (DIP, TDDIP)


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (affine, input statistics) through :func:`batch_norm_train`, whose
    backward is right in every memory layout; the same parameters and state-dict keys."""

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        w = None if self.weight is None else self.weight.repeat(n)
        b = None if self.bias is None else self.bias.repeat(n)
        y = batch_norm_train(x.reshape(1, n * c, *x.shape[2:]), w, b, self.eps)
        return y.reshape(x.shape)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` without running statistics through :func:`batch_norm_train`, whose
    backward is right in every memory layout; the same parameters and state-dict keys."""

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm_train(x, self.weight, self.bias, self.eps)


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # Per-frame statistics with a learned scale and shift: what TDDIP's BatchNorm2d computes
        # in training mode with its batch of one frame, independent of the other frames.
        return InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return BatchNorm2d(channels, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown normalisation {kind!r}; choose 'instance', 'batch' or 'none'")


def init_conv_(weight: Tensor, bias: Tensor | None, fan_in: int, std: float | None) -> None:
    """In place: ``Conv2d``'s default (uniform ±1/√fan_in), or ``N(0, std²)`` and zero bias."""
    with torch.no_grad():
        if std is None:
            bound = 1.0 / math.sqrt(fan_in)
            weight.uniform_(-bound, bound)
            if bias is not None:
                bias.uniform_(-bound, bound)
        else:
            weight.normal_(0.0, std)
            if bias is not None:
                bias.zero_()


class ConvDecoder(nn.Module):
    """Shared upsampling decoder (TDDIP's generator), one set of weights for all frames.

    Layer plan (``w`` = ``width``, ``N`` = norm, ``A`` = activation)::

        conv3(in→w) N A, [conv3(w→w) N A] × n_extra
        n_up × ( upsample, conv3(w→w) N A, [conv3(w→w) N A] × n_extra )
        conv3(w→out_ch)                       # linear output

    TDDIP at 128²: ``in_ch=1, width=128, n_up=4, n_extra=1``, nearest upsampling, no biases,
    ReLU and batch normalisation (fitted on one frame per step; ``norm="instance"`` computes the
    same per-frame statistics for any number of frames at once).

    Parameters
    ----------
    in_ch
        Channels of the input code maps.
    out_size
        Output ``(Ny, Nx)``; the input is ``in_shape``, ``(in_ch, ⌈Ny/2^n_up⌉, ⌈Nx/2^n_up⌉)``.
    width, n_up, n_extra
        Channels, upsamplings (fewer for tiny matrices, see :func:`usable_levels`) and extra
        convolutions per level.
    out_ch
        Output channels (2: real and imaginary part).
    upsample, norm, activation
        ``"nearest"|"bilinear"``, ``"instance"|"batch"|"none"``, ``"relu"|"elu"``.
    bias
        Biases in the hidden convolutions (the output convolution follows it too).
    """

    def __init__(
        self,
        in_ch: int,
        out_size: tuple[int, int],
        *,
        width: int = 128,
        n_up: int = 4,
        n_extra: int = 1,
        out_ch: int = 2,
        upsample: str = "nearest",
        norm: str = "instance",
        activation: str = "relu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.sizes = level_sizes(out_size, usable_levels(out_size, n_up))
        self.in_ch = in_ch

        def block(cin: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, width, 3, padding=1, bias=bias),
                _norm2d(norm, width),
                _activation(activation),
            ]

        layers = block(in_ch)
        for _ in range(n_extra):
            layers += block(width)
        for size in self.sizes[1:]:
            layers.append(_upsample(size, upsample))
            layers += block(width)
            for _ in range(n_extra):
                layers += block(width)
        layers.append(nn.Conv2d(width, out_ch, 3, padding=1, bias=bias))
        self.net = nn.Sequential(*layers)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Shape ``(in_ch, h0, w0)`` of one frame's input code."""
        return (self.in_ch, *self.sizes[0])

    def forward(self, x: Tensor) -> Tensor:
        """Decode codes ``(B, in_ch, h0, w0)`` to ``(B, out_ch, Ny, Nx)``."""
        return self.net(x)


# ---------------------------------------------------------------------------------------------
# per-frame decoders (GIP, mridip)


def take(param: Tensor, frames: Tensor | None) -> Tensor:
    """Rows ``frames`` of a per-frame parameter, or all of it (no copy) when ``frames`` is None."""
    return param if frames is None else param.index_select(0, frames)


class _SplitBackwardConv2d(torch.autograd.Function):
    """``F.conv2d`` whose backward computes the weight (and bias) gradient in NCHW memory.

    oneDNN's channels-last weight gradient of a grouped convolution ran 2.6× slower than the
    same gradient from NCHW tensors, on two CPU cores at 128² × 20 frames × 32 channels (0.52 s
    against 0.20 s); with the two copies the whole backward took 0.57–0.64 s against
    0.76–0.82 s. Its channels-last input gradient and forward are the faster ones, so they stay
    channels-last.
    First-order gradients only (no double backward).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, w: Tensor, b: Tensor | None, padding: int, groups: int
    ) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.conf = (padding, groups, b is not None)
        return F.conv2d(x, w, b, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        padding, groups, has_bias = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        conv_backward = torch.ops.aten.convolution_backward
        conf = ([1, 1], [padding, padding], [1, 1], False, [0, 0], groups)
        gx = gw = gb = None
        if need_x:
            gx = conv_backward(g, x, w, None, *conf, [True, False, False])[0]
        if need_w or (need_b and has_bias):
            bias_sizes = [w.shape[0]] if has_bias else None
            mask = [False, bool(need_w), bool(need_b and has_bias)]
            _, gw, gb = conv_backward(
                g.contiguous(), x.contiguous(), w.contiguous(), bias_sizes, *conf, mask
            )
        return gx, gw, gb, None, None


class PerFrameConv2d(nn.Module):
    """Convolution with independent weights for every frame, applied to all frames in one call.

    The weights of frame ``t`` are ``weight[t]``; a call with ``B`` frames is one grouped
    convolution (``groups=B``) on a grouped tensor, so changing frame ``t``'s weights changes only
    frame ``t``'s output. With ``n_frames=1`` the one set of weights is shared by every frame.

    Parameters
    ----------
    n_frames
        Number of frames ``T`` (1: shared weights).
    in_ch, out_ch, kernel_size
        Convolution shape (odd kernel, same padding).
    bias
        Per-frame biases.
    shared_base
        Frame ``t``'s weights are ``base + weight[t]``: a weight set shared by all frames plus a
        per-frame part that starts at zero. Every frame then starts from the same network and
        the shared part learns from all frames' data at once (a fit converges several times
        faster than with fully independent weights), while each frame keeps weights of its own.
    frame_scale
        With a shared base, frame ``t``'s weights are ``base + frame_scale · weight[t]``: Adam
        moves every parameter at about the learning rate, so this factor is the per-frame
        parts' learning rate relative to the shared part's (0.1 for mridip: the per-frame
        parts follow each frame's own 13 spokes more slowly than the base follows all frames).

    Attributes
    ----------
    split_backward
        On the CPU in float32, compute the weight gradient from NCHW copies while the forward
        and the input gradient stay channels-last (True, the default: the same gradients,
        measured faster, see :class:`_SplitBackwardConv2d`); False: plain autograd of
        ``F.conv2d`` (the earlier path, kept for ``mridip bench --only fit``). Switched for a
        whole model by :func:`mridip.models.graph.use_fast_paths`.
    """

    split_backward: bool = True

    def __init__(
        self,
        n_frames: int,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        bias: bool = True,
        shared_base: bool = False,
        frame_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.n_frames, self.in_ch, self.out_ch = n_frames, in_ch, out_ch
        self.kernel_size = kernel_size
        # stored as one (T·out, in, k, k) convolution weight, so that ``module.to(memory_format=
        # torch.channels_last)`` works; frame t's weights are rows t·out … (t+1)·out - 1
        self.weight = nn.Parameter(torch.empty(n_frames * out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(n_frames, out_ch)) if bias else None
        self.frame_scale = float(frame_scale)
        self.base: nn.Parameter | None = None
        self.base_bias: nn.Parameter | None = None
        if shared_base and n_frames > 1:
            self.base = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
            self.base_bias = nn.Parameter(torch.empty(out_ch)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        """PyTorch's ``Conv2d`` initialisation per frame, or ``N(0, std²)`` and zero bias; with a
        shared base, the base is initialised so and the per-frame parts are zero."""
        fan_in = self.in_ch * self.kernel_size**2
        if self.base is None:
            init_conv_(self.weight, self.bias, fan_in, std)
            return
        init_conv_(self.base, self.base_bias, fan_in, std)
        with torch.no_grad():
            self.weight.zero_()
            if self.bias is not None:
                self.bias.zero_()

    @property
    def frame_weight(self) -> Tensor:
        """The weights as ``(T, out_ch, in_ch, k, k)`` (a view)."""
        k = self.kernel_size
        return self.weight.view(self.n_frames, self.out_ch, self.in_ch, k, k)

    def _weights(self, frames: Tensor | None, n: int) -> tuple[Tensor, Tensor | None]:
        if self.n_frames == 1:
            w = self.frame_weight.expand(n, -1, -1, -1, -1)
            b = None if self.bias is None else self.bias.expand(n, -1)
        else:
            w = take(self.frame_weight, frames)
            b = None if self.bias is None else take(self.bias, frames)
            if self.base is not None:
                a = self.frame_scale
                w = self.base + a * w
                b = None if b is None or self.base_bias is None else self.base_bias + a * b
        return w, b

    def forward(self, x: Tensor, frames: Tensor | None = None, n: int | None = None) -> Tensor:
        """Apply each frame's convolution to its own maps.

        Parameters
        ----------
        x
            Grouped ``(1, B·in_ch, H, W)``; or ``(1, in_ch, H, W)``, one input shared by all
            frames (then ``n`` must be given, or ``frames``).
        frames
            ``(B,)`` frame indices selecting the weights; None means all ``T`` frames in order.
        n
            Number of frames ``B`` when ``frames`` is None and the weights are shared.

        Returns
        -------
        Tensor
            Grouped ``(1, B·out_ch, H, W)``.
        """
        if n is None:
            n = self.n_frames if frames is None else int(frames.numel())
        w, b = self._weights(frames, n)
        k = self.kernel_size
        # channels-last weights keep the convolution in channels-last; with contiguous weights
        # oneDNN converts the whole input and output instead (measured 2-3× slower)
        w = w.reshape(n * self.out_ch, self.in_ch, k, k).contiguous(memory_format=_CL)
        b = None if b is None else b.reshape(-1)
        groups = 1 if x.shape[1] == self.in_ch and n > 1 else n
        if groups != 1 and x.shape[1] != n * self.in_ch:
            raise ValueError(f"expected {n}·{self.in_ch} input channels, got {x.shape[1]}")
        if (
            self.split_backward
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
        ):
            return _SplitBackwardConv2d.apply(x, w, b, k // 2, groups)  # type: ignore[no-any-return]
        return F.conv2d(x, w, b, padding=k // 2, groups=groups)


class _PerFrameStage(nn.Module):
    """What the per-frame decoders share: input layout, code shape, re-initialisation."""

    in_ch: int
    sizes: list[tuple[int, int]]

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Shape ``(in_ch, h0, w0)`` of one frame's input code."""
        return (self.in_ch, *self.sizes[0])

    @staticmethod
    def _grouped_input(z: Tensor) -> Tensor:
        """Codes ``(B, in_ch, h0, w0)`` as a grouped tensor; one shared code stays as it is."""
        return z.contiguous(memory_format=_CL) if z.shape[0] == 1 else to_grouped(z)

    def reset_parameters(self, std: float | None = None) -> None:
        """Re-initialise every convolution (see :meth:`PerFrameConv2d.reset_parameters`)."""
        for m in self.modules():
            if isinstance(m, PerFrameConv2d):
                m.reset_parameters(std)


class PerFrameDecoder(_PerFrameStage):
    """Per-frame upsampling CNNs with independent weights, batched over frames (GIP's stage 1).

    Layer plan (``w`` = ``width``, channel multipliers ``m = mults``)::

        conv3(in→m0·w)
        for i ≥ 1: [upsample to level i if i ≤ n_up] conv3(m(i-1)·w → m(i)·w) → A → InstanceNorm

    GIP at 128² (``width=24``, ``mults=(16, 8, 4, 2, 1, 1, 1)``, ``n_up=4``, bilinear, ELU,
    instance norm without affine, biases): 8×8 → 16 → 32 → 64 → 128 with
    384 → 192 → 96 → 48 → 24 → 24 → 24 channels, ≈ 0.92 M parameters per frame.

    Parameters
    ----------
    n_frames
        Number of frames ``T``.
    in_ch
        Channels of the input code maps.
    out_size
        ``(Ny, Nx)``.
    width, mults, n_up
        Channel plan and number of upsamplings (``n_up < len(mults)``; fewer for tiny
        matrices, see :func:`usable_levels`).
    upsample, activation
        ``"bilinear"|"nearest"`` and ``"elu"|"relu"``.
    """

    def __init__(
        self,
        n_frames: int,
        in_ch: int,
        out_size: tuple[int, int],
        *,
        width: int = 24,
        mults: Sequence[int] = (16, 8, 4, 2, 1, 1, 1),
        n_up: int = 4,
        upsample: str = "bilinear",
        activation: str = "elu",
    ) -> None:
        super().__init__()
        if not 0 <= n_up < len(mults):
            raise ConfigError(f"n_up={n_up} needs more than {n_up} channel multipliers")
        self.n_frames, self.in_ch = n_frames, in_ch
        self.sizes = level_sizes(out_size, usable_levels(out_size, n_up))
        self.out_channels = mults[-1] * width
        chans = [m * width for m in mults]
        self.stem = PerFrameConv2d(n_frames, in_ch, chans[0])
        self.convs = nn.ModuleList(
            PerFrameConv2d(n_frames, chans[i - 1], chans[i]) for i in range(1, len(chans))
        )
        self.ups = nn.ModuleList(_upsample(s, upsample) for s in self.sizes[1:])
        self.act = _activation(activation)

    def forward(self, z: Tensor, frames: Tensor | None = None) -> Tensor:
        """Per-frame feature maps.

        Parameters
        ----------
        z
            Codes ``(B, in_ch, h0, w0)``, or ``(1, in_ch, h0, w0)`` shared by all frames.
        frames
            ``(B,)`` frame indices (which weights); None means all ``T`` frames.

        Returns
        -------
        Tensor
            Grouped features ``(1, B·C, Ny, Nx)`` channels-last, ``C = out_channels``.
        """
        n = self.n_frames if frames is None else int(frames.numel())
        x = self._grouped_input(z)
        x = self.stem(x, frames, n)
        for i, conv in enumerate(self.convs):
            if i < len(self.ups):
                x = self.ups[i](x)
            x = instance_norm(self.act(conv(x, frames, n)))
        return x


class PerFrameConvDecoder(_PerFrameStage):
    """TDDIP's decoder plan with weights per frame, batched over frames (mridip's stage 1).

    Layer plan (``w`` = ``width``; every convolution per frame, ``N`` = per-frame instance
    normalisation, ``A`` = activation)::

        conv3(in→w) N A, [conv3(w→w) N A] × n_extra
        n_up × ( upsample, conv3(w→w) N A, [conv3(w→w) N A] × n_extra )

    With ``shared_base=True`` (the mridip default) every frame starts from the same decoder, the
    shared part learns from all frames' data and each frame's own part from its own (see
    :class:`PerFrameConv2d`). The output is the grouped feature tensor ``(1, B·w, Ny, Nx)``
    (channels-last) that the graph stage takes.

    Parameters
    ----------
    n_frames, in_ch, out_size
        As :class:`PerFrameDecoder`.
    width, n_up, n_extra
        Channels, upsamplings (fewer for tiny matrices) and extra convolutions per level.
    upsample, activation
        ``"nearest"|"bilinear"`` and ``"relu"|"elu"``.
    shared_base, frame_scale
        Per-frame weights as a shared base plus a scaled per-frame part.
    """

    def __init__(
        self,
        n_frames: int,
        in_ch: int,
        out_size: tuple[int, int],
        *,
        width: int = 32,
        n_up: int = 4,
        n_extra: int = 1,
        upsample: str = "nearest",
        activation: str = "relu",
        shared_base: bool = True,
        frame_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_frames, self.in_ch = n_frames, in_ch
        self.sizes = level_sizes(out_size, usable_levels(out_size, n_up))
        self.out_channels = width
        self.n_extra = n_extra
        n_convs = (len(self.sizes)) * (1 + n_extra)
        self.convs = nn.ModuleList(
            PerFrameConv2d(
                n_frames,
                in_ch if i == 0 else width,
                width,
                shared_base=shared_base,
                frame_scale=frame_scale,
            )
            for i in range(n_convs)
        )
        self.ups = nn.ModuleList(_upsample(s, upsample) for s in self.sizes[1:])
        self.act = _activation(activation)

    def forward(self, z: Tensor, frames: Tensor | None = None) -> Tensor:
        """Per-frame feature maps, grouped `(1, B·width, Ny, Nx)` channels-last."""
        n = self.n_frames if frames is None else int(frames.numel())
        x = self._grouped_input(z)
        per_level = 1 + self.n_extra
        for i, conv in enumerate(self.convs):
            if i and i % per_level == 0:
                x = self.ups[i // per_level - 1](x)
            x = self.act(instance_norm(conv(x, frames, n)))
        return x
