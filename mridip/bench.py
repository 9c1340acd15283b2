"""``mridip bench``: speed on this machine, always as a ratio against a peer in the same run.

Sections
--------
operator
    The data term of a DIP fit, value and gradient, three ways on the same data: torchkbnufft
    forward + adjoint with autograd (the references' way), the Toeplitz normal operator
    (``Re⟨x, AᴴAx⟩ − 2 Re⟨x, Aᴴy⟩``), and the floor: the two FFTs on the 2× grid alone.
generator
    Forward + backward + Adam of the generators (added with the models).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """CPU model and cores, torch version and threads, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def operator_benchmark(
    matrix: int = 128,
    coils: int = 8,
    frames: int = 20,
    spokes: int = 13,
    device: str = "cpu",
    repeats: int = 3,
) -> dict[str, Any]:
    """Seconds per loss-and-gradient evaluation of the radial data term, three ways.

    Returns
    -------
    dict
        ``nufft_autograd_s``, ``toeplitz_s``, ``fft_floor_s``, ``setup_kernel_s`` and the
        ratios ``speedup_toeplitz_vs_nufft`` and ``toeplitz_over_floor``.
    """
    from mridip import phantoms, sampling
    from mridip.operators import NonCartesianSense, normal_loss

    dev = torch.device(device)
    n = matrix
    traj, _ = sampling.golden_angle_radial(n, spokes, frames)
    maps = phantoms.coil_maps((n, n), coils).to(dev)
    truth = phantoms.cine_phantom((n, n), frames).image.to(dev)
    t0 = time.perf_counter()
    op = NonCartesianSense(maps, traj.to(dev))
    setup = time.perf_counter() - t0
    y = op.forward(truth)
    b = op.adjoint(y)
    x = (0.5 * truth).detach().requires_grad_(True)
    # the peer: torchkbnufft as the reference implementations use it (default accuracy)
    import torchkbnufft as tkbn

    fwd = tkbn.KbNufft(im_size=(n, n), grid_size=(2 * n, 2 * n)).to(dev)
    tr = traj.to(dev)

    def nufft_step() -> None:
        x.grad = None
        k = fwd(x[:, None] * maps[None], tr, norm="ortho")
        loss = (k - y).abs().pow(2).sum()
        loss.backward()

    def toeplitz_step() -> None:
        x.grad = None
        normal_loss(op, x, b).backward()

    grid = torch.zeros(frames, coils, 2 * n, 2 * n, dtype=torch.complex64, device=dev)

    def floor_step() -> None:
        torch.fft.ifft2(torch.fft.fft2(grid))

    t_nufft = _time(nufft_step, dev, repeats)
    t_toep = _time(toeplitz_step, dev, repeats)
    t_floor = _time(floor_step, dev, repeats)
    return {
        "size": {"matrix": n, "coils": coils, "frames": frames, "spokes": spokes},
        "nufft_autograd_s": t_nufft,
        "toeplitz_s": t_toep,
        "fft_floor_s": t_floor,
        "setup_kernel_s": setup,
        "speedup_toeplitz_vs_nufft": t_nufft / t_toep,
        "toeplitz_over_floor": t_toep / t_floor,
    }


def _operator_section(quick: bool, device: str) -> list[dict[str, Any]]:
    rows = []
    for n in [64] if quick else [128, 256]:
        r = operator_benchmark(matrix=n, frames=8 if quick else 20, device=device)
        rows.append(r)
        print(
            f"operator {n}²: nufft+autograd {r['nufft_autograd_s']:.3f} s, "
            f"toeplitz {r['toeplitz_s']:.3f} s ({r['speedup_toeplitz_vs_nufft']:.1f}× faster), "
            f"FFT floor {r['fft_floor_s']:.3f} s, kernel set-up {r['setup_kernel_s']:.2f} s"
        )
    return rows


#: Benchmark sections by name: ``fn(quick, device) -> JSON-able``; each prints its own lines.
SECTIONS: dict[str, Callable[[bool, str], Any]] = {"operator": _operator_section}


def run_bench(quick: bool = False, device: str = "cpu", only: str | None = None) -> dict[str, Any]:
    """Run the benchmark sections (all, or the comma-separated ``only``) into one report.

    Raises
    ------
    ConfigError
        For an unknown section name or an unavailable device.
    """
    from mridip.errors import ConfigError
    from mridip.methods import resolve_device

    dev = resolve_device(device)
    names = list(SECTIONS) if not only else [s.strip() for s in only.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown bench section(s) {unknown}; available: {', '.join(SECTIONS)}")
    report: dict[str, Any] = {"machine": machine(), "device": str(dev), "quick": quick}
    for name in names:
        t0 = time.perf_counter()
        report[name] = SECTIONS[name](quick, str(dev))
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - t0
    return report
