"""The generator presets: ``dip``, ``tddip``, ``gip`` and ``mridip``.

Each preset is a function of the matrix, the frame times and a seed that returns a
:class:`Generator`: an ``nn.Module`` whose codes are buffers (or fitted embeddings) and whose
``forward()`` returns the complex image series ``(T, Ny, Nx)``. All parts — MapNet, stage-1 CNNs
and the graph network — are ordinary parameters of one module and are fitted jointly.

==========  ====================  ==================  =====================================
preset      code ``z_t``          stage 1             stage 2
==========  ====================  ==================  =====================================
``dip``     noise maps per frame  one shared decoder  —
``tddip``   helix → MapNet        one shared decoder  —
``gip``     one shared noise map  a CNN per frame     kNN graph network, per-node weights
``mridip``  helix → MapNet        a CNN per frame     kNN graph network, per-slot weights,
                                  (shared base +      added to a shared output convolution
                                  per-frame part)
==========  ====================  ==================  =====================================

Reference facts the presets reproduce at 128²:

- TDDIP (Yoo et al., IEEE TMI 2021; github jaejun-yoo/TDDIP): helix ``(cos, sin, linear)``;
  MapNet ``3 → 512 → 64`` reshaped to ``1 × 8 × 8``; decoder of width 128, four nearest-neighbour
  upsamplings with two 3×3 convolutions (batch norm, ReLU, no bias) per level, 3×3 convolution to
  two channels; 1,368,000 parameters.
- GIP (Li et al., arXiv 2403.15770; github lizs17/GIP_Cardiac_MRI): one ``N(0, 1)`` noise map
  ``8 × 8 × 8`` shared by per-frame CNNs ``384 → 192 → 96 → 48 → 24 → 24 → 24`` channels with
  bilinear upsampling, ELU and instance norm (920,088 parameters per frame without the
  pretraining head), ``N(0, 0.02)`` initialisation; graph network with ``k = 7`` (see
  :mod:`mridip.models.graph`).

mridip's own choices, each measured on a 64² radial cine with 16 frames and 13 spokes (400
steps; the preset in this file reaches 36.9 dB there, TDDIP at its width 36.4, CG-SENSE 30.2):
its stage 1 is TDDIP's decoder plan with weights per frame, written as a shared base plus a
per-frame part that starts at zero and learns at a tenth of the rate (per-frame parts as
fast as the shared ones reached only 27–30 dB in the same steps: each frame's network sees only
its own 13 spokes); the graph stage adds its output to a shared 3×3 output convolution of the
stage-1 features and starts at zero (at width 32: 32.1 dB without, 35.2 dB with it); ``k`` is
a third of the frames, 2 or 3 (``k = 5`` of 8 frames cost 2.5 dB on a 32² cine; on 16-frame
scans 3 was level with 5 at 0.82× the step).

Departures, all deliberate: TDDIP's batch norm saw one frame per step, so its statistics are
per-frame; here the same per-frame statistics come from instance norm with affine (equal
parameter count) so that frames can be batched. GIP's per-frame 1×1 heads on stage 1 serve only
its stage-wise pretraining and are left out (they do not reach the output, so they would never
be fitted). GIP's feature-extraction network for the kNN graph never receives a gradient (the
graph comes from ``topk``), so its random weights are buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mridip.errors import ConfigError
from mridip.models.cnn import (
    ConvDecoder,
    PerFrameConv2d,
    PerFrameConvDecoder,
    PerFrameDecoder,
    frames_view,
    grouped_view,
    node_view,
)
from mridip.models.graph import FrameFeatures, FrameGraph, GraphStage, stage1_descriptors
from mridip.models.latents import (
    MANIFOLDS,
    EmbeddingCode,
    ManifoldCode,
    MapNet,
    NoiseCode,
    time_manifold,
)

__all__ = [
    "PRESETS",
    "DecoderGenerator",
    "Generator",
    "GraphGenerator",
    "LowRankGenerator",
    "PresetInfo",
    "build_generator",
    "describe_presets",
]

LATENTS = (*MANIFOLDS, "embedding", "noise")


class Generator(nn.Module):
    """Base class: a module that maps its fixed codes to a complex image series.

    Attributes
    ----------
    preset
        Name of the preset that built it.
    matrix
        ``(Ny, Nx)``.
    n_frames
        ``T``.
    """

    def __init__(self, preset: str, matrix: tuple[int, int], n_frames: int) -> None:
        super().__init__()
        self.preset = preset
        self.matrix = (int(matrix[0]), int(matrix[1]))
        self.n_frames = int(n_frames)

    def _frames(self, frames: Tensor | Sequence[int] | None) -> Tensor | None:
        """Validated frame indices as a long tensor on the module's device (None: all)."""
        host = self._host_frames(frames)
        if host is None:
            return None
        device = next(iter(self.parameters())).device
        return host.to(device, non_blocking=True)

    def _host_frames(self, frames: Tensor | Sequence[int] | None) -> Tensor | None:
        """Validated frame indices as a long CPU tensor (None: all).

        The range check runs on the host copy: checked on a GPU tensor it would make the host
        wait for the device. Indices already on a GPU are read back once here.
        """
        if frames is None:
            return None
        idx = torch.as_tensor(frames).reshape(-1).cpu()
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise ConfigError(f"frame indices must be integers, got {idx.dtype}")
        idx = idx.to(torch.long)
        if idx.numel() == 0:
            raise ConfigError("no frames requested")
        if int(idx.min()) < 0 or int(idx.max()) >= self.n_frames:
            raise ConfigError(f"frame indices must lie in [0, {self.n_frames}), got {idx.tolist()}")
        return idx

    def param_count(self) -> int:
        """Number of fitted parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, frames: Tensor | Sequence[int] | None = None) -> Tensor:
        """The image series.

        Parameters
        ----------
        frames
            ``(B,)`` frame indices; None for all frames.

        Returns
        -------
        Tensor
            Complex ``(B, Ny, Nx)`` (``(T, Ny, Nx)`` for all frames), complex64 for float32
            weights; an O(1) range, to be scaled by the caller.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, matrix={self.matrix}, n_frames={self.n_frames}"


class DecoderGenerator(Generator):
    """Codes (→ MapNet) → one shared decoder: ``dip`` and ``tddip``.

    Every frame is computed independently, so ``forward(frames)`` computes only those frames.
    """

    def __init__(
        self,
        preset: str,
        code: nn.Module,
        decoder: ConvDecoder,
        mapnet: MapNet | None = None,
    ) -> None:
        super().__init__(preset, decoder.sizes[-1], _n_frames(code))
        self.code = code
        self.mapnet = mapnet
        self.decoder = decoder

    def forward(self, frames: Tensor | Sequence[int] | None = None) -> Tensor:
        idx = self._frames(frames)
        z = self.code(idx)
        if self.mapnet is not None:
            z = self.mapnet(z)
        y = _real_image_dtype(self.decoder(z))
        return torch.complex(y[:, 0], y[:, 1])


class GraphGenerator(Generator):
    """Codes (→ MapNet) → per-frame CNNs → graph network over frames: ``gip`` and ``mridip``.

    ``forward(frames)`` computes stage 1 for the frames' two-hop graph neighbourhood (often all
    frames: with ``k = 7`` of 18 frames it nearly always is) and the graph stage for those needed
    by the requested frames; when the graph is due for recomputation (see :class:`FrameGraph`),
    stage 1 runs for all frames.
    """

    def __init__(
        self,
        preset: str,
        code: nn.Module,
        stage1: PerFrameDecoder | PerFrameConvDecoder,
        features: FrameFeatures,
        graph: FrameGraph,
        stage2: GraphStage,
        mapnet: MapNet | None = None,
        skip: bool = False,
    ) -> None:
        super().__init__(preset, stage1.sizes[-1], stage1.n_frames)
        self.code = code
        self.mapnet = mapnet
        self.stage1 = stage1
        self.features = features
        self.graph = graph
        self.stage2 = stage2
        # mridip: a shared 3×3 output convolution on the stage-1 features, to which the graph
        # stage adds its refinement (its head starts at zero, so the fit starts from a plain
        # decoder's output and the graph network learns what the neighbours add)
        self.skip = PerFrameConv2d(1, stage1.out_channels, 2) if skip else None
        if self.skip is not None:
            with torch.no_grad():
                stage2.head.weight.zero_()
                stage2.head.bias.zero_()

    def _closure(self, targets: Tensor) -> Tensor | None:
        """Sorted frames within two graph hops of ``targets`` (None when that is all); found
        on the host's copy of the graph and returned on the device of ``targets``."""
        nb = self.graph.host_neighbours
        t = targets.cpu()
        hop1 = torch.unique(torch.cat([t, nb[t].reshape(-1)]))
        nodes = torch.unique(torch.cat([hop1, nb[hop1].reshape(-1)]))
        if nodes.numel() == self.n_frames:
            return None
        return nodes.to(targets.device, non_blocking=True)

    def stage1_features(self, frames: Tensor | Sequence[int] | None = None) -> Tensor:
        """Stage-1 feature maps ``(B, C, Ny, Nx)`` of the given frames (all when None)."""
        idx = self._frames(frames)
        n = self.n_frames if idx is None else int(idx.numel())
        return frames_view(self._stage1(idx), n).contiguous()

    def _stage1(self, nodes: Tensor | None) -> Tensor:
        z = self.code(nodes)
        if self.mapnet is not None:
            z = self.mapnet(z)
        return self.stage1(z, nodes)

    def forward(self, frames: Tensor | Sequence[int] | None = None) -> Tensor:
        host_targets = self._host_frames(frames)
        targets = self._frames(host_targets)
        due = self.graph.due()
        nodes = None if host_targets is None or due else self._closure(host_targets)
        if nodes is not None and targets is not None:
            nodes = nodes.to(targets.device, non_blocking=True)
        x = self._stage1(nodes)
        if due:
            self.graph.update(stage1_descriptors(self.features, x, self.n_frames))
        self.graph.tick()
        host = None if host_targets is None else (self.graph.host_neighbours, host_targets)
        y = self.stage2(x, self.graph.neighbours, nodes, targets, host=host)  # (H, W, B, 2)
        if self.skip is not None:
            n = self.n_frames if nodes is None else int(nodes.numel())
            b = self.n_frames if targets is None else int(targets.numel())
            xt = x
            if targets is not None:
                pos = targets if nodes is None else torch.searchsorted(nodes, targets)
                xt = grouped_view(node_view(x, n).index_select(2, pos))
            y = y + node_view(self.skip(xt, None, b), b)
        return torch.view_as_complex(_real_image_dtype(y).permute(2, 0, 1, 3).contiguous())


class LowRankGenerator(Generator):
    """Spatial bases from one CNN decoder times temporal bases from the time code: ``lrdip``.

    ``x_t = Σ_k V_tk U_k``: the decoder maps one fixed noise code to ``r`` complex spatial bases
    ``U_k`` (``2r`` output channels), and an MLP maps each frame's time code to its ``r``
    complex temporal coefficients ``V_t`` (or ``V`` is a free ``(T, r)`` parameter). The image
    series is a rank-``r`` Casorati matrix whose spatial factor carries the CNN's prior; the
    decoder runs once per step whatever the number of frames, so a step costs about one frame
    of ``tddip``.
    """

    def __init__(
        self,
        code: NoiseCode,
        decoder: ConvDecoder,
        time_code: nn.Module,
        temporal: nn.Module,
        rank: int,
    ) -> None:
        super().__init__("lrdip", decoder.sizes[-1], _n_frames(time_code))
        self.code = code
        self.decoder = decoder
        self.time_code = time_code
        self.temporal = temporal
        self.rank = int(rank)

    def spatial_bases(self) -> Tensor:
        """The ``r`` complex spatial bases ``(r, Ny, Nx)``."""
        u = _real_image_dtype(self.decoder(self.code(None)))[0]
        return torch.complex(u[: self.rank], u[self.rank :])

    def temporal_bases(self, frames: Tensor | Sequence[int] | None = None) -> Tensor:
        """The complex temporal coefficients ``(B, r)`` of the frames (all when None)."""
        v = _real_image_dtype(self.temporal(self.time_code(self._frames(frames))))
        return torch.complex(v[:, : self.rank], v[:, self.rank :])

    def forward(self, frames: Tensor | Sequence[int] | None = None) -> Tensor:
        u = self.spatial_bases()
        v = self.temporal_bases(frames)
        return torch.einsum("br,rhw->bhw", v, u)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"


class FreeCoefficients(nn.Module):
    """Temporal coefficients as a free ``(T, 2r)`` parameter, indexed by frame (``lrdip``'s
    ``temporal="free"``); takes frame indices in place of codes."""

    def __init__(self, n_frames: int, rank: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_frames, 2 * rank) * scale)

    def forward(self, idx: Tensor) -> Tensor:
        return self.weight.index_select(0, idx)


class _FrameIndex(nn.Module):
    """A time code that returns the frame indices themselves (for :class:`FreeCoefficients`)."""

    index: Tensor

    def __init__(self, n_frames: int) -> None:
        super().__init__()
        self.n_frames = n_frames
        self.register_buffer("index", torch.arange(n_frames), persistent=False)

    def forward(self, frames: Tensor | None = None) -> Tensor:
        return self.index if frames is None else frames


def _real_image_dtype(y: Tensor) -> Tensor:
    """Real and imaginary parts in float32 at least, whatever the autocast dtype.

    Under bfloat16 autocast (the default on CUDA) the last convolution returns bfloat16, for
    which neither ``torch.complex`` nor ``view_as_complex`` has a kernel; the image and the data
    term are float32 (complex64) in any case.
    """
    return y.to(torch.promote_types(y.dtype, torch.float32))


def _n_frames(code: nn.Module) -> int:
    if isinstance(code, ManifoldCode):
        return int(code.codes.shape[0])
    if isinstance(code, EmbeddingCode):
        return int(code.weight.shape[0])
    if isinstance(code, NoiseCode):
        return code.n_frames
    if isinstance(code, _FrameIndex):
        return code.n_frames
    raise TypeError(f"unknown code module {type(code).__name__}")


# ---------------------------------------------------------------------------------------------
# building blocks shared by the presets


def _time_code(
    latent: str,
    frame_times: Tensor,
    *,
    cycles: float,
    period: float | None,
    resp_period: float | None,
    embed_dim: int,
) -> nn.Module:
    n = int(frame_times.numel())
    if latent in MANIFOLDS:
        codes = time_manifold(
            frame_times, latent, cycles=cycles, period=period, resp_period=resp_period
        )
        return ManifoldCode(codes)
    if latent == "embedding":
        return EmbeddingCode(n, embed_dim)
    if latent == "noise":
        return NoiseCode((embed_dim,), n, distribution="normal", scale=1.0)
    raise ConfigError(f"unknown latent {latent!r}; choose one of {list(LATENTS)}")


def _code_dim(code: nn.Module) -> int:
    return int(code.dim)  # type: ignore[operator, arg-type]


def _build_dip(
    matrix: tuple[int, int],
    frame_times: Tensor,
    *,
    width: int,
    n_up: int,
    n_extra: int,
    code_channels: int,
    noise_scale: float,
    upsample: str,
    norm: str,
) -> Generator:
    decoder = ConvDecoder(
        code_channels, matrix, width=width, n_up=n_up, n_extra=n_extra, upsample=upsample, norm=norm
    )
    code = NoiseCode(decoder.in_shape, int(frame_times.numel()), scale=noise_scale)
    return DecoderGenerator("dip", code, decoder)


def _build_tddip(
    matrix: tuple[int, int],
    frame_times: Tensor,
    *,
    latent: str,
    cycles: float,
    period: float | None,
    resp_period: float | None,
    embed_dim: int,
    hidden: int,
    depth: int,
    code_channels: int,
    width: int,
    n_up: int,
    n_extra: int,
    upsample: str,
    norm: str,
) -> Generator:
    code = _time_code(
        latent,
        frame_times,
        cycles=cycles,
        period=period,
        resp_period=resp_period,
        embed_dim=embed_dim,
    )
    decoder = ConvDecoder(
        code_channels, matrix, width=width, n_up=n_up, n_extra=n_extra, upsample=upsample, norm=norm
    )
    mapnet = MapNet(_code_dim(code), decoder.in_shape, hidden=hidden, depth=depth)
    return DecoderGenerator("tddip", code, decoder, mapnet)


def _graph_generator(
    preset: str,
    code: nn.Module,
    mapnet: MapNet | None,
    stage1: PerFrameDecoder | PerFrameConvDecoder,
    *,
    k: int,
    knn_every: int,
    knn_features: str,
    node_specific: bool,
    per_frame_heads: bool,
    agg_norm: str,
    init_std: float | None,
    shared_base: bool = False,
    frame_scale: float = 1.0,
    skip: bool = False,
) -> GraphGenerator:
    n_frames = stage1.n_frames
    stage2 = GraphStage(
        n_frames,
        stage1.out_channels,
        k,
        node_specific=node_specific,
        per_frame_heads=per_frame_heads,
        agg_norm=agg_norm,
        shared_base=shared_base,
        frame_scale=frame_scale,
    )
    if init_std is not None:
        stage1.reset_parameters(init_std)
        stage2.reset_parameters(init_std)
    features = FrameFeatures(stage1.out_channels, knn_features)
    graph = FrameGraph(n_frames, k, knn_every)
    return GraphGenerator(preset, code, stage1, features, graph, stage2, mapnet, skip)


def _build_gip(
    matrix: tuple[int, int],
    frame_times: Tensor,
    *,
    code_channels: int,
    shared_code: bool,
    width: int,
    mults: Sequence[int],
    n_up: int,
    upsample: str,
    k: int,
    knn_every: int,
    knn_features: str,
    init_std: float | None,
) -> Generator:
    n = int(frame_times.numel())
    stage1 = PerFrameDecoder(
        n, code_channels, matrix, width=width, mults=mults, n_up=n_up, upsample=upsample
    )
    code = NoiseCode(stage1.in_shape, n, shared=shared_code, distribution="normal", scale=1.0)
    return _graph_generator(
        "gip",
        code,
        None,
        stage1,
        k=k,
        knn_every=knn_every,
        knn_features=knn_features,
        node_specific=True,
        per_frame_heads=True,
        agg_norm="batch",
        init_std=init_std,
    )


def _build_mridip(
    matrix: tuple[int, int],
    frame_times: Tensor,
    *,
    latent: str,
    cycles: float,
    period: float | None,
    resp_period: float | None,
    embed_dim: int,
    hidden: int,
    depth: int,
    code_channels: int,
    width: int,
    n_up: int,
    n_extra: int,
    upsample: str,
    activation: str,
    k: int,
    knn_every: int,
    knn_features: str,
    node_specific: bool,
    shared_base: bool,
    frame_scale: float,
    init_std: float | None,
) -> Generator:
    n = int(frame_times.numel())
    code = _time_code(
        latent,
        frame_times,
        cycles=cycles,
        period=period,
        resp_period=resp_period,
        embed_dim=embed_dim,
    )
    stage1 = PerFrameConvDecoder(
        n,
        code_channels,
        matrix,
        width=width,
        n_up=n_up,
        n_extra=n_extra,
        upsample=upsample,
        activation=activation,
        shared_base=shared_base,
        frame_scale=frame_scale,
    )
    mapnet = MapNet(_code_dim(code), stage1.in_shape, hidden=hidden, depth=depth)
    return _graph_generator(
        "mridip",
        code,
        mapnet,
        stage1,
        k=k,
        knn_every=knn_every,
        knn_features=knn_features,
        node_specific=node_specific,
        per_frame_heads=True,
        agg_norm="instance",
        init_std=init_std,
        shared_base=shared_base,
        frame_scale=frame_scale,
        skip=True,
    )


def _build_lrdip(
    matrix: tuple[int, int],
    frame_times: Tensor,
    *,
    rank: int | None,
    temporal: str,
    latent: str,
    cycles: float,
    period: float | None,
    resp_period: float | None,
    embed_dim: int,
    hidden: int,
    code_channels: int,
    noise_scale: float,
    width: int,
    n_up: int,
    n_extra: int,
    upsample: str,
    norm: str,
) -> Generator:
    n = int(frame_times.numel())
    r = min(n, int(rank)) if rank is not None else default_rank(n)
    if r < 1:
        raise ConfigError(f"rank must be ≥ 1, got {rank}")
    decoder = ConvDecoder(
        code_channels,
        matrix,
        width=width,
        n_up=n_up,
        n_extra=n_extra,
        out_ch=2 * r,
        upsample=upsample,
        norm=norm,
    )
    code = NoiseCode(decoder.in_shape, n, shared=True, distribution="normal", scale=noise_scale)
    time_code: nn.Module
    coefficients: nn.Module
    if temporal == "mlp":
        time_code = _time_code(
            latent,
            frame_times,
            cycles=cycles,
            period=period,
            resp_period=resp_period,
            embed_dim=embed_dim,
        )
        coefficients = nn.Sequential(
            nn.Linear(_code_dim(time_code), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * r),
        )
    elif temporal == "free":
        time_code = _FrameIndex(n)
        coefficients = FreeCoefficients(n, r, scale=1.0 / math.sqrt(r))
    else:
        raise ConfigError(f"unknown temporal model {temporal!r}; choose 'mlp' or 'free'")
    return LowRankGenerator(code, decoder, time_code, coefficients, r)


def default_rank(n_frames: int) -> int:
    """``lrdip``'s rank when none is given: every frame up to 8, then half the frames, at most 16.

    On 8-frame cines (rat, PINCAT; 48², 13 spokes) rank 8 beat rank 4 by 0.3–0.5 dB: with few
    frames the spatial bases' shared CNN is the prior, not the rank.
    """
    return max(1, min(n_frames, max(8, n_frames // 2), 16))


# ---------------------------------------------------------------------------------------------
# the preset table


_TIME = {"latent": "helix", "cycles": 1.0, "period": None, "resp_period": None, "embed_dim": 3}


@dataclass(frozen=True)
class PresetInfo:
    """One generator preset.

    Attributes
    ----------
    name
        Preset name (``--method``).
    description
        One line for ``mridip methods``.
    reference
        Where the design comes from.
    defaults
        Every option the preset takes, with its default; ``build_generator`` overrides them.
    fit_defaults
        Settings of :class:`mridip.recon.FitConfig` that differ for this preset (``gip``
        pretrains towards CG-SENSE as its paper does; its independent per-frame networks fit
        slowly from noise).
    """

    name: str
    description: str
    reference: str
    builder: Callable[..., Generator] = field(repr=False)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fit_defaults: Mapping[str, Any] = field(default_factory=dict)

    def param_count(self, matrix: tuple[int, int], n_frames: int, **overrides: Any) -> int:
        """Number of fitted parameters at this matrix and frame count (nothing is allocated)."""
        with torch.device("meta"):
            times = torch.arange(n_frames, dtype=torch.float64, device="cpu")
            model = build_generator(self.name, matrix=matrix, frame_times=times, **overrides)
        return model.param_count()


#: The hold-out of the blended presets: 15% of the readouts (spokes, lines), which stop the fit
#: and choose the blend (docs/reconstructor.md), then rejoin through the data-consistency step.
_SPOKES: dict[str, Any] = {"holdout": 0.15, "holdout_unit": "readout", "final": "dc"}

PRESETS: dict[str, PresetInfo] = {
    "dip": PresetInfo(
        "dip",
        "fixed random noise per frame → one shared CNN decoder",
        "Ulyanov et al., CVPR 2018",
        _build_dip,
        {
            "width": None,
            "n_up": 4,
            "n_extra": 1,
            "code_channels": 8,
            "noise_scale": 0.1,
            "upsample": "nearest",
            "norm": "instance",
        },
    ),
    "tddip": PresetInfo(
        "tddip",
        "helix time manifold → MapNet → one shared CNN decoder",
        "Yoo et al., IEEE TMI 2021",
        _build_tddip,
        {
            **_TIME,
            "hidden": 512,
            "depth": 0,
            "code_channels": 1,
            "width": None,
            "n_up": 4,
            "n_extra": 1,
            "upsample": "nearest",
            "norm": "instance",
        },
    ),
    "gip": PresetInfo(
        "gip",
        "shared noise → an independent CNN per frame → kNN graph network over frames",
        "Li et al., arXiv 2403.15770",
        _build_gip,
        {
            "code_channels": 8,
            "shared_code": True,
            "width": None,
            "mults": (16, 8, 4, 2, 1, 1, 1),
            "n_up": 4,
            "upsample": "bilinear",
            "k": 7,
            "knn_every": 1,
            "knn_features": "fen",
            "init_std": 0.02,
        },
        {"warm_start_steps": 200},
    ),
    "mridip": PresetInfo(
        "mridip",
        "time manifold → MapNet → per-frame CNNs (shared base + own part) → kNN graph network",
        "this project: TDDIP's time manifold with GIP's per-frame CNNs and frame graph",
        _build_mridip,
        {
            **_TIME,
            "hidden": 512,
            "depth": 0,
            "code_channels": 1,
            "width": None,
            "n_up": 4,
            "n_extra": 1,
            "upsample": "nearest",
            "activation": "relu",
            "k": None,
            "knn_every": 10,
            "knn_features": "fen",
            "node_specific": False,
            "shared_base": True,
            "frame_scale": 0.1,
            "init_std": None,
        },
        # held-out spokes, the data-consistency step on all data, and (mridip.methods) the blend
        # they choose, as lrdip: on the rat cine and PINCAT at 48² (seed 0) 38.49 and 31.46 dB
        # in 840 and 560 steps, against 37.03 dB in 1240 steps with single held-out samples.
        # Temporal and spatial TV in the loss (DIP-TV), weights chosen on the rat's seed 0 among
        # eight settings (+0.24 dB): held out, PINCAT +1.18 dB, perfusion +0.31, the rat's seeds
        # 1 and 2 −0.01 and +0.10, the textured cine −0.11 (docs/reconstructor.md).
        # The limit went from 1500 to 3000 steps with the rate halved at 750 and 1125 as before
        # (then a quarter and three eighths of it): fits that stopped within 1500 steps are
        # unchanged, and the perfusion fits that ran to the 1500-step limit stop by the
        # held-out rule (seeds 0 and 1 at 2640 and 1900 steps, 47.05 and 46.34 dB).
        # Each scheduled halving restarts the patience: off while it took the 96² × 16 row past
        # issue 20's time bound (38.7× tv); with bfloat16 and the normalisations' gradients
        # fixed that row takes 20.0× with it, and it changed 8 of 16 fits, 7 of them gains
        # (the rat at 96² +0.11 and +0.20 dB; docs/reconstructor.md)
        # The limit is 4000 with the halvings still at 750 and 1125 (3/16 and 9/32 of it, exact
        # in binary), so every fit that stopped within 3000 steps is the same fit: with the
        # restart, PINCAT with 21 spokes (seed 0) ran to the 3000-step limit, its held-out
        # residual last lowest at 2760; with 4000 it stops by the rule at 3060, the same image
        {
            **_SPOKES,
            "tv_weight": 0.03,
            "tv_spatial_weight": 0.1,
            "max_steps": 4000,
            "lr_halve_at": (0.1875, 0.28125),
            "halving_resets_patience": True,
        },
    ),
    "lrdip": PresetInfo(
        "lrdip",
        "fixed noise → one CNN decoder of r spatial bases × time manifold → MLP of r temporal "
        "coefficients",
        "low-rank DIP (spatial and temporal bases fitted as generators, e.g. LR-DIP)",
        _build_lrdip,
        {
            **_TIME,
            "rank": None,
            "temporal": "mlp",
            "hidden": 64,
            "code_channels": 8,
            "noise_scale": 1.0,
            "width": None,
            "n_up": 4,
            "n_extra": 1,
            "upsample": "nearest",
            "norm": "instance",
        },
        # a step costs about one frame of tddip, and at 1500 steps the fits were still
        # improving; with the limit at 5000 the learning rate halves at 2500 and 3750 and the
        # held-out rule ended the fits at 1760 (PINCAT) and 2820 steps (rat cine), 48², 8 frames.
        # Whole spokes (lines) held out: they judge the image between the measured readouts,
        # where undersampling errs, so they stop 16-frame fits that single samples let run to
        # the limit, and they choose the blend weight (mridip.methods); the held-out readouts
        # then rejoin through the data-consistency step (docs/reconstructor.md, measured there).
        # The held-out residual must fall by 1% within the patience to count: the textured cine
        # and the perfusion phantom (48², 16 frames), which crept to the 5000-step limit, stop
        # (2800 and 1540 steps, −0.23 and +0.16 dB); the rat and PINCAT keep their images
        {"max_steps": 5000, "stop_margin": 0.01, **_SPOKES},
    ),
}


#: Width rule per preset: ``(width at 128², exponent, smallest width)``; see :func:`auto_width`.
WIDTH_RULES: dict[str, tuple[int, float, int]] = {
    "dip": (128, 2.0, 16),
    "tddip": (128, 2.0, 16),
    "gip": (24, 2.0, 4),
    "mridip": (32, 1.0, 16),
    # half the width the 128² rule first gave (128 · N/128): on the demo's 64² sample width 32
    # reached 41.30 dB in 3000 steps against 41.17 with 64, at 0.6× the time per step; on the
    # rat cine (48², three seeds) 0.11–0.12 dB above width 48 (docs/models.md)
    "lrdip": (64, 1.0, 32),
}


def auto_width(name: str, matrix: tuple[int, int]) -> int:
    """The preset's width (channels of its convolutions) for a matrix.

    The references' widths hold at 128² (TDDIP 128, GIP 24, mridip 32). Below 128² the
    published presets scale with the number of pixels (``(N/128)²``, ``N = √(Ny·Nx)``): a
    width-128 decoder at 64² has 16× the arithmetic per step (measured on two cores: TDDIP at
    64² took 1.3 s per step with width 128 and 0.13 s with width 32, which reached 36.4 dB in
    400 steps against CG-SENSE's 30.2). mridip
    scales linearly between 16 and 32, so that a 256² fit stays affordable on a CPU (and a
    narrower one lost 2 dB on a 32² cine). Widths never exceed the 128² value.
    """
    full, power, floor = WIDTH_RULES[name]
    n = math.sqrt(int(matrix[0]) * int(matrix[1]))
    return int(min(full, max(floor, round(full * (n / 128) ** power))))


def build_generator(
    name: str,
    *,
    matrix: tuple[int, int],
    frame_times: Tensor | Sequence[float],
    seed: int = 0,
    **overrides: Any,
) -> Generator:
    """Build a generator preset.

    Parameters
    ----------
    name
        One of :data:`PRESETS`: ``"dip"``, ``"tddip"``, ``"gip"``, ``"mridip"``.
    matrix
        Image size ``(Ny, Nx)``; any positive size.
    frame_times
        ``(T,)`` frame times in seconds (irregular spacing is fine); ``T`` is the number of
        frames.
    seed
        Seed of the weights and noise codes; the global random state is left untouched.
    **overrides
        Options of the preset (``PRESETS[name].defaults``), e.g. ``latent="line"`` for perfusion,
        ``latent="cardiac_resp", resp_period=4.5``, ``cycles=13``, ``period=0.8``, ``k=5``,
        ``knn_every=0`` (frozen graph), ``width=...``.

    Returns
    -------
    Generator
        On the CPU (move it with ``.to(device)``); ``model()`` gives complex64 ``(T, Ny, Nx)``.

    Raises
    ------
    ConfigError
        Unknown preset or option, bad matrix, frame times or option value.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown generator {name!r}; choose one of {sorted(PRESETS)}")
    info = PRESETS[name]
    unknown = sorted(set(overrides) - set(info.defaults))
    if unknown:
        raise ConfigError(
            f"generator {name!r} has no option {', '.join(unknown)}; "
            f"its options are {', '.join(sorted(info.defaults))}"
        )
    try:
        ny, nx = (int(s) for s in matrix)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"matrix must be two integers (Ny, Nx), got {matrix!r}") from exc
    if ny < 1 or nx < 1:
        raise ConfigError(f"matrix must be positive, got {matrix!r}")
    times = torch.as_tensor(frame_times, dtype=torch.float64, device="cpu").reshape(-1)
    if times.numel() == 0:
        raise ConfigError("frame_times is empty: a generator needs at least one frame")
    if not bool(torch.isfinite(times).all()):
        raise ConfigError("frame_times holds NaN or infinite values")
    options = {**info.defaults, **overrides}
    if options.get("width") is None:
        options["width"] = auto_width(name, (ny, nx))
    if "k" in options and options["k"] is None:
        # mridip: a third of the frames, 2 or 3 (more neighbours mixed dissimilar cardiac
        # phases and cost 2.5 dB on an 8-frame cine; GIP uses 7). On 16-frame scans (48², PINCAT
        # three seeds, perfusion, textured cine) k = 3 was level with the earlier rule's 5 and
        # each graph convolution costs k 3×3 convolutions: 0.82× the step at 96² × 16
        options["k"] = min(3, max(2, int(times.numel()) // 3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return info.builder((ny, nx), times, **options)


def describe_presets(matrix: tuple[int, int], n_frames: int) -> list[dict[str, Any]]:
    """Name, parameter count, description and reference of every preset.

    Parameters
    ----------
    matrix
        ``(Ny, Nx)`` for the parameter counts.
    n_frames
        ``T`` for the parameter counts.

    Returns
    -------
    list of dict
        One ``{"name", "params", "description", "reference"}`` per preset, in table order.
    """
    return [
        {
            "name": info.name,
            "params": info.param_count(matrix, n_frames),
            "description": info.description,
            "reference": info.reference,
        }
        for info in PRESETS.values()
    ]
