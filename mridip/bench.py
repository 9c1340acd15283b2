"""``mridip bench``: speed on this machine, always as a ratio against a peer in the same run.

Sections
--------
operator
    The data term of a DIP fit, value and gradient, three ways on the same data: torchkbnufft
    forward + adjoint with autograd (the references' way), the Toeplitz normal operator
    (``Re⟨x, AᴴAx⟩ − 2 Re⟨x, Aᴴy⟩``), and the floor: the two FFTs on the 2× grid alone.
coils, loader, baselines
    Coil-map estimators against ``bart ecalib``; the raw-file reader against reading the bytes;
    the CS baselines against BART ``pics`` at 128².
generator
    Forward + backward + Adam of each preset; ``gip`` against the reference's structure.
fit
    Seconds per DIP fit step of each preset, with mridip's Toeplitz data term and with
    torchkbnufft's forward NUFFT in the loss (the references' way).
quality
    Time to quality: every method (CS baselines, BART, the DIP presets) on one simulated radial
    cine, with wall time, PSNR, SSIM, peak memory and PSNR along the DIP fits.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from mridip._allocator import keep_freed_memory


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


def _simulated_scan(cfg: Any) -> Any:
    """Simulate ``cfg``, write it as a raw file and load it back as a user would."""
    import tempfile

    from mridip.preprocess import load
    from mridip.simulate import simulate, write_simulation

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cine.h5")
        write_simulation(path, simulate(cfg))
        return load(path)


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
    extra: dict[str, Any] = {}
    with torch.no_grad():
        coil_images = truth[:, None] * maps[None]  # (T, C, N, N)
        extra["torchkbnufft_forward_s"] = _time(
            lambda: fwd(coil_images, tr, norm="ortho"), dev, repeats
        )
        fin = _finufft_forward(coil_images, tr)
        if fin is not None:
            extra[f"{fin[0]}_forward_s"] = _time(fin[1], dev, repeats)
    return {
        "size": {"matrix": n, "coils": coils, "frames": frames, "spokes": spokes},
        "nufft_autograd_s": t_nufft,
        "toeplitz_s": t_toep,
        "fft_floor_s": t_floor,
        "setup_kernel_s": setup,
        "speedup_toeplitz_vs_nufft": t_nufft / t_toep,
        "toeplitz_over_floor": t_toep / t_floor,
        **extra,
    }


def _finufft_forward(
    images: torch.Tensor, traj: torch.Tensor
) -> tuple[str, Callable[[], Any]] | None:
    """A forward NUFFT of ``images`` ``(T, C, N, N)`` on ``traj`` ``(T, 2, K)`` by cufinufft (CUDA
    tensors) or finufft (CPU), eps 1e-3, one plan per frame; None when it is not installed.
    Timing only: the set-up transforms that a finufft backend would speed up (DESIGN §5)."""
    t, c = images.shape[:2]
    size = tuple(images.shape[-2:])
    try:
        if images.is_cuda:
            import cufinufft

            plans = []
            for i in range(t):
                plan = cufinufft.Plan(2, size, n_trans=c, eps=1e-3, dtype="complex64")
                plan.setpts(traj[i, 0].contiguous(), traj[i, 1].contiguous())
                plans.append(plan)
            data = [images[i].contiguous() for i in range(t)]
            return "cufinufft", lambda: [p.execute(d) for p, d in zip(plans, data, strict=True)]
        import finufft
    except ImportError:
        return None
    pts = traj.cpu().double().numpy()
    arr = images.cpu().numpy()

    def run() -> None:
        for i in range(t):
            finufft.nufft2d2(pts[i, 0], pts[i, 1], arr[i], eps=1e-3)

    return "finufft", run


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
        for lib in ("finufft", "cufinufft"):
            if f"{lib}_forward_s" in r:
                print(
                    f"operator {n}²: forward NUFFT of all coil images: {lib} "
                    f"{r[f'{lib}_forward_s']:.3f} s vs torchkbnufft "
                    f"{r['torchkbnufft_forward_s']:.3f} s"
                )
    return rows


#: Benchmark sections by name: ``fn(quick, device) -> JSON-able``; each prints its own lines.
#: The sections in :data:`METHOD_SECTIONS` also take ``methods=`` (a tuple of method names).
SECTIONS: dict[str, Callable[..., Any]] = {"operator": _operator_section}

#: Sections that run whole reconstructions and accept ``bench --methods``.
METHOD_SECTIONS = ("quality", "stop")

#: Sections a full run leaves out unless named in ``--only``: the time-to-stop fits at 128² take
#: hours on a CPU. ``--quick`` runs them at its small sizes like every other section.
OPT_IN_SECTIONS = ("stop",)


def bench_plan(
    quick: bool, only: str | None, methods: str | None
) -> tuple[list[str], dict[str, Any]]:
    """The sections :func:`run_bench` runs, and the keywords for :data:`METHOD_SECTIONS`.

    Raises
    ------
    ConfigError
        For an unknown section or method name.
    """
    from mridip.errors import ConfigError
    from mridip.methods import METHODS

    if only:
        names = [s.strip() for s in only.split(",") if s.strip()]
    else:
        names = [n for n in SECTIONS if quick or n not in OPT_IN_SECTIONS]
    unknown = [n for n in names if n not in SECTIONS]
    if not names:
        raise ConfigError(f"--only names no section; available: {', '.join(SECTIONS)}")
    if unknown:
        raise ConfigError(f"unknown bench section(s) {unknown}; available: {', '.join(SECTIONS)}")
    if not methods:
        return names, {}
    if not any(n in METHOD_SECTIONS for n in names):
        raise ConfigError(f"--methods applies to the {' and '.join(METHOD_SECTIONS)} sections only")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise ConfigError(f"unknown method(s) {bad}; available: {', '.join(METHODS)}")
    return names, {"methods": chosen}


def run_bench(
    quick: bool = False,
    device: str = "cpu",
    only: str | None = None,
    methods: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark sections into one report.

    ``only`` names sections (comma-separated); without it every section runs, except
    :data:`OPT_IN_SECTIONS` in a full (not ``quick``) run. ``methods`` (comma-separated method
    names) restricts the sections that run reconstructions (:data:`METHOD_SECTIONS`).

    Raises
    ------
    ConfigError
        For an unknown section or method name, or an unavailable device.
    """
    from mridip.methods import resolve_device

    names, picked = bench_plan(quick, only, methods)
    dev = resolve_device(device)
    report: dict[str, Any] = {"machine": machine(), "device": str(dev), "quick": quick}
    for name in names:
        t0 = time.perf_counter()
        kw = picked if name in METHOD_SECTIONS else {}
        report[name] = SECTIONS[name](quick, str(dev), **kw)
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - t0
    return report


# -- coil maps: mridip's estimators against BART's ecalib -----------------------------------------
def bart_ecalib(calibration: torch.Tensor, calib: int = 24) -> tuple[torch.Tensor, float]:
    """Run ``bart ecalib -m1 -c0 -r calib`` on centred k-space ``(C, Ny, Nx)``.

    Returns the maps ``(C, Ny, Nx)`` and the wall time of the ``bart`` process (writing and
    reading the ``.cfl`` files not included).

    Raises
    ------
    ConfigError
        When ``bart`` is not installed.
    """
    import subprocess
    import tempfile

    from mridip.bart import read_cfl, require_bart, write_cfl

    exe = require_bart()
    c, ny, nx = calibration.shape
    with tempfile.TemporaryDirectory() as tmp:
        k_in, m_out = os.path.join(tmp, "k"), os.path.join(tmp, "m")
        # a C-ordered (C, Ny, Nx) array is BART's column-major [Nx, Ny, 1, C]
        write_cfl(k_in, calibration.detach().cpu().numpy(), [nx, ny, 1, c])
        t0 = time.perf_counter()
        subprocess.run(
            [exe, "ecalib", "-m1", "-c0", "-r", str(calib), k_in, m_out],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - t0
        data, _ = read_cfl(m_out)
    return torch.as_tensor(data.reshape(c, ny, nx).copy(), dtype=torch.complex64), seconds


def coils_benchmark(
    matrix: int = 64,
    frames: int = 12,
    coils: int = 8,
    acceleration: float = 6.0,
    noise: float = 0.01,
    device: str = "cpu",
    repeats: int = 3,
    seed: int = 0,
    trajectory: str = "cartesian",
    sense: bool = True,
) -> dict[str, Any]:
    """Time and accuracy of mridip's coil-map estimators and ``bart ecalib`` on the same data.

    A simulated cine (variable-density Cartesian masks of acceleration ``acceleration``, or 13
    golden-angle spokes per frame; correlated receiver noise) is written and loaded as a
    user's file would be; every estimator starts from the same time-averaged k-space (its
    time is reported apart, ``time_average_s``). Agreement is the mean over the object (true
    magnitude ≥ 5 % of its peak in some frame) of the per-voxel ``|Σ ŝ* s| / (‖ŝ‖‖s‖)``
    (:func:`mridip.coils.map_agreement`), with the true maps and with BART's. With ``sense``,
    ``psnr`` is that of CG-SENSE (20 iterations, λ = 0.01, as ``--method cgsense``) with each
    set of maps after :func:`mridip.coils.estimate_maps`' normalisation and object mask (BART's
    too), beside ``psnr_true_maps`` (the stored maps) and ``psnr_true_maps_masked`` (the same
    with the object mask). BART is skipped (``bart: null``) when ``bart`` is not on the PATH.
    """
    import copy

    import numpy as np

    from mridip import coils as cm
    from mridip.bart import bart_executable
    from mridip.baselines import cg_sense
    from mridip.metrics import evaluate
    from mridip.operators import for_kspace
    from mridip.simulate import SimulationConfig

    dev = torch.device(device)
    cfg = SimulationConfig(
        kind="cine",
        trajectory=trajectory,
        matrix=matrix,
        frames=frames,
        coils=coils,
        acceleration=acceleration,
        noise=noise,
        seed=seed,
    )
    scan = _simulated_scan(cfg)
    ks = scan.kspace
    ks = ks.to(dev)
    assert scan.maps is not None and scan.reference is not None
    truth = scan.maps.to(dev)
    peak = np.abs(scan.reference)
    inside = torch.as_tensor(peak.max(0) >= 0.05 * peak.max(), device=dev)
    width = min(24, matrix)
    win = cm._hann_window(ks.matrix, width, dev)
    t0 = time.perf_counter()
    k_avg = cm.time_averaged_kspace(ks, fill_width=width)
    t_avg = time.perf_counter() - t0
    imgs = cm.ifft2c(k_avg * win)
    ours = {
        "espirit": lambda: cm.espirit_maps(k_avg, calib=width),
        "walsh": lambda: cm.walsh_maps(imgs),
        "inati": lambda: cm.inati_maps(imgs),
        "lowres": lambda: cm._unit(imgs),
    }
    import sigpy.mri.app  # noqa: F401  (imported before the clock starts)

    rows: dict[str, Any] = {}
    maps: dict[str, torch.Tensor] = {}
    for name, fn in ours.items():
        t0 = time.perf_counter()
        maps[name] = fn()  # the first call is timed too: ESPIRiT's cost is mostly not warm-up
        first = time.perf_counter() - t0
        again = _time(fn, dev, repeats - 1, warmup=0) if repeats > 1 else first
        rows[name] = {"seconds": min(first, again)}
    have_bart = bart_executable() is not None
    if have_bart:
        runs = [bart_ecalib(k_avg, width) for _ in range(repeats)]
        maps["bart"] = runs[0][0].to(dev)
        rows["bart"] = {"seconds": min(s for _, s in runs)}
    for name, m in maps.items():
        rows[name]["agreement_truth"] = float(cm.map_agreement(m, truth)[inside].mean())
        if have_bart:
            rows[name]["agreement_bart"] = float(cm.map_agreement(m, maps["bart"])[inside].mean())
            rows[name]["time_vs_bart"] = rows[name]["seconds"] / rows["bart"]["seconds"]
    size = {"matrix": matrix, "frames": frames, "coils": coils, "trajectory": trajectory}
    size["acceleration"] = round(ks.acceleration, 2)
    out: dict[str, Any] = {
        "size": size,
        "time_average_s": t_avg,
        "bart": f"ecalib -m1 -c0 -r {width}" if have_bart else None,
        "methods": rows,
    }
    if sense:
        op = for_kspace(ks, truth)  # its Toeplitz kernels serve every set of maps
        r = cm.receiver_transform(ks)
        obj = cm.object_mask(imgs)

        def psnr(m: torch.Tensor) -> float:
            shared = copy.copy(op)
            shared.maps = m
            image = cg_sense(ks, m, iters=20, lam=0.01, operator=shared).image
            return evaluate(image.cpu(), scan.reference)["psnr"]

        for name, m in maps.items():
            rows[name]["psnr"] = psnr(cm._normalise(m, r) * obj)
        out["psnr_true_maps"] = psnr(truth)
        out["psnr_true_maps_masked"] = psnr(truth * obj)
    return out


def _coils_section(quick: bool, device: str) -> list[dict[str, Any]]:
    cases = (
        [("cartesian", 48)] if quick else [("cartesian", 64), ("radial", 64), ("cartesian", 128)]
    )
    rows = []
    for trajectory, n in cases:
        r = coils_benchmark(
            matrix=n,
            frames=8 if quick else 12,
            coils=6 if quick else 8,
            device=device,
            repeats=1 if quick else 3,
            trajectory=trajectory,
        )
        rows.append(r)
        print(
            f"coils {trajectory} {n}²: time average {r['time_average_s']:.3f} s; CG-SENSE with "
            f"true maps {r['psnr_true_maps']:.2f} dB, masked {r['psnr_true_maps_masked']:.2f} dB"
        )
        for k, v in r["methods"].items():
            print(
                f"  {k:8s} {v['seconds']:.3f} s"
                + (f" ({v['time_vs_bart']:.2f}× bart)" if "time_vs_bart" in v else "")
                + f", agreement {v['agreement_truth']:.4f}"
                + (f" (with bart {v['agreement_bart']:.4f})" if "agreement_bart" in v else "")
                + f", CG-SENSE {v['psnr']:.2f} dB"
            )
        if r["bart"] is None:
            print("coils: bart not found, skipped")
    return rows


SECTIONS["coils"] = _coils_section


# -- loader: reading a large raw file against reading its bytes -----------------------------------
def _write_bulk_raw(
    path: str, frames: int, lines: int, coils: int, samples: int, noise_scans: int = 8
) -> int:
    """A Cartesian real-time series as one ISMRMRD table, written with h5py in one call."""
    import h5py
    import ismrmrd
    import numpy as np

    rng = np.random.default_rng(0)
    n = noise_scans + frames * lines
    rows = np.zeros(n, ismrmrd.hdf5.acquisition_dtype)
    h = rows["head"]
    h["version"], h["active_channels"], h["available_channels"] = 1, coils, coils
    h["number_of_samples"], h["center_sample"], h["sample_time_us"] = samples, samples // 2, 2.5
    h["scan_counter"] = np.arange(n)
    h["acquisition_time_stamp"] = np.arange(n)
    h["flags"][:noise_scans] = 1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)
    h["idx"]["kspace_encode_step_1"][noise_scans:] = np.tile(np.arange(lines), frames)
    h["idx"]["repetition"][noise_scans:] = np.repeat(np.arange(frames), lines)
    block = rng.standard_normal((n, coils * samples * 2)).astype(np.float32)
    line = h["idx"]["kspace_encode_step_1"].astype(np.float32)
    block[noise_scans:] *= 1 + 20 * np.exp(-((line[noise_scans:, None] - lines // 2) ** 2) / 8)
    data, traj = np.empty(n, object), np.empty(n, object)
    for i in range(n):  # set-up, not measured
        data[i], traj[i] = block[i], np.zeros(0, np.float32)
    rows["data"], rows["traj"] = data, traj
    os_ = 2
    xml = (
        '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
        "</experimentalConditions><encoding><encodedSpace><matrixSize>"
        f"<x>{samples}</x><y>{lines}</y><z>1</z></matrixSize><fieldOfView_mm><x>{300 * os_}</x>"
        "<y>300</y><z>6</z></fieldOfView_mm></encodedSpace><reconSpace><matrixSize>"
        f"<x>{samples // os_}</x><y>{lines}</y><z>1</z></matrixSize><fieldOfView_mm><x>300</x>"
        "<y>300</y><z>6</z></fieldOfView_mm></reconSpace><encodingLimits>"
        f"<kspace_encoding_step_1><minimum>0</minimum><maximum>{lines - 1}</maximum>"
        f"<center>{lines // 2}</center></kspace_encoding_step_1></encodingLimits>"
        "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
    )
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset/xml", data=[xml.encode()], dtype=h5py.string_dtype())
        f.create_dataset("dataset/data", data=rows, maxshape=(None,), chunks=True)
    return n


def _evict(path: str) -> bool:
    """Drop one file's pages from the page cache (posix_fadvise; no privileges needed)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def loader_benchmark(
    frames: int = 192, lines: int = 64, coils: int = 16, samples: int = 128, repeats: int = 3
) -> dict[str, Any]:
    """Seconds to read and pre-process a large raw file, against reading its bytes.

    The file (``frames × lines`` readouts of ``coils × samples``, 2× readout oversampling,
    noise scans) is written to a temporary folder and deleted afterwards. Timed, best of
    ``repeats``: ``disk_read_s`` (the file's bytes read in 16 MB blocks, the peer),
    ``h5py_table_s`` (``f['dataset/data'][()]`` alone, HDF5's own floor), ``read_raw_s``
    (:func:`mridip.io.read_raw`) and ``load_s`` (:func:`mridip.load`: prewhitening, line
    placement, oversampling removal), all with the file in the page cache; and
    ``disk_read_cold_s`` / ``read_raw_cold_s`` with the file's pages dropped from the cache
    first (None where the system cannot drop them).
    """
    import tempfile

    import h5py

    from mridip.io import read_raw
    from mridip.preprocess import load

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bulk.h5")
        n = _write_bulk_raw(path, frames, lines, coils, samples)
        size = os.path.getsize(path)

        def disk() -> None:
            with open(path, "rb", buffering=0) as f:
                while f.read(16 << 20):
                    pass

        def table() -> None:
            with h5py.File(path, "r") as f:
                f["dataset/data"][()]

        def cold(fn: Callable[[], Any]) -> float | None:
            best = None
            for _ in range(repeats):
                if not _evict(path):
                    return None
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            return best

        cpu = torch.device("cpu")
        t_disk_cold = cold(disk)
        t_read_cold = cold(lambda: read_raw(path))
        t_disk = _time(disk, cpu, repeats)
        t_table = _time(table, cpu, repeats)
        t_read = _time(lambda: read_raw(path), cpu, repeats)
        t_load = _time(lambda: load(path), cpu, repeats)
    return {
        "size": {"readouts": n, "coils": coils, "samples": samples, "megabytes": size / 1e6},
        "disk_read_s": t_disk,
        "h5py_table_s": t_table,
        "read_raw_s": t_read,
        "load_s": t_load,
        "disk_read_cold_s": t_disk_cold,
        "read_raw_cold_s": t_read_cold,
        "read_raw_over_disk": t_read / t_disk,
        "read_raw_over_h5py": t_read / t_table,
        "load_over_disk": t_load / t_disk,
        "read_raw_cold_over_disk_cold": None
        if t_read_cold is None or t_disk_cold is None
        else t_read_cold / t_disk_cold,
        "read_raw_mb_per_s": size / 1e6 / t_read,
    }


def _loader_section(quick: bool, device: str) -> list[dict[str, Any]]:
    rows = []
    # the same bytes as 4× more, 4× shorter readouts: per-readout costs would show here
    shapes = [(24, 128)] if quick else [(192, 128), (768, 32)]
    for frames, samples in shapes:
        r = loader_benchmark(frames=frames, samples=samples, repeats=2 if quick else 3)
        rows.append(r)
        s = r["size"]
        cold = ""
        if r["read_raw_cold_s"] is not None:
            cold = (
                f"; cold cache: disk {r['disk_read_cold_s']:.2f} s, read_raw "
                f"{r['read_raw_cold_s']:.2f} s ({r['read_raw_cold_over_disk_cold']:.1f}× disk)"
            )
        print(
            f"loader {s['megabytes']:.0f} MB ({s['readouts']} readouts × {s['coils']} coils × "
            f"{s['samples']}): disk {r['disk_read_s']:.2f} s, h5py table "
            f"{r['h5py_table_s']:.2f} s, read_raw {r['read_raw_s']:.2f} s "
            f"({r['read_raw_over_disk']:.1f}× disk, {r['read_raw_over_h5py']:.1f}× h5py), "
            f"load {r['load_s']:.2f} s{cold}"
        )
    return rows


SECTIONS["loader"] = _loader_section


# -- one step of a DIP fit: generator + data term, Toeplitz against NUFFT --------------------------
def fit_step_benchmark(
    matrix: int = 128,
    coils: int = 8,
    frames: int = 20,
    spokes: int = 13,
    device: str = "cpu",
    presets: tuple[str, ...] = ("dip", "tddip", "gip", "mridip"),
    repeats: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per fit step (generator forward, data term, backward, Adam) of every preset.

    Two data terms on the same radial cine: mridip's (``normal_loss``: one Toeplitz ``AᴴA``,
    gradient supplied directly) and the references' way (torchkbnufft forward NUFFT of every
    coil image in the loss, backward through it by autograd). Best of ``repeats`` after one
    warm-up step. On the CPU, freed memory stays in the heap as in a fit
    (:func:`mridip._allocator.keep_freed_memory`).

    A preset with per-slot graph convolutions (``mridip``) is also timed with the earlier
    code (:func:`mridip.models.graph.use_fast_paths` off: grouped graph convolutions, plain
    autograd of the per-frame convolutions) against the fast paths, the two alternating step by
    step for ``max(repeats, 3)`` rounds on the same weights; its row gets ``graph_paths``: the
    median seconds of each (``old_s``, ``new_s``), the speed-up, every step's time and the load
    average before and after (medians, since on a shared machine one slow step is common).
    """
    import torchkbnufft as tkbn

    from mridip import phantoms, sampling
    from mridip.models import build_generator
    from mridip.operators import NonCartesianSense, normal_loss

    dev = torch.device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # as Reconstructor.fit does
    n = matrix
    traj, _ = sampling.golden_angle_radial(n, spokes, frames)
    tr = traj.to(dev)
    maps = phantoms.coil_maps((n, n), coils).to(dev)
    truth = phantoms.cine_phantom((n, n), frames).image.to(dev)
    op = NonCartesianSense(maps, tr)
    y = op.forward(truth)
    b = op.adjoint(y)
    fwd = tkbn.KbNufft(im_size=(n, n), grid_size=(2 * n, 2 * n)).to(dev)
    times = torch.arange(frames, dtype=torch.float64) * 0.05
    rows: dict[str, Any] = {}
    for name in presets:
        gen = build_generator(name, matrix=(n, n), frame_times=times, seed=seed).to(dev)
        opt = torch.optim.Adam(gen.parameters(), lr=1e-5)

        def toeplitz_step(gen: Any = gen, opt: Any = opt) -> None:
            opt.zero_grad(set_to_none=True)
            normal_loss(op, gen(), b).backward()
            opt.step()

        def nufft_step(gen: Any = gen, opt: Any = opt) -> None:
            opt.zero_grad(set_to_none=True)
            k = fwd(gen()[:, None] * maps[None], tr, norm="ortho")
            (k - y).abs().pow(2).sum().backward()
            opt.step()

        t_toep = _time(toeplitz_step, dev, repeats)
        t_nufft = _time(nufft_step, dev, repeats)
        rows[name] = {
            "params": gen.param_count(),
            "toeplitz_step_s": t_toep,
            "nufft_step_s": t_nufft,
            "speedup": t_nufft / t_toep,
        }
        if _has_slot_paths(gen):
            rows[name]["graph_paths"] = _graph_paths(gen, toeplitz_step, dev, max(repeats, 3))
            if dev.type == "cpu":

                def bf16_step(gen: Any = gen, opt: Any = opt) -> None:
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        x = gen()
                    normal_loss(op, x.to(torch.complex64), b).backward()
                    opt.step()

                rows[name]["amp_cpu"] = _amp_cpu_pair(
                    toeplitz_step, bf16_step, dev, max(repeats, 3)
                )
        del gen, opt
    return {
        "size": {"matrix": n, "coils": coils, "frames": frames, "spokes": spokes},
        "presets": rows,
    }


def _has_slot_paths(gen: torch.nn.Module) -> bool:
    from mridip.models.graph import NeighbourConv

    return any(isinstance(m, NeighbourConv) and not m.node_specific for m in gen.modules())


def _graph_paths(
    gen: torch.nn.Module, step: Callable[[], Any], device: torch.device, rounds: int
) -> dict[str, Any]:
    """Median step time of the earlier code (old) and the fast paths (new), interleaved."""
    import statistics

    from mridip.models.graph import use_fast_paths

    times: dict[bool, list[float]] = {False: [], True: []}
    load = [list(os.getloadavg())]
    try:
        for _ in range(rounds):
            for fast in (False, True):
                use_fast_paths(gen, fast)
                times[fast].append(_time(step, device, 1, warmup=0))
    finally:
        use_fast_paths(gen, True)
    load.append(list(os.getloadavg()))
    old, new = statistics.median(times[False]), statistics.median(times[True])
    return {
        "old_s": old,
        "new_s": new,
        "speedup": old / new,
        "rounds": rounds,
        "old_all_s": times[False],
        "new_all_s": times[True],
        "load_average": load,
    }


def _amp_cpu_pair(
    fp32: Callable[[], Any], bf16: Callable[[], Any], device: torch.device, rounds: int
) -> dict[str, Any]:
    """Median step time in float32 and under CPU bfloat16 autocast (``FitConfig.amp_cpu``),
    interleaved, with whether this CPU has native bfloat16 (:func:`mridip.recon.cpu_has_bf16`)."""
    import statistics

    from mridip.recon import cpu_has_bf16

    bf16()  # warm-up: oneDNN builds its bfloat16 kernels on first use
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for key, step in (("fp32", fp32), ("bf16", bf16)):
            times[key].append(_time(step, device, 1, warmup=0))
    f, h = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    return {
        "native_bf16": cpu_has_bf16(),
        "fp32_s": f,
        "bf16_s": h,
        "speedup": f / h,
        "rounds": rounds,
        "fp32_all_s": times["fp32"],
        "bf16_all_s": times["bf16"],
    }


def _fit_section(quick: bool, device: str) -> dict[str, Any]:
    if quick:
        r = fit_step_benchmark(matrix=32, coils=4, frames=6, spokes=7, device=device, repeats=1)
    else:
        r = fit_step_benchmark(device=device)
    s = r["size"]
    for name, row in r["presets"].items():
        print(
            f"fit step {name:7s} {s['matrix']}², {s['frames']} frames: "
            f"{row['toeplitz_step_s']:.3f} s (Toeplitz) vs {row['nufft_step_s']:.3f} s "
            f"(torchkbnufft forward + autograd), {row['speedup']:.2f}×"
        )
        if "graph_paths" in row:
            g = row["graph_paths"]
            la = ", ".join(f"{v[0]:.1f}" for v in g["load_average"])
            print(
                f"fit step {name:7s} new (slot-first channels-last graph convolutions, split "
                "backward) "
                f"{g['new_s']:.3f} s vs old (grouped, plain autograd) {g['old_s']:.3f} s "
                f"(medians of {g['rounds']} interleaved), {g['speedup']:.2f}× "
                f"(1-min load average before, after: {la})"
            )
        if "amp_cpu" in row:
            a = row["amp_cpu"]
            native = "native" if a["native_bf16"] else "emulated (no AVX512-BF16/AMX)"
            print(
                f"fit step {name:7s} bfloat16 autocast {a['bf16_s']:.3f} s vs float32 "
                f"{a['fp32_s']:.3f} s (medians of {a['rounds']} interleaved), "
                f"{a['speedup']:.2f}× (bfloat16 {native}; --amp-cpu)"
            )
    return r


SECTIONS["fit"] = _fit_section


# -- time to quality: every method on one simulated radial cine ----------------------------------
class PeakMemory:
    """Peak memory of a block above its start: CUDA allocator peak, or resident set on the CPU.

    On the CPU a thread samples ``/proc/self/statm`` every 5 ms (torch's allocations are not
    seen by ``tracemalloc``); short peaks between samples can be missed, so the figure is a
    lower bound. So that memory freed by an earlier method does not hide this one's use,
    glibc is asked to return its free heap to the system first (``malloc_trim``); memory it
    cannot return still hides part of the use, so on the CPU the figure is a lower bound too.
    (Forcing every large allocation through ``mmap`` made it exact but slowed the DIP fits
    several-fold, so that is not done.) Without ``/proc`` it stays 0.
    """

    @staticmethod
    def _glibc_returns_memory() -> None:
        import ctypes
        import ctypes.util

        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.peak_mib = 0.0

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def __enter__(self) -> PeakMemory:
        import threading

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._glibc_returns_memory()
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._rss())
        self.peak_mib = max(0, peak - self._base) / 2**20


#: Every method of the time-to-quality section, in table order.
QUALITY_METHODS = ("zf", "cgsense", "tv", "lps", "bart", "dip", "tddip", "gip", "mridip")


def quality_benchmark(
    matrix: int = 64,
    coils: int = 8,
    frames: int = 16,
    spokes: int = 13,
    device: str = "cpu",
    methods: tuple[str, ...] = QUALITY_METHODS,
    dip_steps: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Wall time, PSNR, SSIM and peak memory of every method on one simulated radial cine.

    The file is simulated, written and loaded as a user's would be (prewhitened, true coil
    maps); every method runs through :func:`mridip.reconstruct` with its defaults (one run:
    iterative methods are not repeated). The DIP methods run to their stopping rule (or
    ``dip_steps`` steps) and record PSNR against the truth along the fit (``trace``: seconds
    since the method started, PSNR of the generator's image, before the final step) for the
    PSNR-against-time plot. ``bart`` is BART ``pics`` with temporal TV at ``tv``'s weight and
    ADMM settings (:func:`mridip.bart.bart_tv`); its ``seconds`` include mridip's set-up and
    files, ``bart_process_s`` is BART's process alone. Ratios: time against that process
    (``time_vs_bart``) and PSNR against ``cgsense`` (``psnr_gain_vs_cgsense``). BART is left
    out when it is not installed.
    """

    from mridip.bart import bart_executable
    from mridip.methods import METHODS, reconstruct
    from mridip.metrics import evaluate
    from mridip.simulate import SimulationConfig

    cfg = SimulationConfig(
        kind="cine",
        trajectory="radial",
        matrix=matrix,
        frames=frames,
        coils=coils,
        spokes=spokes,
        seed=seed,
    )
    scan = _simulated_scan(cfg)
    assert scan.maps is not None and scan.reference is not None
    rows: dict[str, Any] = {}
    for name in methods:
        if name == "bart" and bart_executable() is None:
            continue
        kw: dict[str, Any] = {}
        trace: list[tuple[float, float]] = []
        clock = [0.0]
        dip = METHODS[name].family == "dip"
        if dip:

            def monitor(step: int, image: torch.Tensor, trace=trace, clock=clock) -> None:
                psnr = evaluate(image.detach().cpu(), scan.reference)["psnr"]
                trace.append((time.perf_counter() - clock[0], psnr))

            kw = {"progress": False, "monitor": monitor}
            if dip_steps is not None:
                kw["iters"] = dip_steps
        with PeakMemory(device) as mem:
            clock[0] = time.perf_counter()
            rec = reconstruct(scan.kspace, name, scan.maps, device=device, seed=seed, **kw)
        q = evaluate(rec.image, scan.reference)
        rows[name] = {
            "seconds": rec.seconds,
            "psnr": q["psnr"],
            "ssim": q["ssim"],
            "peak_mib": mem.peak_mib,
            "iters": rec.config.get("iters"),
        }
        if dip:
            steps_run = int(rec.config.get("steps_run") or 0)
            rows[name]["steps_run"] = steps_run
            rows[name]["best_step"] = rec.config.get("best_step")
            # the whole method's time over its steps: set-up, evaluations and the final step
            # included, so it is a little above the fit-step section's figure
            rows[name]["step_s"] = rec.seconds / max(steps_run, 1)
            rows[name]["stopped_early"] = bool(rec.config.get("stopped_early"))
            rows[name]["final"] = rec.config.get("final")
            rows[name]["trace"] = trace
        if "bart_seconds" in rec.config:
            rows[name]["bart_process_s"] = rec.config["bart_seconds"]
    # the peer is BART's own process; the `bart` row's seconds add mridip's set-up and files
    peer = rows["bart"].get("bart_process_s", rows["bart"]["seconds"]) if "bart" in rows else None
    for r in rows.values():
        if peer:
            r["time_vs_bart"] = r["seconds"] / peer
        if "cgsense" in rows:
            r["psnr_gain_vs_cgsense"] = r["psnr"] - rows["cgsense"]["psnr"]
    return {
        "size": {"matrix": matrix, "coils": coils, "frames": frames, "spokes": spokes},
        "bart": "pics -m -R T:1024:0:λ (matched to tv)" if "bart" in rows else None,
        "methods": rows,
    }


def _print_quality(title: str, r: dict[str, Any]) -> None:
    s = r["size"]
    print(
        f"{title}, radial cine {s['matrix']}², {s['coils']} coils, {s['frames']} frames, "
        f"{s['spokes']} spokes:"
    )
    for k, v in r["methods"].items():
        ratio = f" ({v['time_vs_bart']:.2f}× bart)" if "time_vs_bart" in v else ""
        steps = ""
        if "steps_run" in v:
            steps = (
                f"  {v['steps_run']} steps (kept {v['best_step']}), {v['step_s']:.2f} s/step,"
                f" final {v.get('final')}"
            )
        print(
            f"  {k:8s} {v['seconds']:8.2f} s{ratio:16s} {v['psnr']:6.2f} dB  "
            f"SSIM {v['ssim']:.3f}  peak {v['peak_mib']:7.1f} MiB{steps}"
        )
    if r["bart"] is None:
        print("  bart not found, skipped")


def _quality_section(
    quick: bool, device: str, methods: tuple[str, ...] = QUALITY_METHODS
) -> dict[str, Any]:
    if quick:
        r = quality_benchmark(
            matrix=32, coils=6, frames=8, spokes=7, device=device, methods=methods, dip_steps=60
        )
    else:
        r = quality_benchmark(device=device, methods=methods)
    _print_quality("quality", r)
    return r


SECTIONS["quality"] = _quality_section

#: Methods of the time-to-stop section: the DIP presets with CG-SENSE and BART as references.
STOP_METHODS = ("cgsense", "bart", "mridip", "gip", "tddip", "dip")


def _stop_section(
    quick: bool, device: str, methods: tuple[str, ...] = STOP_METHODS
) -> dict[str, Any]:
    """Time to stop: every DIP preset fitted with its defaults at the fit-step section's size
    (128², 8 coils, 20 frames, 13 spokes) until its stopping rule fires or ``max_steps`` ends
    it."""
    if quick:
        r = quality_benchmark(
            matrix=32, coils=4, frames=6, spokes=7, device=device, methods=methods, dip_steps=60
        )
    else:
        r = quality_benchmark(
            matrix=128, coils=8, frames=20, spokes=13, device=device, methods=methods
        )
    _print_quality("time to stop", r)
    return r


SECTIONS["stop"] = _stop_section


def baselines_benchmark(
    matrix: int = 128,
    coils: int = 8,
    frames: int = 20,
    spokes: int = 13,
    device: str = "cpu",
    methods: tuple[str, ...] = ("cgsense", "tv", "wavelet", "lps", "bart"),
    seed: int = 0,
) -> dict[str, Any]:
    """The CS baselines and BART ``pics`` at 128², 20 frames (:func:`quality_benchmark`)."""
    return quality_benchmark(matrix, coils, frames, spokes, device, methods, seed=seed)


def _baselines_section(quick: bool, device: str) -> dict[str, Any]:
    if quick:
        r = baselines_benchmark(matrix=48, coils=6, frames=8, device=device)
    else:
        r = baselines_benchmark(device=device)
    s = r["size"]
    parts = [
        f"{k} {v['seconds']:.2f} s"
        + (f" ({v['time_vs_bart']:.2f}× bart)" if "time_vs_bart" in v else "")
        + f", {v['psnr']:.2f} dB"
        for k, v in r["methods"].items()
    ]
    print(
        f"baselines {s['matrix']}², {s['coils']} coils, {s['frames']} frames: " + "; ".join(parts)
    )
    if r["bart"] is None:
        print("baselines: bart not found, skipped")
    return r


SECTIONS["baselines"] = _baselines_section


def _generator_section(quick: bool, device: str) -> dict[str, Any]:
    """Forward + backward + Adam of each preset; gip against the reference's structure."""
    from mridip.bench_generators import generator_step_benchmark

    size, frames = ((32, 32), 6) if quick else ((128, 128), 18)
    r = generator_step_benchmark(
        matrix=size, n_frames=frames, steps=2 if quick else 3, device=device
    )
    for name, row in r["presets"].items():
        print(
            f"generator {name:7s} {size[0]}², {frames} frames: {row['step_s']:.3f} s/step, "
            f"{row['params'] / 1e6:.2f} M parameters, peak {row['peak_mem_mib']:.0f} MiB"
        )
    g = r["gip_vs_reference"]
    print(
        f"generator gip vs reference structure: {g['gip']['step_s']:.3f} s vs "
        f"{g['reference']['step_s']:.3f} s ({g['speedup']:.2f}× faster)"
    )
    s = r["stage1_batched_vs_loop"]
    print(
        f"generator per-frame stage batched vs loop: {s['batched']['step_s']:.3f} s vs "
        f"{s['loop']['step_s']:.3f} s ({s['speedup']:.2f}×)"
    )
    return r


SECTIONS["generator"] = _generator_section
