"""Retrospective study on real images: DIP presets against CS baselines and tuned BART.

Scans a real magnitude series from ``../shared/data`` (the 7 T rat cine, 192² × 8 frames, or
the PINCAT phantom) with simulated coil maps, background phase, a golden-angle radial (or
Cartesian) trajectory and receiver noise (:func:`mridip.simulate.simulate` with ``images=``),
writes it as an ISMRMRD raw file, loads it as a user would and reconstructs it with every
method asked for. ``bart`` is tuned as a user with the truth would tune it: BART ``pics`` with
temporal TV over a grid of weights (with and without spatial TV), the best PSNR kept. The DIP
presets run with their defaults (stopping rule on). Prints a table, writes ``study.json`` and a
montage per method to ``--out``. The table in docs/benchmarks.md comes from

    python examples/real_image_study.py --source rat --matrix 96 \
        --methods zf,cgsense,tv,lps,bart,mridip,tddip
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mridip.methods import reconstruct
from mridip.metrics import evaluate
from mridip.preprocess import load
from mridip.simulate import SimulationConfig, simulate, write_simulation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {
    "rat": ("rat_cine/dataCine8fr.mat", "image0"),
    "pincat": ("pincat/Pincat.mat", "X"),
}
BART_GRID = [(f, s) for f in (0.03, 0.1, 0.3, 1.0, 3.0, 10.0) for s in (0.0, 0.3)]


def read_images(source: str, frames: int | None) -> torch.Tensor:
    """The series as ``(T, H, W)`` float32 (the .mat files store ``(H, W, T)``)."""
    from scipy.io import loadmat

    rel, key = SOURCES[source]
    x = np.moveaxis(np.asarray(loadmat(SHARED / rel)[key], dtype=np.float32), -1, 0)
    return torch.from_numpy(x[:frames] if frames else x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=sorted(SOURCES), default="rat")
    ap.add_argument("--frames", type=int, default=None, help="first frames only (default all)")
    ap.add_argument("--matrix", type=int, default=96)
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--trajectory", choices=("radial", "cartesian"), default="radial")
    ap.add_argument("--spokes", type=int, default=13)
    ap.add_argument("--acceleration", type=float, default=8.0)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--methods", default="zf,cgsense,tv,lps,bart,mridip,tddip")
    ap.add_argument("--steps", type=int, default=None, help="DIP step limit (default: theirs)")
    ap.add_argument("--out", default="real_image_study")
    a = ap.parse_args()
    if not (SHARED / SOURCES[a.source][0]).exists():
        print(f"{SHARED / SOURCES[a.source][0]} not found: nothing to study", file=sys.stderr)
        raise SystemExit(2)

    from mridip.baselines import TV_LAM
    from mridip.io.pictures import write_montage

    images = read_images(a.source, a.frames)
    cfg = SimulationConfig(
        trajectory=a.trajectory,
        matrix=a.matrix,
        frames=images.shape[0],
        coils=a.coils,
        spokes=a.spokes,
        acceleration=a.acceleration,
        noise=a.noise,
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "scan.h5"
    write_simulation(raw, simulate(cfg, images=images))
    scan = load(raw)
    assert scan.maps is not None and scan.reference is not None
    rows: dict[str, dict] = {}
    for name in filter(None, a.methods.split(",")):
        candidates = [{}]
        if name == "bart":
            candidates = [{"lam": TV_LAM * f, "lam_spatial": TV_LAM * f * s} for f, s in BART_GRID]
        elif name in ("dip", "tddip", "gip", "mridip"):
            candidates = [{"progress": False} | ({"iters": a.steps} if a.steps else {})]
        best = None
        for opts in candidates:
            t0 = time.perf_counter()
            rec = reconstruct(scan.kspace, name, scan.maps, seed=0, **opts)
            q = evaluate(rec.image, scan.reference)
            row = {
                "psnr": round(q["psnr"], 2),
                "ssim": round(q["ssim"], 4),
                "seconds": round(time.perf_counter() - t0, 1),
                "options": {k: v for k, v in opts.items() if k != "progress"},
            }
            for key in ("best_step", "steps_run"):
                if key in rec.config:
                    row[key] = rec.config[key]
            if best is None or row["psnr"] > best[0]["psnr"]:
                best = (row, rec.image)
        assert best is not None
        rows[name] = best[0]
        print(name, rows[name], flush=True)
        write_montage(out / f"{name}.png", best[1].numpy(), title=f"{name} {best[0]['psnr']} dB")
    meta = {"config": vars(a), "truth_frames": int(images.shape[0])}
    (out / "study.json").write_text(json.dumps({"meta": meta, "methods": rows}, indent=1))
    os.remove(raw)
    print(f"{'method':10} {'PSNR':>7} {'SSIM':>7} {'time':>8}")
    for name, r in rows.items():
        print(f"{name:10} {r['psnr']:7.2f} {r['ssim']:7.4f} {r['seconds']:7.1f}s")


if __name__ == "__main__":
    main()
