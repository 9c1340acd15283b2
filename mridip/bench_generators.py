"""Speed of one fitting step (forward, backward, Adam) of the generators, as ratios to peers.

:func:`generator_step_benchmark` times every preset, the whole ``gip`` generator against a
re-creation of the GIP reference code's structure (Python loops over frames, one batch-1
convolution per node and neighbour on sliced tensors), and the per-frame CNN stage batched
against a Python loop over frames. Results are plain dicts of seconds, ratios and MiB, for
``mridip bench``; compare numbers only within one run.

Bench-only code beside :mod:`mridip.bench`: the reference re-creation of GIP is not a model a
user fits, so the library (``mridip.models``, the methods) never imports this module.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mridip._allocator import keep_freed_memory
from mridip.errors import ConfigError
from mridip.models.cnn import PerFrameDecoder, level_sizes
from mridip.models.generators import PRESETS, auto_width, build_generator

# ---------------------------------------------------------------------------------------------
# the reference structure


class _RefBlock(nn.Module):
    """Upsample (optional) → conv3 → ELU → InstanceNorm, one frame."""

    def __init__(self, cin: int, cout: int, size: tuple[int, int] | None) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.InstanceNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.norm(F.elu(self.conv(x)))


class _RefResidual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.InstanceNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.elu(self.conv(x))) + x


def _reference_cnn(code_ch: int, width: int, sizes: list[tuple[int, int]]) -> nn.Sequential:
    c = [16 * width, 8 * width, 4 * width, 2 * width, width, width, width]
    ups: list[tuple[int, int] | None] = [*sizes[1:], None, None]
    return nn.Sequential(
        nn.Conv2d(code_ch, c[0], 3, padding=1),
        *(_RefBlock(c[i], c[i + 1], ups[i]) for i in range(6)),
    )


class _ReferenceStage1(nn.Module):
    z: Tensor

    """GIP's stage 1 as released: one ``nn.Sequential`` per frame, run in a Python loop."""

    def __init__(self, n_frames: int, matrix: tuple[int, int], width: int = 24, code_ch: int = 8):
        super().__init__()
        sizes = level_sizes(matrix, 4)
        self.register_buffer("z", torch.randn(1, code_ch, *sizes[0]))
        self.cnns = nn.ModuleList(_reference_cnn(code_ch, width, sizes) for _ in range(n_frames))

    def forward(self) -> Tensor:
        return torch.cat([cnn(self.z) for cnn in self.cnns])


class _ReferenceGIP(nn.Module):
    agg: Any
    upd: Any
    res: Any
    fen: Any

    """GIP's generator with the reference code's structure, for timing only.

    Per-frame CNNs in a loop; the graph convolutions as one ``nn.Conv2d`` per (node, slot)
    applied to ``x[j:j+1]`` slices, in nested Python loops; per-node residual heads in a loop.
    Same layer plan and parameter count (without the pretraining heads) as the ``gip`` preset.
    """

    def __init__(self, n_frames: int, matrix: tuple[int, int], k: int = 7, width: int = 24):
        super().__init__()
        c = width
        self.k = min(k, n_frames)
        self.stage1 = _ReferenceStage1(n_frames, matrix, width)
        self.fen = nn.ModuleList(  # conv → ReLU → conv → ReLU → conv → ReLU → conv
            [
                nn.Conv2d(c, c // 2, 5, 3, 1, bias=False),
                nn.Conv2d(c // 2, c // 2, 5, 3, 1, bias=False),
                nn.Conv2d(c // 2, c // 2, 4, 2, 1, bias=False),
                nn.Conv2d(c // 2, c // 2, 4, 2, 1, bias=False),
            ]
        )
        self.agg = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(self.k))
            for _ in range(n_frames)
        )
        self.agg_norm = nn.BatchNorm2d(c)
        self.upd0 = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(n_frames))
        self.upd = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(2 * c, c, 3, padding=1) for _ in range(self.k))
            for _ in range(n_frames)
        )
        self.res = nn.ModuleList(
            nn.Sequential(_RefResidual(c), _RefResidual(c)) for _ in range(n_frames)
        )
        self.final = nn.Conv2d(c, 2, 1)

    def forward(self) -> Tensor:
        x = self.stage1()
        with torch.no_grad():
            d = x - x.mean(dim=0, keepdim=True)
            for i, conv in enumerate(self.fen):  # stop where a kernel no longer fits (tiny images)
                if min(d.shape[-2:]) + 2 < conv.kernel_size[0]:
                    break
                d = conv(F.relu(d) if i > 0 else d)
            desc = F.normalize(d.flatten(1), dim=1)
            nbr = torch.topk(desc @ desc.T, self.k, dim=1).indices.tolist()
        n = x.shape[0]
        hid = []
        for i in range(n):
            msgs = [self.agg[i][s](x[j : j + 1]) for s, j in enumerate(nbr[i])]
            hid.append(F.elu(torch.cat(msgs).mean(dim=0, keepdim=True)))
        h = self.agg_norm(torch.cat(hid))
        tmp = []
        for i in range(n):
            a = F.instance_norm(F.elu(self.upd0[i](x[i : i + 1])))
            tmp.append(torch.cat([a, h[i : i + 1]], dim=1))
        u = torch.cat(tmp)
        out = []
        for i in range(n):
            msgs = [self.upd[i][s](u[j : j + 1]) for s, j in enumerate(nbr[i])]
            out.append(F.elu(torch.cat(msgs).mean(dim=0, keepdim=True)))
        y = torch.cat(out)
        y = self.final(torch.cat([self.res[i](y[i : i + 1]) for i in range(n)]))
        return torch.complex(y[:, 0], y[:, 1])


# ---------------------------------------------------------------------------------------------
# measuring


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc), so that RSS starts low for each case."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak memory above the starting level (MiB) while the block runs."""
    out: dict[str, float] = {}
    _release_freed_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["peak_mem_mib"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    start_rss = _rss_bytes()
    if start_rss is None:  # no /proc: the process's lifetime maximum, a coarse bound
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield out
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_mem_mib"] = max(after - before, 0) / 1024
        return
    peak = [start_rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes() or 0)
            stop.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_mem_mib"] = (peak[0] - start_rss) / 2**20


def _time_steps(
    model: nn.Module, forward: Callable[[], Tensor], steps: int, device: torch.device
) -> dict[str, Any]:
    """Median and minimum seconds of forward + backward + Adam step, after one warm-up step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        y = forward()
        loss = (y.abs() ** 2).mean() if y.is_complex() else (y**2).mean()
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with _peak_memory(device) as mem:
        step()
        sync()
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times),
        "step_min_s": min(times),
        "peak_mem_mib": round(mem["peak_mem_mib"], 1),
    }


def generator_step_benchmark(
    matrix: tuple[int, int] = (128, 128),
    n_frames: int = 18,
    steps: int = 3,
    device: str | torch.device = "cpu",
    presets: Sequence[str] = ("dip", "tddip", "gip", "mridip"),
    *,
    reference: bool = True,
    stage1: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Time one fitting step of the generators and of their reference structures.

    Parameters
    ----------
    matrix
        ``(Ny, Nx)``.
    n_frames
        ``T``; all frames are computed in every step.
    steps
        Timed steps per case (after one warm-up step); the median and minimum are reported.
    device
        ``"cpu"``, ``"cuda"``, …
    presets
        Presets to time.
    reference
        Also time the re-created GIP reference structure against the ``gip`` preset.
    stage1
        Also time GIP's per-frame CNN stage batched against a Python loop over frames.
    seed
        Seed of the weights.

    Raises
    ------
    ConfigError
        An unknown preset.

    Returns
    -------
    dict
        ``{"cpu_heap_kept", "device", "threads", "torch", "matrix", "n_frames", "steps",
        "presets": {name: {"params", "step_s", "step_min_s", "peak_mem_mib"}},
        "gip_vs_reference": {"gip", "reference", "speedup"},
        "stage1_batched_vs_loop": {"batched", "loop", "speedup"}}``; ``cpu_heap_kept``: whether
        freed memory stays in the heap (:func:`mridip._allocator.keep_freed_memory`).
        ``speedup`` is the peer's median step time over ours. Peak memory is the rise above
        the level before the case (CUDA: allocated memory; CPU: sampled resident set size).
    """
    dev = torch.device(device)
    # as in a fit (Reconstructor.fit): freed CPU memory stays in the heap, for ours and the peer
    kept = dev.type == "cpu" and keep_freed_memory()
    times = torch.arange(n_frames, dtype=torch.float64) * 0.05
    result: dict[str, Any] = {
        "cpu_heap_kept": kept,
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matrix": list(matrix),
        "n_frames": n_frames,
        "steps": steps,
        "presets": {},
    }

    def run(model: nn.Module, forward: Callable[[], Tensor] | None = None) -> dict[str, Any]:
        model = model.to(dev)
        out = _time_steps(model, forward or model, steps, dev)
        del model
        return out

    for name in presets:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
        model = build_generator(name, matrix=matrix, frame_times=times, seed=seed)
        result["presets"][name] = run(model)

    if reference:
        # the reference's channel plan is GIP's 128² one at every matrix: compare like with like
        ours = result["presets"].get("gip")
        if ours is None or auto_width("gip", matrix) != 24:
            ours = run(
                build_generator("gip", matrix=matrix, frame_times=times, seed=seed, width=24)
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ref_model = _ReferenceGIP(n_frames, matrix)
        ref = run(ref_model)
        result["gip_vs_reference"] = {
            "gip": ours,
            "reference": ref,
            "speedup": ref["step_s"] / ours["step_s"],
        }

    if stage1:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            batched = PerFrameDecoder(n_frames, 8, matrix)
            looped = _ReferenceStage1(n_frames, matrix)
        z = torch.randn(1, 8, *batched.sizes[0], device=dev)
        b = run(batched, lambda: batched(z))
        lo = run(looped)
        result["stage1_batched_vs_loop"] = {
            "batched": b,
            "loop": lo,
            "speedup": lo["step_s"] / b["step_s"],
        }
    return result


def main() -> None:  # pragma: no cover - manual use: python -m mridip.bench_generators
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--matrix", type=int, default=128)
    p.add_argument("--frames", type=int, default=18)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", default="dip,tddip,gip,mridip")
    a = p.parse_args()
    res = generator_step_benchmark(
        (a.matrix, a.matrix), a.frames, a.steps, a.device, tuple(filter(None, a.presets.split(",")))
    )
    print(json.dumps(res, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
