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
    nice -n 5 python examples/lam_study.py --matrix 64 --rows 0,1,2,3,4,5,6,7 --rules cv \
        --sweep-iters 60
    nice -n 5 python examples/lam_study.py --matrix 64 --rows 0,1,2,3,4,5,6,7 --cost-only

For methods whose iterations ``--lam auto`` chooses (:data:`mridip.lam.ITER_CAP`), the truth
sweep scores every 5th iterate, so it reports the best weight at the default iterations and the
best (weight, iterations) pair; ``--sweep-iters`` runs it past the cap.
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

from mridip.lam import ITER_CAP, ITER_EVERY, RULES, START, choose_lam, solve
from mridip.metrics import evaluate
from mridip.preprocess import load
from mridip.simulate import SimulationConfig, simulate, write_simulation

#: Iterations of each method when none is given (mridip.methods' defaults).
DEFAULT_ITERS = {"tv": 30, "lps": 50, "wavelet": 60, "cgsense": 20}
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


def run_method(method, ks, maps, ref, rules, results_path, rec, sweep_iters=None) -> None:
    """One method on one scan: each rule's choice, then a truth sweep around the choices.

    The truth sweep runs every weight to the method's iteration cap (:data:`ITER_CAP`, else its
    default) and scores the iterate every :data:`ITER_EVERY` iterations, so it gives both the
    best weight at the default iterations and the best (weight, iterations) pair.
    """
    rec = dict(rec, method=method)
    default_iters = DEFAULT_ITERS[method]
    cap = ITER_CAP.get(method, default_iters)
    if method in ITER_CAP and sweep_iters:  # the truth sweep looks past the cap
        cap = max(cap, sweep_iters)
    psnr: dict[tuple[float, int], float] = {}  # (λ, iterations) → PSNR, all samples

    def full(v: float, iters: int = default_iters, image=None) -> float:
        if (v, iters) in psnr:
            return psnr[(v, iters)]
        if image is not None:
            psnr[(v, iters)] = evaluate(image, ref)["psnr"]
            return psnr[(v, iters)]

        def check(k, x):
            if k % ITER_EVERY == 0 or k == cap:
                psnr[(v, k)] = evaluate(x, ref)["psnr"]

        if iters <= cap and (v, cap) not in psnr:
            solve(method, ks, maps, v, iters=cap, on_iter=check)
        if (v, iters) not in psnr:  # POGM's iterates before the last are not its results
            psnr[(v, iters)] = evaluate(solve(method, ks, maps, v, iters=iters).image, ref)["psnr"]
        return psnr[(v, iters)]

    one, t_one = timed(lambda: solve(method, ks, maps, START[method]))
    rec["solve_s"] = t_one
    if method not in ITER_CAP:  # else the sweep reruns it, to score its iterates too
        full(START[method], default_iters, one.image)
    for rule in rules:
        ch, t_ch = timed(lambda r=rule: choose_lam(ks, maps, method, r))
        iters = ch.iters or default_iters
        if ch.result is not None:
            final, t_final = ch.result, 0.0
        else:
            final, t_final = timed(lambda c=ch, n=iters: solve(method, ks, maps, c.lam, iters=n))
        rec[rule] = {
            "lam": ch.lam,
            "iters": iters,
            "psnr": full(ch.lam, iters, final.image),
            "cost": t_ch / t_one,
            "cost_total": (t_ch + t_final) / t_one,
            "solves": ch.solves,
            "curve": [ch.lams, ch.scores],
            "iter_curve": [ch.iter_counts, ch.iter_scores],
        }
    # the truth sweep: factor-2 steps from the choices outwards until the PSNR (at the best
    # iteration count) has fallen 1 dB below the best on both sides (at most 6 steps each way)
    chosen = [rec[r]["lam"] for r in rules] or [START[method]]
    centre = math.exp(sum(math.log(v) for v in chosen) / len(chosen))
    grid = sorted({centre * 2.0**k for k in range(-1, 2)} | set(chosen))
    for v in grid:
        full(v)

    def at(v: float) -> float:
        return max(p for (w, _), p in psnr.items() if w == v)

    for direction in (0.5, 2.0):
        lams = sorted({w for w, _ in psnr})
        v = lams[0] if direction < 1 else lams[-1]
        for _ in range(6):
            if at(v) < max(psnr.values()) - 1.0:
                break
            v = v * direction
            full(v)
    full(START[method])
    fixed = {w: p for (w, k), p in psnr.items() if k == default_iters}
    best = max(fixed, key=fixed.__getitem__)
    within = {key: p for key, p in psnr.items() if key[1] <= ITER_CAP.get(method, cap)}
    pair = max(within, key=within.__getitem__)
    beyond = max(psnr, key=psnr.__getitem__)
    rec["sweep"] = {
        "lam": best,
        "psnr": fixed[best],
        "pair": {"lam": pair[0], "iters": pair[1], "psnr": psnr[pair]},
        "pair_any": {"lam": beyond[0], "iters": beyond[1], "psnr": psnr[beyond]},
        "grid": sorted([w, k, p] for (w, k), p in psnr.items()),
    }
    rec["default_psnr"] = fixed[START[method]]
    line = f"{rec['dataset']:9s} {rec['trajectory'][:4]} {rec['acc']:>4} {rec['noise']:5.3f} "
    line += f"{method:8s} best {fixed[best]:6.2f} @{best:.3g} "
    line += f"pair {psnr[pair]:6.2f} @{pair[0]:.3g},{pair[1]} "
    line += f"any {psnr[beyond]:6.2f} @{beyond[0]:.3g},{beyond[1]} "
    line += f"default {fixed[START[method]]:6.2f}"
    for rule in rules:
        r = rec[rule]
        line += f" | {rule} {r['psnr']:6.2f} @{r['lam']:.3g},{r['iters']}"
        line += f" ({r['cost']:.1f}x, {r['cost_total']:.1f}x with the final solve)"
    print(line, flush=True)
    with results_path.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def run_cost(method, ks, maps, results_path, rec) -> None:
    """What ``--lam auto`` costs, without a truth sweep: the choice and the final solve over one
    solve at the former default (timed before and after the choice, and averaged)."""
    rec = dict(rec, method=method, cost_only=True)
    _, t_a = timed(lambda: solve(method, ks, maps, START[method]))
    ch, t_ch = timed(lambda: choose_lam(ks, maps, method))
    _, t_final = timed(lambda: solve(method, ks, maps, ch.lam, iters=ch.iters))
    _, t_b = timed(lambda: solve(method, ks, maps, START[method]))
    one = (t_a + t_b) / 2
    rec.update(solve_s=[t_a, t_b], choice_s=t_ch, final_s=t_final, lam=ch.lam, iters=ch.iters)
    rec.update(cost=t_ch / one, cost_total=(t_ch + t_final) / one)
    line = f"{rec['dataset']:9s} {rec['trajectory'][:4]} {rec['acc']:>4} {rec['noise']:5.3f} "
    line += f"{method:8s} one solve {t_a:.1f}/{t_b:.1f}s choice {t_ch:.1f}s "
    line += f"({rec['cost']:.1f}x, {rec['cost_total']:.1f}x with the final solve)"
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
    ap.add_argument(
        "--sweep-iters",
        type=int,
        default=None,
        help="run the truth sweep of methods with chosen iterations this far (past the cap)",
    )
    ap.add_argument("--cost-only", action="store_true", help="time the choice, no truth sweep")
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
                if a.cost_only:
                    head = {"dataset": dataset, "trajectory": traj, "acc": acc, "noise": noise}
                    run_cost(method, ks, maps, results_path, head)
                    continue
                run_method(
                    method,
                    ks,
                    maps,
                    ref,
                    a.rules.split(","),
                    results_path,
                    {"dataset": dataset, "trajectory": traj, "acc": acc, "noise": noise},
                    a.sweep_iters,
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
