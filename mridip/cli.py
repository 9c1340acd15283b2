"""The ``mridip`` command: ``info | simulate | recon | batch | eval | methods | bench | demo``.

A thin layer over the library. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mridip.errors import ConfigError, MridipError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line_warnings() -> None:
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"mridip: warning: {message}", file=sys.stderr)

    warnings.showwarning = show  # type: ignore[assignment]
    warnings.filterwarnings("ignore", category=DeprecationWarning)


# -- commands -------------------------------------------------------------------------------------
def cmd_simulate(a: argparse.Namespace) -> int:
    from mridip.simulate import SimulationConfig, simulate, write_simulation

    cfg = SimulationConfig(
        kind=a.kind,
        trajectory=a.trajectory,
        matrix=a.matrix,
        frames=a.frames,
        coils=a.coils,
        spokes=a.spokes,
        acceleration=a.acceleration,
        noise=a.noise,
        seed=a.seed,
        texture=a.texture,
        breathing=a.breathing,
        position_mm=a.position,
        read_dir=a.read_dir,
        phase_dir=a.phase_dir,
    )
    t0 = time.perf_counter()
    sim = simulate(cfg)
    write_simulation(a.output, sim)
    size = Path(a.output).stat().st_size / 1e6
    print(
        f"wrote {a.output} ({size:.1f} MB): {cfg.kind}, {cfg.trajectory}, {cfg.matrix}², "
        f"{cfg.frames} frames, {cfg.coils} coils in {time.perf_counter() - t0:.1f} s"
    )
    return 0


#: ``--conjugate`` → the loader's ``conjugate`` (None: the vendor rule of docs/loader.md).
_CONJUGATE = {"auto": None, "on": True, "off": False}


def cmd_info(a: argparse.Namespace) -> int:
    from mridip.io.raw import read_raw
    from mridip.preprocess import prepare

    raw = read_raw(a.raw, group=a.group)
    h = raw.header
    slices = sorted(set(raw.head["slice"].tolist()))
    lines = [
        f"file         {raw.path} (group '{raw.group}' of {len(raw.groups)}, "
        f"header parsed with {h.parsed_with})",
        f"trajectory   {h.trajectory}",
        f"matrix       recon {h.recon_matrix[1]}×{h.recon_matrix[0]} (y×x), "
        f"encoded {h.encoded_matrix[1]}×{h.encoded_matrix[0]}, "
        f"FOV {h.recon_fov_mm[1]:.0f}×{h.recon_fov_mm[0]:.0f} mm",
        f"slices       {len(slices)} (showing --slice {a.slice})",
    ]
    noise = raw.dropped.get("noise", 0)
    scan = prepare(
        raw,
        slice_index=a.slice,
        spokes_per_frame=a.spokes_per_frame,
        time_dim=a.time_dim,
        conjugate=_CONJUGATE[a.conjugate],
    )
    ks = scan.kspace
    meta = ks.meta
    if meta.get("static_frame") or (ks.n_frames == 1 and not meta.get("time_dim")):
        time_in = "no frame labels: one static frame; --spokes-per-frame S bins a stream"
    else:
        time_in = f"time in {meta.get('time_dim') or 'binned stream'}"
    lines += [
        f"vendor       {h.vendor or 'not given'} (k-space conjugated: {meta.get('conjugated')})",
        f"coils        {ks.n_coils}",
        f"frames       {ks.n_frames} ({time_in})",
    ]
    if ks.is_cartesian:
        assert ks.mask is not None
        per = ks.mask.any(-1).sum(1).float()
        lines.append(
            f"lines/frame  {per.mean():.1f} of {ks.matrix[0]} "
            f"(partial Fourier {meta.get('partial_fourier', 1):.2f}, "
            f"echo {meta.get('echo_asymmetry', 1):.2f}, "
            f"readout oversampling {meta.get('readout_oversampling', 1):g} removed)"
        )
    else:
        spf, ro = meta.get("spokes_per_frame"), meta.get("readout_samples")
        lines.append(
            f"spokes/frame {spf} × {ro} samples; trajectory {meta.get('trajectory_units')}"
        )
    accel = f"acceleration R ≈ {ks.acceleration:.1f}"
    if h.acceleration and h.acceleration != (1, 1):
        accel += f" (header: {h.acceleration[0]}×{h.acceleration[1]})"
    dropped = {k: v for k, v in meta.get("dropped", {}).items() if k != "noise"}
    ft = ks.frame_times
    assert ft is not None  # DynamicKSpace fills it in
    lines += [
        accel,
        f"noise scans  {noise}"
        + (
            f" (prewhitened, noise bandwidth {h.noise_bandwidth:g})"
            if meta.get("prewhitened")
            else " (not prewhitened)"
        ),
        "dropped      "
        + (", ".join(f"{n} {why}" for why, n in dropped.items()) if dropped else "nothing"),
        f"frame times  {float(ft[0]):.3f} … {float(ft[-1]):.3f} s "
        f"(from {meta.get('frame_times_from', 'the data')})",
        f"reference    {'yes' if scan.reference is not None else 'no'}"
        f"{', with coil maps' if scan.maps is not None else ''}",
    ]
    print("\n".join(lines))
    return 0


def _lam_list(text: str) -> list[float]:
    """``--lam-sweep 1e-3,1e-2,0.1`` → floats (argparse type)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers ≥ 0, got {text!r}")
    return values


def _lam_value(text: str) -> float | str:
    """``--lam auto`` or a number ≥ 0 (argparse type)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected auto or a number ≥ 0, got {text!r}")
    return value


def _lam_sweep(a: argparse.Namespace, kspace: Any, maps: Any, reference: Any) -> float:
    """Run ``--lam-sweep``, print its table, return the λ the discrepancy principle picks."""
    from mridip.lam import discrepancy_choice, lam_sweep
    from mridip.methods import resolve_device

    dev = resolve_device(a.device)
    ref = reference if reference is not None and reference.shape[0] == kspace.n_frames else None
    rows = lam_sweep(
        kspace.to(dev),
        maps.to(dev),
        a.method,
        a.lam_sweep,
        reference=ref,
        keep_images=False,
        iters=a.iters,
        seed=a.seed,
    )
    best = discrepancy_choice(rows)
    if not a.quiet:
        head = f"{'lam':>10s} {'lam_abs':>11s} {'residual':>9s} {'chi2':>9s} {'seconds':>8s}"
        print(head + ("  PSNR dB" if ref is not None else ""))
        for i, r in enumerate(rows):
            line = (
                f"{r['lam']:10.4g} {r.get('lam_abs', float('nan')):11.4g} "
                f"{r['relative_residual']:9.4f} {r['chi2']:9.4g} {r['seconds']:8.2f}"
            )
            line += f"  {r['psnr']:7.2f}" if ref is not None else ""
            print(line + ("  ← chosen (discrepancy principle)" if i == best else ""))
    return float(rows[best]["lam"])


#: Options whose flag is not ``--`` and the option's name with dashes.
_OPTION_FLAGS = {
    "admm_iters": "--admm",
    "warm_start_steps": "--warm-start",
    "checkpoint": "--checkpoint-every/--resume",
}


def _flag(option: str) -> str:
    """The command-line flag that sets a method option (for error messages)."""
    return _OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


def _method_options(a: argparse.Namespace) -> dict[str, Any]:
    """The method's keyword options from the flags that ``recon`` and ``batch`` share."""
    options: dict[str, Any] = {}
    if a.lam is not None:
        options["lam"] = a.lam
    if a.lam_rule is not None:
        options["lam_rule"] = a.lam_rule
    dip_flags = {
        "lr": a.lr,
        "frames_per_step": a.frames_per_step,
        "holdout": a.holdout,
        "holdout_unit": a.holdout_unit,
        "holdout_spare_centre": a.holdout_spare_centre,
        "patience": a.patience,
        "latent": a.latent,
        "admm_iters": a.admm,
        "warm_start_steps": a.warm_start,
        "warm_start_from": a.warm_start_from,
        "final": a.final,
        "ema": a.ema,
        "tv_weight": a.tv_weight,
        "tv_spatial_weight": a.tv_spatial_weight,
        "lowrank_weight": a.lowrank_weight,
        "wavelet_weight": a.wavelet_weight,
        "code_noise": a.code_noise,
        "stop_margin": a.stop_margin,
        "halving_resets_patience": a.halving_resets_patience,
        "amp_cpu": a.amp_cpu,
        "ensemble": a.ensemble,
        "mask_support": a.mask_support,
        "lr_schedule": a.lr_schedule,
        "rank": a.rank,
        "blend": a.blend,
        "blend_weight": a.blend_weight,
        "blend_lam": a.blend_lam,
        "blend_band": a.blend_band,
        "blend_rings": a.blend_rings,
        "blend_outside": a.blend_outside,
    }
    options.update({k: v for k, v in dip_flags.items() if v is not None})
    return options


def cmd_recon(a: argparse.Namespace) -> int:
    from mridip.methods import NO_ENSEMBLE_CHECKPOINT, check_method_options
    from mridip.metrics import evaluate
    from mridip.pipeline import prepare_slice, reconstruct_slice

    t0 = time.perf_counter()
    asked = _method_options(a)  # refused before the data are read
    if a.resume is not None or a.checkpoint_every:
        asked["checkpoint"] = True
    check_method_options(a.method, asked, _flag)
    if asked.get("checkpoint") and (a.ensemble or 1) > 1:
        raise ConfigError(NO_ENSEMBLE_CHECKPOINT)
    prep = prepare_slice(
        a.raw,
        group=a.group,
        slice_index=a.slice,
        spokes_per_frame=a.spokes_per_frame,
        time_dim=a.time_dim,
        conjugate=_CONJUGATE[a.conjugate],
        coils=a.coils,
        maps=a.maps,
        device=a.device,
    )
    scan, kspace, maps = prep.scan, prep.kspace, prep.maps
    options = _method_options(a)
    checkpoint = None
    if a.resume is not None:
        checkpoint = Path(a.resume) / "checkpoint.pt"
        if not checkpoint.exists():
            raise MridipError(f"--resume: no checkpoint.pt in {a.resume}")
        options.update(checkpoint=checkpoint, resume=True, checkpoint_every=a.checkpoint_every)
    elif a.checkpoint_every:
        checkpoint = Path(a.output) / "checkpoint.pt"
        options.update(checkpoint=checkpoint, checkpoint_every=a.checkpoint_every)
    options["progress"] = not a.quiet and sys.stderr.isatty()
    if a.lam_sweep:
        options["lam"] = _lam_sweep(a, kspace, maps, scan.reference)
    rec, _ = reconstruct_slice(
        prep,
        a.output,
        method=a.method,
        raw=a.raw,
        slice_index=a.slice,
        device=a.device,
        seed=a.seed,
        iters=a.iters,
        options=options,
        formats=a.formats,
    )
    if checkpoint is not None and checkpoint.exists():
        checkpoint.unlink()  # the fit finished: its outputs are complete
    msg = f"{a.method}: {kspace.describe()} in {rec.seconds:.2f} s → {a.output}/recon.h5"
    if scan.reference is not None and scan.reference.shape == tuple(rec.image.shape):
        q = evaluate(rec.image, scan.reference)
        msg += f" | vs reference: PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.3f}"
    if not a.quiet:
        print(msg)
        print(f"total {time.perf_counter() - t0:.1f} s; pictures: {a.output}/cine.gif, montage.png")
    return 0


def cmd_batch(a: argparse.Namespace) -> int:
    from mridip.batch import BatchConfig, run_batch
    from mridip.methods import check_method_options

    check_method_options(a.method, _method_options(a), _flag)

    raws = list(a.raw)
    if a.list is not None:
        try:
            text = Path(a.list).read_text()
        except OSError as exc:
            raise ConfigError(f"--list {a.list}: {exc.strerror or exc}") from None
        base = Path(a.list).parent  # relative names in the list are relative to it
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                raws.append(str(Path(line) if Path(line).is_absolute() else base / line))
    config = BatchConfig(
        method=a.method,
        group=a.group,
        spokes_per_frame=a.spokes_per_frame,
        time_dim=a.time_dim,
        coils=a.coils,
        maps=a.maps,
        device=a.device,
        seed=a.seed,
        iters=a.iters,
        options=_method_options(a),
        formats=a.formats,
    )
    report = run_batch(
        raws,
        a.output,
        config,
        ray_address=a.ray,
        jobs=a.jobs,
        cpus_per_task=a.cpus_per_task,
        gpus_per_task=a.gpus_per_task,
        max_retries=a.retries,
        force=a.force,
        progress=None if a.quiet else sys.stderr,
        bar=sys.stderr.isatty(),
    )
    print(report.summary() if a.quiet else report.table())
    return report.exit_code


def cmd_study(a: argparse.Namespace) -> int:
    from mridip.study import load_study, run

    config = load_study(a.study)  # a malformed file stops here, before anything is written
    log = None if a.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = run(config, a.output, jobs=a.jobs, ray_address=a.ray, log=log)
    print(
        f"{len(result.rows)} cells: {result.ran} run, {result.reused} reused, "
        f"{result.failed} failed; {a.output}/results.csv, summary.md, figures/"
    )
    return 1 if result.failed else 0


def cmd_export(a: argparse.Namespace) -> int:
    from mridip.io.results import export_recon

    out = export_recon(a.recon, a.to, a.output, complex_values=a.complex)
    print(f"wrote {out} ({a.to})")
    return 0


def _vec3(text: str) -> tuple[float, float, float]:
    """``1,0,0`` → three floats (argparse type)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def _formats(text: str) -> tuple[str, ...]:
    """``h5,nifti,dicom`` → the output formats (argparse type)."""
    from mridip.io.export import parse_formats

    try:
        return parse_formats(text)
    except MridipError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_eval(a: argparse.Namespace) -> int:
    from mridip.io.results import read_image
    from mridip.metrics import evaluate

    recon = read_image(a.recon)
    ref = read_image(a.reference)
    q = evaluate(recon, ref)
    if a.json:
        print(json.dumps(q))
    else:
        print(
            f"PSNR {q['psnr']:.2f} dB   SSIM {q['ssim']:.4f}   NRMSE {q['nrmse']:.4f}"
            f"   (mean of {len(q['psnr_frames'])} frames)"
        )
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from mridip.methods import METHODS, PLANNED
    from mridip.models import PRESETS

    matrix, frames = (a.matrix, a.matrix), a.frames
    for spec in METHODS.values():
        params = ""
        if spec.name in PRESETS:
            n = PRESETS[spec.name].param_count(matrix, frames)
            params = f" [{n / 1e6:.2f} M parameters at {a.matrix}², {frames} frames]"
        print(f"{spec.name:10s} {spec.family:9s} {spec.description}{params}")
    missing = [m for m in PLANNED if m not in METHODS]
    if missing:
        print(f"planned: {', '.join(missing)}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    import contextlib

    from mridip.bench import run_bench

    # with --json, stdout carries the JSON alone; the table goes to stderr
    table = sys.stderr if a.json else sys.stdout
    with contextlib.redirect_stdout(table):
        report = run_bench(quick=a.quick, device=a.device, only=a.only, methods=a.methods)
    text = json.dumps(report, indent=2)
    if a.json:
        print(text)
    if a.output:
        from mridip.io.atomic import atomic_path

        with atomic_path(a.output) as tmp:
            tmp.write_text(text)
        from mridip.io.pictures import write_quality_plot

        for section, suffix in (("quality", ""), ("stop", "_stop")):
            if section in report:
                png = Path(a.output).with_name(Path(a.output).stem + suffix + ".png")
                with atomic_path(png) as tmp:
                    write_quality_plot(tmp, report[section])
                print(f"PSNR against time ({section}): {png}", file=table)
    return 0


class _DemoRows:
    """The demo's table, a row per method in the order asked for, printed as soon as every row
    before it is ready (the CS methods and the DIP fits may finish in either order when they
    run side by side); safe to call from the worker thread. Lines go through ``tqdm.write`` so
    that a fit's progress bar is redrawn below them."""

    def __init__(self, names: list[str]) -> None:
        import threading

        self._names = names
        self._ready: dict[str, list[str]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def done(self, name: str, lines: list[str]) -> None:
        from tqdm.auto import tqdm

        with self._lock:
            self._ready[name] = lines
            while self._next < len(self._names) and self._names[self._next] in self._ready:
                for line in self._ready[self._names[self._next]]:
                    tqdm.write(line, file=sys.stdout)
                self._next += 1
            sys.stdout.flush()


class _Awaited(Mapping[str, Any]):
    """Blend partners that are still being made: looking one up waits for the worker's
    reconstruction of that method (its error, if it failed, is raised here); a method the demo
    does not run is missing, so the blend solves it itself."""

    def __init__(self, futures: dict[str, Any]) -> None:
        self._futures = futures

    def __getitem__(self, key: str) -> Any:
        return self._futures[key].result()

    def __iter__(self) -> Iterator[str]:
        return iter(self._futures)

    def __len__(self) -> int:
        return len(self._futures)


def demo_dip_steps() -> int:
    """The demo's step limit for the DIP methods: a time budget, not a tuning. 2000 steps of
    ``lrdip`` took 190 s on two cores in float32; where the CPU runs bfloat16 natively (the
    fits' default there, :func:`mridip.recon.cpu_has_bf16`) 2000 took 75 s and 3000 94 s, so
    the demo takes 3000 there (README: ``lrdip`` 40.13 dB at 2000, 41.01 at 3000, `tv` 40.16)."""
    from mridip.recon import cpu_has_bf16

    return 3000 if cpu_has_bf16() else 2000


def cmd_demo(a: argparse.Namespace) -> int:
    """Reconstruct the bundled sample with every available method and compare with the truth.

    With ``--jobs 2`` (the default on a machine with two or more cores) the CS methods run one
    after another in a worker thread while the DIP fits run in the main thread, each side with
    half of torch's threads: the demo's tensors are too small for two threads to speed up one
    method, so the second core is better spent on the other methods. A DIP's blend waits for the
    CS images it reuses."""
    import os

    import torch

    from mridip.io.results import write_recon
    from mridip.methods import METHODS, reconstruct
    from mridip.metrics import evaluate
    from mridip.preprocess import load

    names = a.methods.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {', '.join(unknown)}; available: {', '.join(METHODS)}")
    if a.dip_steps is None:
        a.dip_steps = demo_dip_steps()
    if a.dip_steps < 1:
        raise ConfigError(f"--dip-steps must be ≥ 1, got {a.dip_steps}")
    jobs = a.jobs if a.jobs is not None else (2 if (os.cpu_count() or 1) >= 2 else 1)
    sample = Path(a.sample)
    scan = load(sample)
    print(f"sample   {sample}: {scan.kspace.describe()}")
    dips = [n for n in names if METHODS[n].family == "dip"]
    others = [n for n in names if n not in dips]
    side_by_side = jobs == 2 and bool(dips) and bool(others)
    if side_by_side:
        print(f"running {', '.join(others)} in a worker thread beside {', '.join(dips)}")
    print(f"{'method':10s} {'PSNR dB':>8s} {'SSIM':>6s} {'NRMSE':>6s} {'seconds':>8s}")
    rows = _DemoRows(names)
    threads = torch.get_num_threads()
    share = max(1, threads // 2) if side_by_side else threads

    def one(name: str, partners: Any = None) -> Any:
        torch.set_num_threads(share)  # per thread: a new thread starts with the process default
        # a DIP's blend reuses the CS images the demo makes (same data, λ chosen alike)
        kw = {"iters": a.dip_steps, "blend_partners": partners} if name in dips else {}
        rec = reconstruct(scan.kspace, name, scan.maps, seed=0, **kw)
        q = evaluate(rec.image, scan.reference)
        write_recon(
            Path(a.out) / name,
            rec.image.numpy(),
            method=name,
            config=rec.config,
            frame_times=rec.frame_times.numpy() if rec.frame_times is not None else None,
        )
        lines = [
            f"{name:10s} {q['psnr']:8.2f} {q['ssim']:6.3f} {q['nrmse']:6.3f} {rec.seconds:8.2f}"
        ]
        blend = rec.config.get("blend")
        if isinstance(blend, dict):
            lines.append(f"{'':10s} {_blend_summary(blend)}")
        rows.done(name, lines)
        return rec

    try:
        if side_by_side:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mridip-demo") as pool:
                futures = {n: pool.submit(one, n) for n in others}  # in order, one at a time
                try:
                    for n in dips:
                        one(n, _Awaited(futures))
                    for fut in futures.values():
                        fut.result()
                except BaseException:
                    for fut in futures.values():
                        fut.cancel()
                    raise
        else:
            done: dict[str, Any] = {}
            for n in names:
                done[n] = one(n, done)
    finally:
        torch.set_num_threads(threads)
    print(f"pictures in {a.out}/<method>/cine.gif and montage.png")
    return 0


def _blend_summary(blend: dict[str, Any]) -> str:
    """The demo's line under a blended DIP row: the partner and weight, or the stack's weights."""
    tried = blend.get("tried") or {blend["method"]: blend}
    reused = [m for m, r in tried.items() if r.get("reused")]
    if blend["method"] == "stack":
        what = "stacked: " + ", ".join(f"{m} {c:.2f}" for m, c in blend["weights"].items())
        what += f" (weights chosen on held-out samples from {len(tried)} CS image(s)"
    else:
        moved = blend.get("lam_factor")
        what = f"blended with {blend['method']} (weight {blend['weight']:.2f}, " + (
            f"its λ × {moved:g} for the blend, " if moved else ""
        )
        what += f"chosen from {len(tried)} CS image(s)"
    return what + (f"; reused {', '.join(reused)} from above" if reused else "") + ")"


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mridip", description="Dynamic MRI reconstruction with deep image priors.")
    from mridip import __version__

    p.add_argument("--version", action="version", version=f"mridip {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def raw_options(sp: argparse.ArgumentParser, many: bool = False) -> None:
        if many:  # batch: every slice of many files
            sp.add_argument("raw", nargs="*", help="ISMRMRD raw files (.h5)")
            sp.add_argument("--list", default=None, metavar="FILE", help="raw files, one a line")
        else:
            sp.add_argument("raw", help="ISMRMRD raw file (.h5)")
        sp.add_argument("--group", default=None, help="ISMRMRD group (default: the last one)")
        if not many:
            sp.add_argument("--slice", type=int, default=0, help="slice index (default 0)")
        sp.add_argument(
            "--spokes-per-frame",
            type=int,
            default=None,
            help="bin a radial stream without frame labels into frames",
        )
        sp.add_argument(
            "--time-dim",
            choices=["phase", "repetition", "contrast", "set"],
            default=None,
            help="encoding counter that holds time (default: phase or repetition, detected)",
        )
        sp.add_argument(
            "--conjugate",
            choices=list(_CONJUGATE),
            default="auto",
            help="conjugate the k-space, which turns the image by 180° (auto: for Siemens "
            "files, whose orientation assumes a forward FFT; see docs/loader.md)",
        )

    def method_options(sp: argparse.ArgumentParser, device: str) -> Any:
        """The method flags that ``recon`` and ``batch`` share; returns the DIP group."""
        sp.add_argument("--method", default="cgsense", help="see `mridip methods`")
        sp.add_argument("--iters", type=int, default=None)
        sp.add_argument(
            "--lam",
            type=_lam_value,
            default=None,
            metavar="auto|X",
            help="regularisation weight of tv, lps, wavelet, cgsense, bart: a number, or auto "
            "(default): chosen from the data by --lam-rule",
        )
        sp.add_argument(
            "--lam-rule",
            choices=["cv", "discrepancy"],
            default=None,
            help="how --lam auto chooses: k-space cross-validation (cv, default) or the "
            "discrepancy principle (needs noise scans)",
        )
        sp.add_argument(
            "--maps",
            default="auto",
            choices=["auto", "file", "espirit", "walsh", "inati", "lowres"],
            help="coil maps: stored in the file, or estimated (auto: file if stored, else espirit)",
        )
        sp.add_argument(
            "--coils", type=int, default=None, help="compress to this many virtual coils (PCA)"
        )
        sp.add_argument("--device", default=device, help=f"cpu | cuda | auto (default {device})")
        sp.add_argument("--seed", type=int, default=0)
        g = sp.add_argument_group("deep image prior methods (dip, tddip, gip, mridip)")
        g.add_argument("--lr", type=float, default=None, help="Adam learning rate")
        g.add_argument(
            "--frames-per-step", type=int, default=None, help="random frame subset per step"
        )
        g.add_argument("--holdout", type=float, default=None, help="fraction held out for stopping")
        g.add_argument(
            "--blend",
            choices=["none", "auto", "stack", "wavelet", "tv", "lps"],
            default=None,
            help="average the DIP image with this CS method's (its λ chosen from the scan); "
            "auto: the one whose blend best predicts the held-out samples (the default); "
            "stack: the DIP and all three CS images, weights chosen on the held-out samples",
        )
        g.add_argument(
            "--blend-weight",
            type=_lam_value,
            default=None,
            metavar="auto|W",
            help="the CS image's share in [0, 1], or auto (default): the share that best "
            "predicts the fit's held-out samples",
        )
        g.add_argument(
            "--blend-lam",
            choices=["scan", "refine"],
            default=None,
            help="the blend partner's λ: scan (default): the method's own choice; refine: "
            "moved from there by factors of 2 while the blend predicts the held-out samples "
            "better",
        )
        g.add_argument(
            "--blend-band",
            choices=["all", "measured"],
            default=None,
            help="where the blend replaces the DIP image: all: everywhere; measured (mridip's "
            "default): within the largest radius the trajectory reaches, the DIP image kept "
            "in the grid's corners (the same for Cartesian data)",
        )
        g.add_argument(
            "--blend-rings",
            type=int,
            default=None,
            metavar="N",
            help="a blend weight for each of N rings of spatial frequency (1 to 4), each chosen "
            "on the held-out samples (default 1: one weight for all)",
        )
        g.add_argument(
            "--blend-outside",
            choices=["dip", "partner"],
            default=None,
            help="where no coil sees (the maps are zero there): dip: the blend of the DIP's "
            "zero with the CS image; partner: the CS image alone",
        )
        g.add_argument(
            "--holdout-unit",
            choices=["sample", "readout"],
            default=None,
            help="hold out single samples or whole readouts (spokes, lines; lrdip's default)",
        )
        g.add_argument(
            "--holdout-spare-centre",
            action="store_true",
            default=None,
            help="Cartesian data: never hold out a line every frame measures (off: measured in "
            "docs/reconstructor.md)",
        )
        g.add_argument(
            "--patience", type=int, default=None, help="steps without improvement to stop"
        )
        g.add_argument("--latent", default=None, help="helix | circle | line | cardiac_resp | ...")
        g.add_argument("--admm", type=int, default=None, help="GIP's ADMM refinement iterations")
        g.add_argument(
            "--warm-start", type=int, default=None, help="pretrain steps towards a CS image"
        )
        g.add_argument(
            "--warm-start-from",
            choices=["cgsense", "tv", "lps"],
            default=None,
            help="the CS image the warm start pretrains towards (default cgsense)",
        )
        g.add_argument(
            "--ema", type=float, default=None, help="return a moving average of the output (decay)"
        )
        g.add_argument(
            "--tv-weight", type=float, default=None, help="temporal TV in the loss (tv's λ units)"
        )
        g.add_argument(
            "--tv-spatial-weight",
            type=float,
            default=None,
            help="spatial TV in the loss (tv's lam_spatial units)",
        )
        g.add_argument(
            "--lowrank-weight",
            type=float,
            default=None,
            help="nuclear norm of the Casorati matrix in the loss (lps's lam_lowrank units)",
        )
        g.add_argument(
            "--wavelet-weight",
            type=float,
            default=None,
            help="l1 of wavelets of the temporal Fourier transform in the loss (wavelet's λ units)",
        )
        g.add_argument(
            "--code-noise", type=float, default=None, help="noise on the input codes (relative)"
        )
        g.add_argument(
            "--stop-margin",
            type=float,
            default=None,
            help="relative held-out improvement that keeps the fit going",
        )
        g.add_argument(
            "--halving-resets-patience",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="each scheduled halving of the learning rate restarts the patience (default: "
            "on for mridip, off for the other presets)",
        )
        g.add_argument(
            "--amp-cpu",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="bfloat16 autocast of the generator on the CPU (default: on where the CPU has "
            "native bfloat16, AVX512-BF16 or AMX; off elsewhere)",
        )
        g.add_argument(
            "--ensemble",
            type=int,
            default=None,
            metavar="N",
            help="average N fits from differently seeded generators (default 1; N times the time)",
        )
        g.add_argument(
            "--lr-schedule",
            choices=["steps", "plateau"],
            default=None,
            help="halve the learning rate at fixed steps, or when the held-out residual stalls "
            "(plateau: stops once converged)",
        )
        g.add_argument(
            "--rank", type=int, default=None, help="lrdip: rank of the series (default: frames ≤ 8)"
        )
        g.add_argument(
            "--mask-support",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="zero the image where no coil sees (default on)",
        )
        g.add_argument(
            "--final",
            choices=["auto", "dc", "refit", "none"],
            default=None,
            help="last step: auto (default: data consistency if the held-out samples favour it), "
            "dc, refit on all data, or none",
        )
        return g

    s = sub.add_parser("info", help="what is in a raw file")
    raw_options(s)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("simulate", help="write a simulated ISMRMRD raw file with its truth")
    s.add_argument("output", help="output .h5")
    s.add_argument("--kind", default="cine", help="cine | perfusion")
    s.add_argument("--trajectory", default="radial", help="radial | cartesian")
    s.add_argument("--matrix", type=int, default=64)
    s.add_argument("--frames", type=int, default=12)
    s.add_argument("--coils", type=int, default=8)
    s.add_argument("--spokes", type=int, default=13, help="spokes per frame (radial)")
    s.add_argument("--acceleration", type=float, default=8.0, help="R (Cartesian)")
    s.add_argument("--noise", type=float, default=0.01, help="k-space noise σ, truth peak = 1")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--texture",
        type=float,
        default=0.0,
        help="static tissue texture of the cine phantom, relative amplitude 0-1 (default 0: "
        "piecewise constant)",
    )
    s.add_argument(
        "--breathing",
        type=float,
        default=0.0,
        help="free breathing during the cine phantom: head-foot motion of the whole thorax, "
        "peak fraction of the FOV 0-0.2 (default 0: breath-held)",
    )
    s.add_argument(
        "--position",
        type=_vec3,
        default=(0.0, 0.0, 0.0),
        metavar="X,Y,Z",
        help="slice centre in patient coordinates (LPS, mm; default 0,0,0)",
    )
    s.add_argument(
        "--read-dir",
        type=_vec3,
        default=(1.0, 0.0, 0.0),
        metavar="X,Y,Z",
        help="unit vector of the readout (image x) in LPS (default 1,0,0: axial)",
    )
    s.add_argument(
        "--phase-dir",
        type=_vec3,
        default=(0.0, 1.0, 0.0),
        metavar="X,Y,Z",
        help="unit vector of phase encoding (image y), perpendicular to --read-dir (default 0,1,0)",
    )
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("recon", help="reconstruct a raw file")
    raw_options(s)
    s.add_argument("-o", "--output", required=True, help="output folder")
    g = method_options(s, device="cpu")
    s.add_argument(
        "--lam-sweep",
        type=_lam_list,
        default=None,
        metavar="L1,L2,...",
        help="try these --lam values, print data consistency, keep the discrepancy choice",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    s.add_argument(
        "--formats",
        type=_formats,
        default=("h5", "gif"),
        metavar="h5,nifti,dicom,mrd,gif,mp4",
        help="outputs to write (default h5,gif; gif includes montage.png and loss.png)",
    )
    g.add_argument("--checkpoint-every", type=int, default=0, help="write OUT/checkpoint.pt")
    g.add_argument("--resume", default=None, metavar="OUT", help="continue from OUT/checkpoint.pt")
    s.set_defaults(func=cmd_recon)

    s = sub.add_parser("batch", help="every slice of many raw files, on Ray (resumable)")
    raw_options(s, many=True)
    s.add_argument("-o", "--output", required=True, help="output folder: OUT/<scan>/slice<NN>/")
    method_options(s, device="auto")
    s.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="join a Ray cluster: auto (the one `ray start` set up here) or HOST:PORT "
        "(default: a local Ray instance on this machine)",
    )
    s.add_argument("--jobs", type=int, default=None, help="at most this many slices at once")
    s.add_argument("--cpus-per-task", type=float, default=1, help="Ray CPUs per slice (1)")
    s.add_argument(
        "--gpus-per-task", type=float, default=0, help="Ray GPUs per slice (0; 0.5 shares a GPU)"
    )
    s.add_argument("--retries", type=int, default=2, help="retries of a slice whose worker died")
    s.add_argument(
        "--formats",
        type=_formats,
        default=("h5", "gif"),
        metavar="h5,nifti,dicom,mrd,gif,mp4",
        help="outputs of each slice, as recon --formats (default h5,gif)",
    )
    s.add_argument("--force", action="store_true", help="redo slices already complete")
    s.add_argument("--quiet", action="store_true", help="no progress, only the last line")
    s.set_defaults(func=cmd_batch)

    s = sub.add_parser("eval", help="PSNR, SSIM, NRMSE of a reconstruction against a reference")
    s.add_argument("recon", help="recon.h5[:/dataset]")
    s.add_argument("--reference", required=True, help="REF.h5[:/dataset] (default /reference)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("export", help="write a recon.h5 as NIfTI, DICOM, MRD images or MP4")
    s.add_argument("recon", help="recon.h5 written by `mridip recon`")
    s.add_argument("--to", required=True, choices=["nifti", "dicom", "mrd", "mp4"])
    s.add_argument(
        "-o",
        "--output",
        required=True,
        help="file (.nii.gz or .nii, .h5, .mp4) or, for dicom, a new or empty folder",
    )
    s.add_argument(
        "--complex", action="store_true", help="nifti, mrd: complex values, not the magnitude"
    )
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("methods", help="list the methods")
    s.add_argument("--matrix", type=int, default=128, help="matrix for the parameter counts")
    s.add_argument("--frames", type=int, default=20, help="frames for the parameter counts")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("bench", help="measure speed against peers on this machine")
    s.add_argument("--quick", action="store_true", help="small sizes, a few minutes at most")
    s.add_argument(
        "--only",
        default=None,
        help="comma-separated sections (default: all but 'stop', which takes hours on a CPU)",
    )
    s.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods for the 'quality' and 'stop' sections",
    )
    s.add_argument("--device", default="cpu")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument(
        "-o",
        "--output",
        default="bench.json",
        help="JSON report (default bench.json; the quality and stop sections also write "
        "PSNR-against-time plots beside it: bench.png, bench_stop.png)",
    )
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="reconstruct the bundled sample and compare methods")
    s.add_argument(
        "--sample",
        default=str(Path(__file__).resolve().parent.parent / "data" / "sample_cine_breathing.h5"),
    )
    s.add_argument("--out", default="out/demo")
    s.add_argument("--methods", default="zf,cgsense,tv,lps,lrdip", help="comma-separated methods")
    s.add_argument(
        "--dip-steps",
        type=int,
        default=None,
        help="step limit of the DIP methods (default 3000 on a CPU with native bfloat16, whose "
        "steps cost 40%%, else 2000: the demo within about 3 minutes on 2 cores; lrdip's own "
        "limit is 5000)",
    )
    s.add_argument(
        "--jobs",
        type=int,
        default=None,
        choices=(1, 2),
        help="2: the CS methods in a worker thread beside the DIP fits, half of torch's threads "
        "each (default on two or more cores); 1: one method after another",
    )
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("study", help="run a retrospective study from a TOML file")
    s.add_argument("study", help="study file (.toml, see docs/study.md)")
    s.add_argument("-o", "--output", required=True, help="output folder (a rerun resumes it)")
    s.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    s.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the cells as Ray tasks: local (a Ray instance on this machine), auto or "
        "HOST:PORT",
    )
    s.add_argument("--quiet", action="store_true", help="no line per finished cell")
    s.set_defaults(func=cmd_study)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mridip`` console script; returns the exit code.

    Called with ``argv=None`` (the console script, ``python -m mridip.cli``) it does not
    return: it ends the process with :func:`_exit_now` once the command is done.
    """
    if argv is None:
        _exit_now(_run(None))
    return _run(argv)


def _exit_now(code: int) -> None:
    """End the process without tearing the interpreter and the C++ runtime down.

    ``mridip info`` or ``recon`` of a non-Cartesian scan runs torchkbnufft, whose TorchScript
    ``fork`` tasks start PyTorch's inter-op threads ("PTThreadPool"; a radial ``info``, which
    needs no NUFFT, leaves none). They are still alive when the interpreter finalises and the
    C++ static destructors run, and that teardown ended runs of ``mridip info FILE
    --spokes-per-frame 64`` in ``std::terminate`` ("terminate called without an active
    exception", SIGABRT, exit code 134) after the result was printed (issue 18: 4 of 57).
    So the steps of a normal exit that matter are taken here, while everything is whole
    (non-daemon threads joined, ``atexit`` handlers such as Ray's shutdown and temporary-
    folder cleanup run, streams flushed), and the process ends with ``os._exit``: no teardown
    runs beside the pool threads. Outputs are complete before: they are written under
    temporary names and renamed.
    """
    import atexit
    import os
    import threading

    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _one_line_warnings()
    try:
        return int(args.func(args))
    except MridipError as exc:
        print(f"mridip: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable output folder, disk full...
        print(
            f"mridip: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("mridip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
