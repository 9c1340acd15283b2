"""How ``--lam auto``'s cross-validation should hold samples out: single samples or whole
readouts (radial spokes), measured against the truth on the scans of
``examples/studies/dip_ablation.toml``.

For each dataset, size, method and seed this script builds the study's scan
(:func:`mridip.study.cell_inputs`; ``--matrix`` changes its size), estimates the maps as
``mridip recon`` does, runs :func:`mridip.lam.choose_lam` once per hold-out variant
(``unit:fraction``, e.g. ``sample:0.1`` — the former radial rule — and ``readout:0.2``, the
rule of ``lps`` and ``wavelet`` since then) and solves once more on all samples at the chosen
weight (and, for ``tv``, the chosen iteration count). One JSON row per variant: the weight,
the iterations, PSNR and SSIM against the truth, seconds. docs/benchmarks.md's table "Radial
data: whole spokes held out" comes from runs such as

    python examples/lam_holdout_units.py --datasets rat,pincat --methods tv,wavelet,lps \\
        --matrix 48 --seeds 0
    python examples/lam_holdout_units.py --datasets rat --methods wavelet,lps --matrix 192 \\
        --variants readout:0.2

and its Cartesian table from (``:spare`` spares the centre lines; without it nothing is
spared, whatever the method's default)

    python examples/lam_holdout_units.py --datasets pincat,rat --seeds 0,1,2 --cartesian 8 \\
        --variants readout:0.2,readout:0.2:spare

(one torch thread each; the 192² rat costs minutes per variant). Compare with the truth-swept
weights of ``examples/dip_seeds.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mridip.coils import estimate_maps
from mridip.lam import choose_lam, solve
from mridip.metrics import evaluate
from mridip.study import cell_inputs, expand_cells, load_study

STUDY = Path(__file__).parent / "studies" / "dip_ablation.toml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="rat,pincat")
    p.add_argument("--methods", default="tv,wavelet,lps")
    p.add_argument("--seeds", default="0")
    p.add_argument("--matrix", type=int, default=None, help="the scan's size (study: 48)")
    p.add_argument("--variants", default="sample:0.1,readout:0.2", help="unit:fraction[:spare],…")
    p.add_argument("--cartesian", type=float, default=None, help="Cartesian VD lines at R")
    p.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    a = p.parse_args()
    cells = expand_cells(load_study(STUDY))
    variants = [v.split(":") for v in a.variants.split(",")]
    for name in a.datasets.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            cell = dict(next(c for c in cells if c["dataset"]["name"] == name), seed=seed)
            if a.matrix:
                cell["dataset"] = dict(cell["dataset"], matrix=a.matrix)
            if a.cartesian:
                cell["sampling"] = dict(cell["sampling"], pattern="cartesian-vd")
                cell["level"] = {"accelerations": a.cartesian}
            scan = cell_inputs(cell)
            ks, maps = scan.kspace, estimate_maps(scan.kspace)
            for method in a.methods.split(","):
                for unit, fraction, *spare in variants:
                    t0 = time.perf_counter()
                    choice = choose_lam(
                        ks,
                        maps,
                        method,
                        seed=seed,
                        holdout_unit=unit,
                        holdout=float(fraction),
                        spare_centre=spare == ["spare"],
                    )
                    kw = {} if choice.iters is None else {"iters": choice.iters}
                    image = solve(method, ks, maps, choice.lam, seed=seed, **kw).image
                    q = evaluate(image, scan.reference)
                    row = {
                        "dataset": name,
                        "matrix": ks.matrix[0],
                        "method": method,
                        "seed": seed,
                        "holdout": ":".join([unit, fraction, *spare]),
                        "lam": round(choice.lam, 4),
                        "iters": choice.iters,
                        "psnr": round(q["psnr"], 2),
                        "ssim": round(q["ssim"], 4),
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                    print(json.dumps(row), flush=True)
                    if a.out:
                        with open(a.out, "a") as f:
                            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
