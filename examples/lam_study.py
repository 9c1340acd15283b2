"""How well ``--lam auto`` picks the regularisation weight: PSNR at the chosen λ against the best λ
of a sweep with the truth, and what the choice costs in units of one solve.

Each row is one simulated scan (:func:`mridip.simulate.simulate`: the analytic cine and perfusion
phantoms, or a real image series from ``../shared/data`` — the rat cine and PINCAT — with
simulated coil maps, background phase, golden-angle radial or Cartesian sampling and receiver
noise, scanned from a grid twice as fine, so there is no inverse crime), written as an ISMRMRD
raw file and loaded (prewhitened with its noise scans) as a user would. For every method, every
rule of :func:`mridip.lam.choose_lam` picks ``lam`` (cost: its wall time over that of one solve
at the former default); the truth sweep then runs the method on factor-2 steps from the
choices outwards until the PSNR has fallen 1 dB below the best on both sides. With ``--bart``,
BART ``pics`` with temporal TV is swept against the truth (factors of 2 around ``tv``'s former
default), for comparison with ``tv`` at the automatic weight. Rows are appended to
``OUT/results.jsonl`` as they finish. The tables in docs/benchmarks.md come from

    nice -n 10 python examples/lam_study.py --bart --rows 0,2 --rules cv,discrepancy
    nice -n 10 python examples/lam_study.py --bart --rows 3,4,6,1,5,7,8 --rules cv
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mridip.lam import RULES, START, choose_lam, solve
from mridip.metrics import evaluate
from mridip.preprocess import load
from mridip.simulate import SimulationConfig, simulate, write_simulation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"rat": ("rat_cine/dataCine8fr.mat", "image0"), "pincat": ("pincat/Pincat.mat", "X")}
#: (dataset, trajectory, spokes or R, noise σ): two accelerations and two noise levels per dataset.
ROWS = [
    (d, "radial", spokes, noise)
    for spokes, noise in ((13, 0.01), (8, 0.03))
    for d in ("cine", "perfusion", "rat", "pincat")
] + [("cine", "cartesian", 6, 0.01)]


def read_images(source: str, frames: int) -> torch.Tensor | None:
    from scipy.io import loadmat

    rel, key = SOURCES[source]
    if not (SHARED / rel).exists():
        return None
    x = np.moveaxis(np.asarray(loadmat(SHARED / rel)[key], dtype=np.float32), -1, 0)
    return torch.from_numpy(x[:frames])


def scan(dataset: str, traj: str, acc: float, noise: float, matrix: int, frames: int, tmp: Path):
    images = None
    if dataset in SOURCES:
        images = read_images(dataset, frames)
        if images is None:
            return None
        frames = images.shape[0]
    cfg = SimulationConfig(
        kind=dataset if dataset in ("cine", "perfusion") else "cine",
        trajectory=traj,
        matrix=matrix,
        frames=frames,
        coils=8,
        spokes=int(acc),
        acceleration=float(acc),
        noise=noise,
    )
    raw = tmp / f"{dataset}.h5"
    write_simulation(raw, simulate(cfg, images=images))
    return load(raw)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_method(method, ks, maps, ref, rules, results_path, rec) -> None:
    """One method on one scan: each rule's choice, then a truth sweep around the choices."""
    rec = dict(rec, method=method)
    psnr: dict[float, float] = {}  # every solve on all samples, by λ: reused by the sweep

    def full(v: float, image=None) -> float:
        if v not in psnr:
            if image is None:
                image = solve(method, ks, maps, v).image
            psnr[v] = evaluate(image, ref)["psnr"]
        return psnr[v]

    one, t_one = timed(lambda: solve(method, ks, maps, START[method]))
    rec["solve_s"] = t_one
    full(START[method], one.image)
    for rule in rules:
        ch, t_ch = timed(lambda r=rule: choose_lam(ks, maps, method, r))
        rec[rule] = {
            "lam": ch.lam,
            "psnr": full(ch.lam, None if ch.result is None else ch.result.image),
            "cost": t_ch / t_one,
            "solves": ch.solves,
            "curve": [ch.lams, ch.scores],
        }
    # the truth sweep: factor-2 steps from the choices outwards until the PSNR has fallen
    # 1 dB below the best on both sides (at most 6 steps each way)
    chosen = [rec[r]["lam"] for r in rules] or [START[method]]
    centre = math.exp(sum(math.log(v) for v in chosen) / len(chosen))
    grid = sorted({centre * 2.0**k for k in range(-1, 2)} | set(chosen))
    for v in grid:
        full(v)
    for direction in (0.5, 2.0):
        v = min(psnr) if direction < 1 else max(psnr)
        for _ in range(6):
            best = max(psnr.values())
            if psnr[v] < best - 1.0:
                break
            v = v * direction
            full(v)
    best = max(psnr, key=psnr.__getitem__)
    rec["sweep"] = {"lam": best, "psnr": psnr[best], "grid": sorted(psnr.items())}
    rec["default_psnr"] = psnr[START[method]]
    line = f"{rec['dataset']:9s} {rec['trajectory'][:4]} {rec['acc']:>4} {rec['noise']:5.3f} "
    line += f"{method:8s} best {psnr[best]:6.2f} @{best:.3g} default {psnr[START[method]]:6.2f}"
    for rule in rules:
        r = rec[rule]
        line += f" | {rule} {r['psnr']:6.2f} @{r['lam']:.3g} ({r['cost']:.1f}x)"
    print(line, flush=True)
    with results_path.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", type=int, default=32)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--methods", default="tv,lps")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--datasets", default="cine,perfusion,rat,pincat")
    ap.add_argument("--rows", default=None, help="indices into the row list (default all)")
    ap.add_argument("--bart", action="store_true", help="also sweep BART pics against the truth")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a shared machine)")
    ap.add_argument("--out", default="lam_study")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    rows = [r for r in ROWS if r[0] in a.datasets.split(",")]
    if a.rows:
        rows = [rows[int(i)] for i in a.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, traj, acc, noise in rows:
            sc = scan(dataset, traj, acc, noise, a.matrix, a.frames, Path(tmp))
            if sc is None:
                print(f"{dataset}: data not found, skipped", file=sys.stderr)
                continue
            ks, maps, ref = sc.kspace, sc.maps, sc.reference
            for method in a.methods.split(","):
                run_method(
                    method,
                    ks,
                    maps,
                    ref,
                    a.rules.split(","),
                    results_path,
                    {"dataset": dataset, "trajectory": traj, "acc": acc, "noise": noise},
                )
            if a.bart:
                from mridip.bart import bart_executable

                if bart_executable() is not None:
                    sweep = {}
                    for v in [START["bart"] * 2.0**k for k in range(-4, 5)]:
                        sweep[v] = evaluate(solve("bart", ks, maps, v).image, ref)["psnr"]
                    best = max(sweep, key=sweep.__getitem__)
                    rec = {"dataset": dataset, "trajectory": traj, "acc": acc, "noise": noise}
                    rec.update(method="bart", sweep={"lam": best, "psnr": sweep[best]})
                    head = f"{dataset:9s} {traj[:4]} {acc:>4} {noise:5.3f} bart    "
                    print(f"{head} best {sweep[best]:6.2f} @{best:.3g}", flush=True)
                    with results_path.open("a") as f:
                        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
