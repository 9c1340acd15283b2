"""Stage 2 of the graph generators: a network over the frames (GIP's graph stage).

Frames are the nodes; each node's feature is its stage-1 feature map. Every node is joined to its
``k`` nearest frames by cosine similarity of (a fixed projection of) their stage-1 features, itself
included as slot 0 — built in plain torch with ``topk`` — and the graph is recomputed on a
schedule or frozen (:class:`FrameGraph`).

Message passing follows GIP (Li et al., arXiv 2403.15770): the *aggregation* of node ``i`` is the
mean over its neighbour slots ``s`` of a 3×3 convolution ``W_is * x_j(i,s)`` of the neighbour's
map, then ELU and a normalisation; the *update* concatenates a per-node convolution of the node's
own map with its aggregate and aggregates that again over the neighbours; per-frame residual blocks
and a 1×1 output convolution follow. Weights are per (node, slot) as in GIP, or per slot and shared
by all nodes (``node_specific=False``, the mridip default: parameters independent of the number of
frames).

The gather is torch_geometric's :class:`~torch_geometric.nn.MessagePassing` lift
(``index_select`` along the node axis of ``(H, W, N, C)`` node features) and its backward a
scatter-add; the per-target sum over slots is one grouped convolution over the gathered maps
(``groups`` = number of targets), so no tensor is sliced per node or per neighbour. Per-slot
weights (mridip) run *slot first* instead: one batched convolution of every source with all
slot weights, then each target's sum as one matrix product (:meth:`NeighbourConv._slot_first`).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mridip.errors import ConfigError
from mridip.models.cnn import (
    PerFrameConv2d,
    batch_norm_train,
    frames_view,
    grouped_view,
    init_conv_,
    instance_norm,
    node_view,
    take,
)

with warnings.catch_warnings():
    # torch_geometric's import runs torch.jit.script, deprecated in recent torch; the warning is
    # about torch_geometric's code, not ours, and a user cannot act on it.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=DeprecationWarning)
    from torch_geometric.nn import MessagePassing


# ---------------------------------------------------------------------------------------------
# the graph


def cosine_knn(features: Tensor, k: int) -> Tensor:
    """The ``k`` nearest nodes of every node by cosine similarity, itself first.

    Parameters
    ----------
    features
        ``(N, F)`` node features.
    k
        Neighbours per node, self included (``1 ≤ k ≤ N``).

    Returns
    -------
    Tensor
        ``(N, k)`` long indices; row ``i`` is node ``i`` followed by its ``k - 1`` most similar
        other nodes in decreasing similarity.
    """
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k must be between 1 and the number of frames {n}, got {k}")
    f = F.normalize(features.detach().flatten(1).to(torch.float32), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(math.inf)  # self first even when two frames are identical
    return torch.topk(sim, k, dim=1).indices


def knn_edge_index(neighbours: Tensor) -> Tensor:
    """Edges ``(2, N·k)`` (source, target) of a neighbour table ``(N, k)``, sorted by target."""
    n, k = neighbours.shape
    dst = torch.arange(n, device=neighbours.device).repeat_interleave(k)
    return torch.stack([neighbours.reshape(-1), dst])


class FrameFeatures(nn.Module):
    """Descriptor of each frame's stage-1 features for the kNN graph (no parameters).

    The frames' mean is removed first (frames differ by their motion, not by their common
    anatomy). ``"fen"`` then applies GIP's feature-extraction network — strided convolutions
    ``C → C/2`` (5×5/3, 5×5/3, 4×4/2, 4×4/2) with ReLU, no bias — with fixed random weights: in
    GIP the neighbour indices come from ``topk``, so no gradient reaches these weights and they
    stay at their random initialisation; here they are buffers. Stages that do not fit a small
    image are skipped. ``"pool"`` average-pools the maps to at most 8×8 instead.

    Parameters
    ----------
    channels
        Channels ``C`` of the stage-1 features.
    mode
        ``"fen"`` or ``"pool"``.
    """

    _PLAN = ((5, 3), (5, 3), (4, 2), (4, 2))  # (kernel, stride), padding 1

    def __init__(self, channels: int, mode: str = "fen") -> None:
        super().__init__()
        if mode not in ("fen", "pool"):
            raise ConfigError(f"unknown kNN feature mode {mode!r}; choose 'fen' or 'pool'")
        self.mode = mode
        half = max(channels // 2, 1)
        cin = channels
        for i, (ks, _) in enumerate(self._PLAN):
            w = torch.randn(half, cin, ks, ks) * math.sqrt(2.0 / (cin * ks * ks))
            self.register_buffer(f"w{i}", w)
            cin = half

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Descriptors ``(N, F)`` of stage-1 features ``(N, C, H, W)``."""
        x = x - x.mean(dim=0, keepdim=True)
        if self.mode == "pool":
            h, w = x.shape[-2:]
            return F.adaptive_avg_pool2d(x, (min(h, 8), min(w, 8))).flatten(1)
        for i, (ks, stride) in enumerate(self._PLAN):
            if min(x.shape[-2:]) + 2 < ks:
                break
            if i > 0:
                x = F.relu(x)
            x = F.conv2d(x, getattr(self, f"w{i}"), stride=stride, padding=1)
        return x.flatten(1)


class FrameGraph(nn.Module):
    """The kNN graph over frames and its recomputation schedule.

    The neighbour table is a buffer (saved with a checkpoint). It is computed on the first call,
    then, in training mode, every ``every`` forward passes (``every=1``: each step, as GIP does
    while it learns the graph; ``every=0``: never again, i.e. frozen). In evaluation mode the last
    graph is used.

    Parameters
    ----------
    n_frames
        Number of frames ``N``.
    k
        Neighbours per frame, self included (clipped to ``N``).
    every
        Recompute interval in training steps (0: frozen after the first computation).
    """

    neighbours: Tensor
    step: Tensor

    def __init__(self, n_frames: int, k: int, every: int = 1) -> None:
        super().__init__()
        if k < 1 or every < 0:
            raise ConfigError(f"need k ≥ 1 and every ≥ 0, got k={k}, every={every}")
        self.k = min(k, n_frames)
        self.every = every
        self.register_buffer("neighbours", torch.full((n_frames, self.k), -1, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # host copies of the schedule and the table: on a GPU, reading the buffers every step
        # would make the host wait for the device (the buffers stay the saved state)
        self._step = 0
        self._computed = False
        self._host_neighbours: Tensor | None = None

    @property
    def computed(self) -> bool:
        """Whether a graph has been computed (or loaded)."""
        return self._computed

    @property
    def host_neighbours(self) -> Tensor:
        """The neighbour table ``(N, k)`` on the CPU, read from the device at most once per
        update (only frame subsets need it, to find their neighbourhood)."""
        if self._host_neighbours is None:
            self._host_neighbours = self.neighbours.cpu()
        return self._host_neighbours

    def due(self) -> bool:
        """Whether this forward pass must recompute the graph (needs all frames' features)."""
        if not self.computed:
            return True
        return self.training and self.every > 0 and self._step % self.every == 0

    def tick(self) -> None:
        """Count one forward pass in training mode."""
        if self.training:
            self._step += 1
            self.step.fill_(self._step)

    @torch.no_grad()
    def update(self, features: Tensor) -> None:
        """Recompute the neighbours from descriptors ``(N, F)``."""
        self.neighbours.copy_(cosine_knn(features, self.k))
        self._computed, self._host_neighbours = True, None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._step = int(self.step)
        self._computed, self._host_neighbours = bool(self.neighbours[0, 0] >= 0), None

    def freeze(self) -> None:
        """Keep the current graph from now on."""
        self.every = 0

    def extra_repr(self) -> str:
        return f"k={self.k}, every={self.every}"


# ---------------------------------------------------------------------------------------------
# message passing


class NeighbourConv(MessagePassing):
    """GIP's graph convolution: node ``i`` gets ``mean_s (W_is * x_j(i,s) + b_is)``.

    Node features are feature maps, ``(H, W, N, C)`` with the node axis 2 (``node_dim=2``). The
    message of an edge is its source's map (gathered by ``MessagePassing``); the aggregation is
    the per-target, per-slot 3×3 convolution summed over the ``k`` slots, computed for all targets
    at once as one grouped convolution over the gathered maps.

    Parameters
    ----------
    in_ch, out_ch
        Channels.
    k
        Slots (neighbours per target, self included).
    n_frames
        Number of frames for per-(node, slot) weights as in GIP; None for per-slot weights shared
        by all nodes.
    kernel_size
        Odd kernel size.
    bias
        Per-(node, slot) biases.
    fan_in
        Fan-in of the default initialisation (``in_ch·ks²`` unless given: a convolution that is
        one part of a wider one initialises like the wider one).
    slot_first
        With per-slot weights (``n_frames=None``): convolve every source frame with all ``k``
        slot weights in one batched convolution (``(N, C) → (N, k·out)``) and then gather and
        sum each target's ``k`` (source, slot) outputs (True, the default); or gather the
        ``k`` neighbour maps of every target first and run one grouped convolution with
        ``groups`` = targets over the ``N``-fold expanded weight (False: the earlier path, kept
        for ``mridip bench --only fit``). Same arithmetic; the first gathers along the leading
        axis (contiguous rows) and keeps no ``k``-fold copy of the input for the backward.

    Attributes
    ----------
    channels_last
        The slot-first convolution in channels-last memory (True, the default: measured 1.8×
        faster, forward and backward, on two CPU cores; docs/benchmarks.md) or in NCHW memory
        (False: the earlier path, kept for ``mridip bench --only fit``; the same result up to
        rounding). Switched for a whole model by :func:`use_fast_paths`.
    """

    channels_last: bool = True

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        k: int,
        n_frames: int | None = None,
        kernel_size: int = 3,
        *,
        bias: bool = True,
        fan_in: int | None = None,
        slot_first: bool = True,
    ) -> None:
        super().__init__(aggr=None, node_dim=2)
        self.slot_first = slot_first
        self.in_ch, self.out_ch, self.k, self.kernel_size = in_ch, out_ch, k, kernel_size
        self.fan_in = fan_in if fan_in is not None else in_ch * kernel_size**2
        self.node_specific = n_frames is not None
        self.n_nodes = n_frames if n_frames is not None else 1
        # stored as one (nodes·out, k·in, ks, ks) convolution weight (4-D, so that
        # ``module.to(memory_format=torch.channels_last)`` works); see ``slot_weight``
        self.weight = nn.Parameter(
            torch.empty(self.n_nodes * out_ch, k * in_ch, kernel_size, kernel_size)
        )
        lead = (n_frames,) if n_frames is not None else ()
        self.bias = nn.Parameter(torch.empty(*lead, k, out_ch)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        """PyTorch's ``Conv2d`` default per (node, slot), or ``N(0, std²)`` and zero bias."""
        init_conv_(self.weight, self.bias, self.fan_in, std)

    @property
    def slot_weight(self) -> Tensor:
        """The weights as ``(nodes, out_ch, k, in_ch, ks, ks)``: ``[i, :, s]`` is ``W_is``."""
        ks = self.kernel_size
        return self.weight.view(self.n_nodes, self.out_ch, self.k, self.in_ch, ks, ks)

    def propagate(self, edge_index: Tensor, size=None, **kwargs):  # type: ignore[override]
        """PyG's generic ``propagate``, declared here so that PyG does not render its TorchScript
        template: that renders into a file in the temporary folder, left behind by every process
        that builds a graph model (tested). The generic path is the same arithmetic."""
        return MessagePassing.propagate(self, edge_index, size=size, **kwargs)

    def forward(self, x: Tensor, edge_index: Tensor, targets: Tensor | None = None) -> Tensor:
        """Aggregate over each target's ``k`` neighbours.

        Parameters
        ----------
        x
            Source node features ``(H, W, N_src, in_ch)``.
        edge_index
            ``(2, N_tgt·k)`` local (source, target) indices, sorted by target, slot order within.
        targets
            ``(N_tgt,)`` frame indices of the targets (selects per-node weights); None: all
            frames in order.

        Returns
        -------
        Tensor
            ``(H, W, N_tgt, out_ch)``.
        """
        n_tgt = edge_index.shape[1] // self.k
        if edge_index.shape[1] != n_tgt * self.k:
            raise ValueError("NeighbourConv needs exactly k edges per target, sorted by target")
        if self.slot_first and not self.node_specific:
            return self._slot_first(x, edge_index[0].view(n_tgt, self.k))
        return self.propagate(edge_index, x=x, size=(x.shape[2], n_tgt), targets=targets)

    def _slot_first(self, x: Tensor, sources: Tensor) -> Tensor:
        """Per-slot weights: ``y_i = Σ_s (W_s * x)[sources[i, s]] / k``, by linearity."""
        h, w, n_src, c = x.shape
        n_tgt, k, ks, o = sources.shape[0], self.k, self.kernel_size, self.out_ch
        # (out, k, in, ks, ks) → (k·out, in, ks, ks), slot-major: channel s·out + c
        wt = self.slot_weight[0].transpose(0, 1).reshape(k * o, self.in_ch, ks, ks) / k
        b = None if self.bias is None else self.bias.reshape(k * o) / k
        if self.channels_last:
            # (n_src, C, H, W) in channels-last memory (n_src, H, W, C), channels-last weights:
            # oneDNN's channels-last kernels ran this convolution's forward and backward 1.8×
            # faster than NCHW on two CPU cores (96² × 16 frames, 24 → 72 channels)
            xb = x.permute(2, 0, 1, 3).contiguous().permute(0, 3, 1, 2)
            y = F.conv2d(xb, wt.contiguous(memory_format=torch.channels_last), b, padding=ks // 2)
            # memory (n_src, H, W, k, out) → rows (source, slot), columns (H, W, out)
            y = y.permute(0, 2, 3, 1).reshape(n_src, h * w, k, o).transpose(1, 2)
            y = y.reshape(n_src * k, h * w * o)
        else:
            xb = x.permute(2, 3, 0, 1).contiguous()  # (n_src, C, H, W), rows contiguous
            y = F.conv2d(xb, wt, b, padding=ks // 2).view(n_src * k, o * h * w)
        # gather-sum as one product with the 0/1 matrix of (target, (source, slot)) pairs: its
        # backward is one product too (an index_select's is a zero fill, a copy of the k-fold
        # expanded gradient and a scatter-add: 0.7 s of a 6.5 s step at 128² × 20 frames)
        slot = torch.arange(k, device=sources.device)
        rows = sources * k + slot  # row of (target i, slot s) in y
        pick = torch.zeros(n_tgt, n_src * k, dtype=y.dtype, device=y.device)
        pick.scatter_(1, rows, 1.0)
        out = pick @ y
        if self.channels_last:
            return out.view(n_tgt, h, w, o).permute(1, 2, 0, 3).contiguous()  # (H, W, n_tgt, out)
        return out.view(n_tgt, o, h, w).permute(2, 3, 0, 1).contiguous()

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def aggregate(  # type: ignore[override]
        self, inputs: Tensor, index: Tensor, dim_size: int, targets: Tensor | None
    ) -> Tensor:
        # the edges come from knn_edge_index, sorted by target with k per target by
        # construction; checking their values here would make a GPU wait every convolution
        n, k, ks = dim_size, self.k, self.kernel_size
        w = self.weight.view(self.n_nodes, self.out_ch, k * self.in_ch, ks, ks)
        b: Tensor | None = self.bias
        if self.node_specific:
            w, b = take(w, targets), None if b is None else take(b, targets)
        else:
            w, b = w.expand(n, -1, -1, -1, -1), None if b is None else b.expand(n, -1, -1)
        # mean over slots: (sum_s W_s * x_s) / k + mean_s b_s, all targets in one grouped conv
        w = (w.reshape(n * self.out_ch, k * self.in_ch, ks, ks) / k).contiguous(
            memory_format=torch.channels_last
        )
        b = None if b is None else b.mean(dim=1).reshape(-1)
        y = F.conv2d(grouped_view(inputs), w, b, padding=ks // 2, groups=n)
        return node_view(y, n)


def _node_batch_norm(v: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Batch norm over nodes and space, per channel, of node features ``(H, W, N, C)``."""
    h, w, n, c = v.shape
    # seen as a channels-last (1, C, H·W·N, 1) image, which the channels-last batch-norm
    # kernels handle well (the (H·W·N, C) matrix form was 20 % of a GIP step on an H100)
    x = v.reshape(1, h * w * n, 1, c).permute(0, 3, 1, 2)
    y = batch_norm_train(x, weight, bias, eps)
    return y.permute(0, 2, 3, 1).reshape(h, w, n, c)


class GraphStage(nn.Module):
    """GIP's graph network: aggregation, update, per-frame residual blocks, output head.

    ::

        h_i = Norm(ELU(mean_s W^agg_is * x_j(i,s)))                    aggregation
        a_i = InstanceNorm(ELU(W^0_i * x_i)),  u_i = [a_i, h_i]
        y_i = ELU(mean_s W^upd_is * u_j(i,s))                          update
        y_i = y_i + InstanceNorm(ELU(W^r_i * y_i))   (twice)           residual blocks
        out_i = conv1x1(y_i)                                           output (linear, shared)

    GIP: ``node_specific=True`` and ``per_frame_heads=True`` (every weight per node; graph
    convolutions per node and slot) and ``agg_norm="batch"`` (batch normalisation over all nodes,
    with affine). With ``node_specific=False`` the graph convolutions are per slot and shared by
    all nodes; ``agg_norm="instance"`` makes each frame's output independent of which other frames
    are in the batch (given the graph).

    Parameters
    ----------
    n_frames
        Number of frames ``T``.
    channels
        Channels ``C`` of the stage-1 features.
    k
        Slots per node (clipped to ``T``).
    node_specific
        Per-(node, slot) weights in the two graph convolutions (GIP) or per-slot weights shared
        by all nodes.
    per_frame_heads
        Per-frame weights in the update's input convolution and the residual blocks (GIP).
    shared_base
        Those per-frame weights as a shared base plus a per-frame part that starts at zero
        (see :class:`~mridip.models.cnn.PerFrameConv2d`).
    frame_scale
        Scale of the per-frame parts with a shared base.
    agg_norm
        ``"batch"`` or ``"instance"``.
    out_ch
        Output channels (2: real and imaginary part).
    """

    def __init__(
        self,
        n_frames: int,
        channels: int,
        k: int,
        *,
        node_specific: bool = True,
        per_frame_heads: bool = True,
        agg_norm: str = "batch",
        out_ch: int = 2,
        shared_base: bool = False,
        frame_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if agg_norm not in ("batch", "instance"):
            raise ConfigError(f"unknown aggregation norm {agg_norm!r}: use 'batch' or 'instance'")
        self.n_frames, self.k, self.channels = n_frames, min(k, n_frames), channels
        per = n_frames if node_specific else None
        n_conv = n_frames if per_frame_heads else 1
        c = channels
        self.agg = NeighbourConv(c, c, self.k, per)
        self.agg_norm = agg_norm
        if agg_norm == "batch":
            self.agg_weight = nn.Parameter(torch.ones(c))
            self.agg_bias = nn.Parameter(torch.zeros(c))

        def per_frame_conv() -> PerFrameConv2d:
            return PerFrameConv2d(n_conv, c, c, shared_base=shared_base, frame_scale=frame_scale)

        self.upd_in = per_frame_conv()
        # GIP's update convolves [a, h] (2C channels); here the two halves are two convolutions
        # summed (same weights and arithmetic; their backward ran 1.6× faster than one over the
        # concatenation on two CPU cores). upd_a carries the bias.
        fan_in = 2 * c * 9
        self.upd_a = NeighbourConv(c, c, self.k, per, fan_in=fan_in)
        self.upd_h = NeighbourConv(c, c, self.k, per, bias=False, fan_in=fan_in)
        self.res = nn.ModuleList([per_frame_conv() for _ in range(2)])
        self.head = nn.Linear(c, out_ch)  # 1×1 convolution shared by all frames

    def reset_parameters(self, std: float | None = None) -> None:
        """Re-initialise the convolutions (``N(0, std²)`` when given, as GIP does)."""
        for m in (self.agg, self.upd_a, self.upd_h, self.upd_in, *self.res):
            m.reset_parameters(std)
        if std is not None:
            with torch.no_grad():
                self.head.weight.normal_(0.0, std)
                self.head.bias.zero_()

    def forward(
        self,
        x: Tensor,
        neighbours: Tensor,
        nodes: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        host: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Run the graph network for the target frames.

        Parameters
        ----------
        x
            Grouped stage-1 features ``(1, n·C, H, W)`` of the frames ``nodes``.
        neighbours
            ``(T, k)`` neighbour table in frame indices.
        nodes
            ``(n,)`` sorted frame indices that ``x`` holds; they must include the targets' two-hop
            neighbourhood. None: all ``T`` frames.
        targets
            ``(B,)`` frames to produce; None: all ``T`` frames in order.
        host
            CPU copies of ``neighbours`` and ``targets``: the targets' neighbourhood is then
            found on the host, without reading from the device (read once otherwise).

        Returns
        -------
        Tensor
            ``(H, W, B, out_ch)`` node outputs.
        """
        t = self.n_frames
        device = neighbours.device
        n = t if nodes is None else int(nodes.numel())
        xv = node_view(x, n)
        pos = torch.arange(t, device=device)
        if nodes is not None:
            pos = torch.full((t,), -1, dtype=torch.long, device=device)
            pos[nodes] = torch.arange(n, device=device)

        # one-hop set: the nodes whose aggregate the targets' update reads
        if targets is None:
            hop1: Tensor | None = None
            n1 = t
        else:
            nb_h, t_h = host if host is not None else (neighbours.cpu(), targets.cpu())
            hop1 = torch.unique(torch.cat([t_h, nb_h[t_h].reshape(-1)]))
            n1 = int(hop1.numel())
            hop1 = None if n1 == t else hop1.to(device, non_blocking=True)

        nb1 = neighbours if hop1 is None else neighbours[hop1]
        edges1 = knn_edge_index(pos[nb1])
        h = F.elu(self.agg(xv, edges1, hop1))
        if self.agg_norm == "batch":
            h = _node_batch_norm(h, self.agg_weight, self.agg_bias)
        else:
            h = node_view(instance_norm(grouped_view(h)), n1)

        x1 = grouped_view(xv if n1 == n else xv.index_select(2, pos[hop1]))
        a = node_view(instance_norm(F.elu(self.upd_in(x1, hop1, n1))), n1)

        pos1 = torch.arange(t, device=device)
        if hop1 is not None:
            pos1 = torch.full((t,), -1, dtype=torch.long, device=device)
            pos1[hop1] = torch.arange(n1, device=device)
        nb2 = neighbours if targets is None else neighbours[targets]
        edges2 = knn_edge_index(pos1[nb2])
        y = F.elu(self.upd_a(a, edges2, targets) + self.upd_h(h, edges2, targets))

        b = t if targets is None else int(targets.numel())
        g = grouped_view(y)
        for conv in self.res:
            g = g + instance_norm(F.elu(conv(g, targets, b)))
        return self.head(node_view(g, b))


def stage1_descriptors(features: FrameFeatures, x: Tensor, n: int) -> Tensor:
    """kNN descriptors ``(n, F)`` of grouped stage-1 features ``(1, n·C, H, W)``."""
    return features(frames_view(x.detach(), n).contiguous())


def use_slot_first(module: nn.Module, enabled: bool = True) -> None:
    """Switch every per-slot :class:`NeighbourConv` in ``module`` between the slot-first path
    (default) and the earlier grouped-convolution path (same weights, same result)."""
    for m in module.modules():
        if isinstance(m, NeighbourConv):
            m.slot_first = enabled


def use_fast_paths(module: nn.Module, enabled: bool = True) -> None:
    """Switch every fast path of ``module`` on (default) or back to the earlier code.

    The slot-first per-slot graph convolutions (:func:`use_slot_first`) in channels-last memory
    (:attr:`NeighbourConv.channels_last`) and the split backward of the per-frame convolutions
    (:attr:`~mridip.models.cnn.PerFrameConv2d.split_backward`);
    ``enabled=False`` restores the grouped graph convolutions and plain autograd, which
    ``mridip bench --only fit`` times side by side with the fast paths (same weights, same
    image up to rounding).
    """
    use_slot_first(module, enabled)
    for m in module.modules():
        if isinstance(m, NeighbourConv):
            m.channels_last = enabled
        if isinstance(m, PerFrameConv2d):
            m.split_backward = enabled
