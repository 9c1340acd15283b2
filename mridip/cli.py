"""The ``mridip`` command: ``info | simulate | recon | eval | methods | bench | demo``.

A thin layer over the library. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from mridip.errors import MridipError


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


def _load(a: argparse.Namespace):
    from mridip.preprocess import load

    return load(
        a.raw,
        group=a.group,
        slice_index=a.slice,
        spokes_per_frame=a.spokes_per_frame,
        time_dim=a.time_dim,
    )


def cmd_info(a: argparse.Namespace) -> int:
    scan = _load(a)
    ks, raw = scan.kspace, scan.raw
    h = raw.header
    lines = [
        f"file         {raw.path} (group '{raw.group}', header parsed with {h.parsed_with})",
        f"trajectory   {h.trajectory}",
        f"matrix       recon {h.recon_matrix[1]}×{h.recon_matrix[0]} (y×x), "
        f"encoded {h.encoded_matrix[1]}×{h.encoded_matrix[0]}, "
        f"FOV {h.recon_fov_mm[1]:.0f}×{h.recon_fov_mm[0]:.0f} mm",
        f"coils        {ks.n_coils}",
        f"slices       {len(set(raw.head['slice'].tolist()))}",
        f"frames       {ks.n_frames} (time in {ks.meta.get('time_dim') or 'binned stream'})",
    ]
    if ks.is_cartesian:
        assert ks.mask is not None
        per = ks.mask[:, :, 0].sum(1).float()
        lines.append(f"lines/frame  {per.mean():.1f} of {ks.matrix[0]}")
    else:
        spf, ro = ks.meta.get("spokes_per_frame"), ks.meta.get("readout_samples")
        lines.append(f"spokes/frame {spf} × {ro} samples")
    lines += [
        f"acceleration R ≈ {ks.acceleration:.1f}",
        f"noise scans  {raw.dropped.get('noise', 0)}"
        + (" (data prewhitened)" if raw.noise is not None else " (not prewhitened)"),
        f"frame times  {float(ks.frame_times[0]):.3f} … {float(ks.frame_times[-1]):.3f} s",
        f"reference    {'yes' if scan.reference is not None else 'no'}"
        f"{', with coil maps' if scan.maps is not None else ''}",
    ]
    print("\n".join(lines))
    return 0


def cmd_recon(a: argparse.Namespace) -> int:
    from mridip.coils import estimate_maps
    from mridip.io.results import write_recon
    from mridip.methods import reconstruct, resolve_device
    from mridip.metrics import evaluate

    resolve_device(a.device)  # fail before loading on a machine without CUDA
    t0 = time.perf_counter()
    scan = _load(a)
    if a.maps == "file":
        if scan.maps is None:
            raise MridipError(f"--maps file: {a.raw} stores no reference coil maps")
        maps = scan.maps
    elif a.maps == "auto":
        maps = scan.maps if scan.maps is not None else estimate_maps(scan.kspace)
    else:
        maps = estimate_maps(scan.kspace, method=a.maps)
    options: dict[str, Any] = {}
    if a.lam is not None:
        options["lam"] = a.lam
    rec = reconstruct(
        scan.kspace, a.method, maps, device=a.device, seed=a.seed, iters=a.iters, **options
    )
    config = dict(rec.config, raw=str(a.raw), slice=a.slice, maps=a.maps, group=scan.raw.group)
    history = {k: v for k, v in rec.history.items() if len(v)}
    write_recon(
        a.output,
        rec.image.numpy(),
        method=a.method,
        config=config,
        frame_times=None if rec.frame_times is None else rec.frame_times.numpy(),
        maps=rec.maps.numpy(),
        history={k: __import__("numpy").asarray(v) for k, v in history.items()},
        seconds=rec.seconds,
    )
    msg = f"{a.method}: {scan.kspace.describe()} in {rec.seconds:.2f} s → {a.output}/recon.h5"
    if scan.reference is not None and scan.reference.shape == tuple(rec.image.shape):
        q = evaluate(rec.image, scan.reference)
        msg += f" | vs reference: PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.3f}"
    if not a.quiet:
        print(msg)
        print(f"total {time.perf_counter() - t0:.1f} s; pictures: {a.output}/cine.gif, montage.png")
    return 0


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

    for spec in METHODS.values():
        print(f"{spec.name:10s} {spec.family:9s} {spec.description}")
    missing = [m for m in PLANNED if m not in METHODS]
    if missing:
        print(f"planned: {', '.join(missing)}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from mridip.bench import run_bench

    report = run_bench(quick=a.quick, device=a.device, only=a.only)
    text = json.dumps(report, indent=2)
    if a.json:
        print(text)
    if a.output:
        from mridip.io.atomic import atomic_path

        with atomic_path(a.output) as tmp:
            tmp.write_text(text)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """Reconstruct the bundled sample with every available method and compare with the truth."""
    from mridip.io.results import write_recon
    from mridip.methods import METHODS, reconstruct
    from mridip.metrics import evaluate
    from mridip.preprocess import load

    sample = Path(a.sample)
    scan = load(sample)
    print(f"sample   {sample}: {scan.kspace.describe()}")
    print(f"{'method':10s} {'PSNR dB':>8s} {'SSIM':>6s} {'NRMSE':>6s} {'seconds':>8s}")
    for name in a.methods.split(","):
        if name not in METHODS:
            continue
        rec = reconstruct(scan.kspace, name, scan.maps, seed=0)
        q = evaluate(rec.image, scan.reference)
        out = Path(a.out) / name
        write_recon(
            out,
            rec.image.numpy(),
            method=name,
            config=rec.config,
            frame_times=rec.frame_times.numpy() if rec.frame_times is not None else None,
        )
        print(f"{name:10s} {q['psnr']:8.2f} {q['ssim']:6.3f} {q['nrmse']:6.3f} {rec.seconds:8.2f}")
    print(f"pictures in {a.out}/<method>/cine.gif and montage.png")
    return 0


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mridip", description="Dynamic MRI reconstruction with deep image priors.")
    from mridip import __version__

    p.add_argument("--version", action="version", version=f"mridip {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def raw_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("raw", help="ISMRMRD raw file (.h5)")
        sp.add_argument("--group", default=None, help="ISMRMRD group (default: the last one)")
        sp.add_argument("--slice", type=int, default=0, help="slice index (default 0)")
        sp.add_argument(
            "--spokes-per-frame",
            type=int,
            default=None,
            help="bin a radial stream without frame labels into frames",
        )
        sp.add_argument(
            "--time-dim",
            choices=["phase", "repetition"],
            default=None,
            help="encoding counter that holds time (default: detected)",
        )

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
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("recon", help="reconstruct a raw file")
    raw_options(s)
    s.add_argument("-o", "--output", required=True, help="output folder")
    s.add_argument("--method", default="cgsense", help="see `mridip methods`")
    s.add_argument("--iters", type=int, default=None)
    s.add_argument("--lam", type=float, default=None, help="regularisation weight")
    s.add_argument("--maps", default="auto", help="auto | file | lowres (auto: file if stored)")
    s.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_recon)

    s = sub.add_parser("eval", help="PSNR, SSIM, NRMSE of a reconstruction against a reference")
    s.add_argument("recon", help="recon.h5[:/dataset]")
    s.add_argument("--reference", required=True, help="REF.h5[:/dataset] (default /reference)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("methods", help="list the methods")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("bench", help="measure speed against peers on this machine")
    s.add_argument("--quick", action="store_true", help="small sizes, a few minutes at most")
    s.add_argument("--only", default=None, help="comma-separated sections (default: all)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("-o", "--output", default="bench.json", help="JSON report (default bench.json)")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="reconstruct the bundled sample and compare methods")
    s.add_argument(
        "--sample",
        default=str(Path(__file__).resolve().parent.parent / "data" / "sample_cine_radial.h5"),
    )
    s.add_argument("--out", default="out/demo")
    s.add_argument("--methods", default="zf,cgsense,mridip")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mridip`` console script; returns the exit code."""
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
