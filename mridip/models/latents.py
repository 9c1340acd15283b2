"""Codes that a generator maps to frames, and the MapNet that lifts them to feature maps.

A generator's input is fixed by construction and lives in buffers, except for the learned
per-frame embeddings. The time manifolds are functions of the frame *times* in seconds, not of
the frame index, so irregularly spaced frames (real-time imaging, arrhythmia rejection, binned
radial streams) land where they belong on the manifold.

Time normalisation used by every manifold: with ``t0 = min(t)`` and ``dt`` the median spacing of
the distinct times, the frames cover the span ``S = max(t) - t0 + dt`` (each frame stands for one
interval). A periodic coordinate with period ``P`` is ``(cos, sin)(2π (t - t0) / P)`` with
``P = S / cycles`` unless the period is given in seconds; for a cine that covers one heartbeat,
``cycles=1`` closes the loop between the last frame and the first without putting them on the
same point. The linear coordinate is ``(t - t0) / (max(t) - t0)`` in ``[0, 1]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mridip.errors import ConfigError

#: Names of the fixed time manifolds, with their dimension.
MANIFOLDS: dict[str, int] = {"helix": 3, "circle": 2, "line": 1, "cardiac_resp": 4}

#: Respiratory period assumed by ``cardiac_resp`` when none is given (15 breaths a minute).
DEFAULT_RESP_PERIOD_S = 4.0


def _validated_times(frame_times: Tensor | Sequence[float]) -> Tensor:
    """Frame times as a float64 CPU vector; raises on bad input."""
    t = torch.as_tensor(frame_times, dtype=torch.float64, device="cpu")
    if t.ndim != 1 or t.numel() == 0:
        raise ConfigError(f"frame_times must be a non-empty 1-D vector, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ConfigError("frame_times holds NaN or infinite values")
    return t


def time_span(frame_times: Tensor | Sequence[float]) -> tuple[float, float, float]:
    """Start, covered span and last-minus-first of a set of frame times.

    Parameters
    ----------
    frame_times
        ``(T,)`` frame times in seconds, in any order, possibly irregular.

    Returns
    -------
    t0, span, extent
        ``t0 = min(t)``; ``span = max(t) - t0 + dt`` with ``dt`` the median spacing of the distinct
        times (1 s for a single frame); ``extent = max(t) - t0`` (1 s when zero).
    """
    t = _validated_times(frame_times)
    t0 = float(t.min())
    extent = float(t.max()) - t0
    distinct = torch.unique(t)
    dt = float(torch.diff(distinct).median()) if distinct.numel() > 1 else 1.0
    span = extent + dt
    return t0, span, extent if extent > 0 else 1.0


def time_manifold(
    frame_times: Tensor | Sequence[float],
    kind: str = "helix",
    *,
    cycles: float = 1.0,
    period: float | None = None,
    resp_period: float | None = None,
) -> Tensor:
    """Points on a fixed low-dimensional time manifold, one per frame.

    Parameters
    ----------
    frame_times
        ``(T,)`` frame times in seconds; irregular spacing is fine. If all times are equal
        the frame index is used instead (with a :class:`RuntimeWarning`).
    kind
        ``"helix"`` (cos, sin, linear: TDDIP's default), ``"circle"`` (cos, sin), ``"line"``
        (linear only, for non-periodic series such as perfusion) or ``"cardiac_resp"`` (cos and
        sin of the cardiac phase, cos and sin of the respiratory phase: a torus).
    cycles
        Number of periods over the covered span when ``period`` is not given.
    period
        Cardiac period in seconds; overrides ``cycles``.
    resp_period
        Respiratory period in seconds for ``"cardiac_resp"`` (default 4 s).

    Returns
    -------
    Tensor
        ``(T, d)`` float32 codes with ``d = MANIFOLDS[kind]``, values in ``[-1, 1]``.

    Raises
    ------
    ConfigError
        Unknown ``kind``, bad times or non-positive periods.
    """
    if kind not in MANIFOLDS:
        raise ConfigError(f"unknown time manifold {kind!r}; choose one of {sorted(MANIFOLDS)}")
    t = _validated_times(frame_times)
    if t.numel() > 1 and float(t.max() - t.min()) == 0.0:
        warnings.warn(
            "all frame times are equal; the time manifold uses the frame index instead",
            RuntimeWarning,
            stacklevel=2,
        )
        t = torch.arange(t.numel(), dtype=torch.float64, device="cpu")
    t0, span, extent = time_span(t)
    rel = t - t0
    if period is None:
        if cycles <= 0:
            raise ConfigError(f"cycles must be positive, got {cycles}")
        period = span / cycles
    if period <= 0:
        raise ConfigError(f"period must be positive, got {period} s")
    phase = 2 * math.pi * rel / period
    linear = rel / extent
    if kind == "helix":
        cols = [torch.cos(phase), torch.sin(phase), linear]
    elif kind == "circle":
        cols = [torch.cos(phase), torch.sin(phase)]
    elif kind == "line":
        cols = [linear]
    else:
        resp = DEFAULT_RESP_PERIOD_S if resp_period is None else resp_period
        if resp <= 0:
            raise ConfigError(f"resp_period must be positive, got {resp} s")
        resp_phase = 2 * math.pi * rel / resp
        cols = [torch.cos(phase), torch.sin(phase), torch.cos(resp_phase), torch.sin(resp_phase)]
    return torch.stack(cols, dim=1).to(torch.float32)


def _frame_index(frames: Tensor | None, n: int, device: torch.device) -> Tensor:
    """All frames, or the given ones as a long tensor on ``device``."""
    if frames is None:
        return torch.arange(n, device=device)
    return frames.to(device=device, dtype=torch.long)


class ManifoldCode(nn.Module):
    """Fixed per-frame codes on a time manifold (a buffer, never fitted).

    Parameters
    ----------
    codes
        ``(T, d)`` codes, e.g. from :func:`time_manifold`.
    """

    codes: Tensor

    def __init__(self, codes: Tensor) -> None:
        super().__init__()
        self.register_buffer("codes", codes.detach().clone().to(torch.float32))

    @property
    def dim(self) -> int:
        """Dimension ``d`` of one code."""
        return int(self.codes.shape[1])

    def forward(self, frames: Tensor | None = None) -> Tensor:
        """Codes ``(B, d)`` of the given frame indices ``(B,)`` (all frames when ``None``)."""
        idx = _frame_index(frames, self.codes.shape[0], self.codes.device)
        return self.codes.index_select(0, idx)


class EmbeddingCode(nn.Module):
    """Learned per-frame embeddings ``(T, d)``, fitted with the network.

    Parameters
    ----------
    n_frames, dim
        Number of frames ``T`` and embedding size ``d``.
    std
        Standard deviation of the normal initialisation.
    """

    def __init__(self, n_frames: int, dim: int = 3, std: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_frames, dim) * std)

    @property
    def dim(self) -> int:
        """Dimension ``d`` of one code."""
        return int(self.weight.shape[1])

    def forward(self, frames: Tensor | None = None) -> Tensor:
        """Embeddings ``(B, d)`` of the given frame indices ``(B,)`` (all frames when ``None``)."""
        idx = _frame_index(frames, self.weight.shape[0], self.weight.device)
        return self.weight.index_select(0, idx)


class NoiseCode(nn.Module):
    """Fixed random codes: vectors ``(T, d)`` or feature maps ``(T, C, h, w)``.

    Parameters
    ----------
    shape
        Shape of one frame's code: ``(d,)`` or ``(C, h, w)``.
    n_frames
        Number of frames ``T``.
    shared
        One code for all frames (GIP feeds the same map to every frame's network); ``forward``
        then returns it with a leading dimension of 1.
    distribution
        ``"uniform"`` (``U[0, scale)``, Ulyanov et al.'s DIP) or ``"normal"`` (``N(0, scale²)``).
    scale
        Range or standard deviation.
    """

    codes: Tensor

    def __init__(
        self,
        shape: Sequence[int],
        n_frames: int,
        *,
        shared: bool = False,
        distribution: str = "uniform",
        scale: float = 0.1,
    ) -> None:
        super().__init__()
        lead = 1 if shared else n_frames
        size = (lead, *shape)
        if distribution == "uniform":
            codes = torch.rand(size) * scale
        elif distribution == "normal":
            codes = torch.randn(size) * scale
        else:
            raise ConfigError(f"unknown noise distribution {distribution!r}")
        self.shared = shared
        self.n_frames = n_frames
        self.register_buffer("codes", codes)

    @property
    def dim(self) -> int:
        """Size of a vector code (first dimension of one frame's code)."""
        return int(self.codes.shape[1])

    def forward(self, frames: Tensor | None = None) -> Tensor:
        """Codes ``(B, *shape)``, or ``(1, *shape)`` when shared."""
        if self.shared:
            return self.codes
        return self.codes.index_select(0, _frame_index(frames, self.n_frames, self.codes.device))


class MapNet(nn.Module):
    """MLP that lifts each low-dimensional code to a small feature map (TDDIP's mapping network).

    ``Linear(d, hidden) → ReLU → [Linear(hidden, hidden) → ReLU] × depth → Linear(hidden, C·h·w)``,
    reshaped to ``(C, h, w)``; the last layer is linear. TDDIP at 128²: ``3 → 512 → 64`` as
    ``1 × 8 × 8``.

    Parameters
    ----------
    in_dim
        Code dimension ``d``.
    out_shape
        ``(C, h, w)`` of the produced map.
    hidden, depth
        Width and number of extra hidden layers.
    """

    def __init__(
        self, in_dim: int, out_shape: tuple[int, int, int], hidden: int = 512, depth: int = 0
    ) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU()]
        for _ in range(depth):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        layers.append(nn.Linear(hidden, math.prod(self.out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Map codes ``(B, d)`` to feature maps ``(B, C, h, w)``."""
        return self.net(z).reshape(z.shape[0], *self.out_shape)
