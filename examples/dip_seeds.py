"""lrdip (or another DIP preset) as it runs by default against the CS methods at their chosen
and swept weights, seed by seed, on the scans of ``examples/studies/dip_ablation.toml``.

A seed changes the scan (receiver noise, golden-angle start) and the fit (weights, hold-out);
the study file runs seed 0 only, for its cost. For each dataset and seed this script builds the
study's scan of that seed (:func:`mridip.study.cell_inputs`), estimates the maps as
``mridip recon`` does, runs ``lrdip`` with its defaults (and the dataset's generator options
from the study file) and, unless ``--no-cs``, ``tv``, ``lps`` and ``wavelet`` with
``--lam auto`` and over the study's grid of weights. Rows (PSNR, SSIM, in the ROI where the
dataset has one, seconds, steps, the blend's partner and weight) go to ``--out`` as JSON, one
file per run, appended as they finish, so a stopped run resumes. docs/benchmarks.md's
three-seed table comes from

    python examples/dip_seeds.py --datasets rat,pincat --seeds 0,1,2 --out out/seeds_a.json
    python examples/dip_seeds.py --datasets perfusion,cine-textured --seeds 0,1,2 \\
        --out out/seeds_b.json

and its table of the default method from ``--dip mridip --datasets rat,pincat --no-cs`` (the
CS rows are the same as lrdip's: the scans do not depend on the method). ``--matrix`` and
``--frames`` change the scan's size, ``--spokes`` the spokes per frame and ``--cartesian R``
replaces the spokes by Cartesian variable-density lines at acceleration R; ``--trace`` adds
the generator image's PSNR and the elapsed seconds every 100 steps (the time to pass a CS
image; also printed as the fit goes); ``--no-dip`` runs only the CS methods, so that a long
fit (``--no-cs``) and its CS grid can run in two processes; ``--options`` adds DIP options
as JSON (the stopping-margin rows of docs/reconstructor.md: ``--options '{"stop_margin":
0}'``, the graph preset's row there: ``--dip mridip --options '{"stop_margin": 0.01}'``; two
fits averaged: ``--dip mridip --options '{"ensemble": 2}'``).
The 96² × 16 rows:

    python examples/dip_seeds.py --datasets pincat --seeds 0 --matrix 96 --frames 16 \
        --dip lrdip --trace --cs-auto --out out/seeds_96.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from mridip.coils import estimate_maps
from mridip.methods import reconstruct
from mridip.metrics import evaluate
from mridip.study import cell_inputs, expand_cells, load_study

STUDY = Path(__file__).resolve().parent / "studies" / "dip_ablation.toml"
CS = ("tv", "lps", "wavelet")


def quality(image: Any, inp: Any) -> dict[str, float]:
    """PSNR and SSIM against the truth, and in the dataset's ROI where it has one."""
    q = evaluate(image, inp.reference)
    r = {"psnr": round(q["psnr"], 2), "ssim": round(q["ssim"], 4)}
    if inp.roi is not None:
        qr = evaluate(image, inp.reference, roi=inp.roi)
        r |= {"psnr_roi": round(qr["psnr"], 2), "ssim_roi": round(qr["ssim"], 4)}
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="rat,pincat,cine-textured,perfusion")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--dip", default="lrdip", help="DIP preset (default lrdip)")
    skip = ap.add_mutually_exclusive_group()
    skip.add_argument("--no-cs", action="store_true", help="the DIP preset only")
    skip.add_argument(
        "--no-dip", action="store_true", help="the CS methods only (run the DIP in another process)"
    )
    ap.add_argument("--cs-auto", action="store_true", help="CS at --lam auto only, no grid")
    ap.add_argument("--matrix", type=int, default=None, help="scan matrix (default: study's)")
    ap.add_argument("--frames", type=int, default=None, help="frames (default: study's)")
    ap.add_argument("--trace", action="store_true", help="generator PSNR every 100 steps")
    ap.add_argument(
        "--more-lams",
        default="",
        metavar="L1,L2",
        help="weights added to every CS method's grid (where the study's largest still wins)",
    )
    acq = ap.add_mutually_exclusive_group()
    acq.add_argument("--spokes", type=int, default=None, help="radial spokes per frame (13)")
    acq.add_argument(
        "--cartesian",
        type=float,
        default=None,
        metavar="R",
        help="Cartesian variable-density lines at acceleration R instead of radial spokes",
    )
    ap.add_argument(
        "--options", default="{}", help="more DIP options as JSON, e.g. '{\"width\": 32}'"
    )
    ap.add_argument("--out", default="out/dip_seeds.json")
    a = ap.parse_args()
    try:
        extra = json.loads(a.options)
    except json.JSONDecodeError as exc:
        ap.error(f"--options is not JSON: {exc}")
    if not isinstance(extra, dict):
        ap.error(f"--options must be a JSON object, got {a.options!r}")
    try:
        more = [float(x) for x in a.more_lams.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--more-lams must be numbers separated by commas, got {a.more_lams!r}")
    if any(not x > 0 for x in more):
        ap.error(f"--more-lams must be positive, got {a.more_lams!r}")
    if a.spokes is not None and a.spokes < 1:
        ap.error(f"--spokes must be ≥ 1, got {a.spokes}")
    if a.cartesian is not None and not a.cartesian > 1:
        ap.error(f"--cartesian must be an acceleration > 1, got {a.cartesian}")
    cells = expand_cells(load_study(STUDY))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = json.loads(out.read_text()) if out.exists() else []
    done = {(r["dataset"], r["seed"], r["method"], str(r.get("lam"))) for r in rows}

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(out)
        print(row, flush=True)

    for ds in a.datasets.split(","):
        mine = [c for c in cells if c["dataset"]["name"] == ds]
        if not mine:
            raise SystemExit(f"{ds}: not a dataset of {STUDY.name}")
        grids: dict[str, list[float]] = {m: [] for m in CS}
        for c in mine:
            m = c["method"]
            if m["method"] in CS and "lam" in m["options"]:
                grids[m["method"]].append(float(m["options"]["lam"]))
        for m in CS:
            grids[m] = sorted(set(grids[m]) | set(more))
        dip = next(c for c in mine if c["method"]["label"] == "lrdip")
        for seed in (int(s) for s in a.seeds.split(",")):
            cell = dict(dip, seed=seed)
            size = {"matrix": a.matrix, "frames": a.frames}
            cell["dataset"] = dict(dip["dataset"], **{k: v for k, v in size.items() if v})
            if a.spokes:
                cell["level"] = {"spokes": a.spokes}
            elif a.cartesian:
                cell["sampling"] = dict(cell["sampling"], pattern="cartesian-vd")
                cell["level"] = {"accelerations": a.cartesian}
            inp = cell_inputs(cell)
            maps = estimate_maps(inp.kspace)

            if (ds, seed, a.dip, "None") not in done and not a.no_dip:
                t0 = time.perf_counter()
                opts = {**dip["method"]["options"], "progress": False, **extra}
                trace: list[tuple[int, float, float]] = []
                if a.trace:

                    def monitor(
                        step: int,
                        image: Any,
                        t0: float = t0,
                        inp: Any = inp,
                        trace: Any = trace,
                        where: str = f"{ds} seed {seed}",
                    ) -> None:
                        if step % 100 == 0:
                            psnr = quality(image.detach().cpu(), inp)["psnr"]
                            trace.append((step, round(time.perf_counter() - t0, 1), psnr))
                            print(f"{where} step {step}: {psnr:.2f} dB", flush=True)

                    opts["monitor"] = monitor
                rec = reconstruct(inp.kspace, a.dip, maps, seed=seed, **opts)
                blend = rec.config.get("blend") or {}
                add(
                    {"dataset": ds, "seed": seed, "method": a.dip, **quality(rec.image, inp)}
                    | {
                        "seconds": round(time.perf_counter() - t0, 1),
                        "steps": rec.config.get("steps_run"),
                        "stopped_early": rec.config.get("stopped_early"),
                        "partner": blend.get("method"),
                        "weight": blend.get("weight"),
                        "weights": blend.get("weights"),  # a stack's, per image
                        "tried": blend.get("tried"),
                    }
                    | ({"trace": trace} if a.trace else {})
                )
            if a.no_cs:
                continue
            for m in CS:
                for lam in ["auto", *([] if a.cs_auto else grids[m])]:
                    if (ds, seed, m, str(lam)) in done:
                        continue
                    t0 = time.perf_counter()
                    rec = reconstruct(inp.kspace, m, maps, seed=seed, lam=lam)
                    add(
                        {"dataset": ds, "seed": seed, "method": m, "lam": lam}
                        | quality(rec.image, inp)
                        | {"seconds": round(time.perf_counter() - t0, 1)}
                    )


if __name__ == "__main__":
    main()
