"""PSNR against wall time from the JSON rows of ``examples/dip_seeds.py --trace --cs-auto``.

Each DIP row with a trace becomes a curve (its generator image every 100 steps) and a dot (the
returned image at the fit's end); each CS row at ``--lam auto`` a square at its own time; a
dotted line marks 30 × `tv`'s time (issue 20's bound). docs/benchmarks.md's 96² figure:

    python examples/dip_seeds.py --datasets pincat --seeds 0 --matrix 96 --frames 16 \\
        --dip mridip --trace --cs-auto --out out/p96.json
    python examples/plot_psnr_time.py out/p96.json -o docs/img/dip96_psnr_time.png \\
        --title "PINCAT 96² × 16 frames, 13 spokes, seed 0"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", type=Path, help="JSON files written by dip_seeds.py")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="")
    ap.add_argument("--xlabel", default="wall time, s (one process)")
    a = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for f in a.rows:
        try:
            rows += json.loads(f.read_text())
        except (OSError, ValueError) as e:
            ap.error(f"cannot read {f}: {e}")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        if "trace" in r:
            t = [x[1] for x in r["trace"]]
            p = [x[2] for x in r["trace"]]
            (line,) = ax.plot(t, p, "-", lw=1.5, label=f"{r['method']} generator image")
            ax.plot(
                [r["seconds"]],
                [r["psnr"]],
                "o",
                color=line.get_color(),
                ms=8,
                label=f"{r['method']} returned (blend), {r['steps']} steps",
            )
    for r in rows:
        if "trace" not in r and r.get("lam") == "auto":
            ax.plot([r["seconds"]], [r["psnr"]], "s", ms=7, label=f"{r['method']} --lam auto")
    tv = next((r for r in rows if r.get("method") == "tv" and r.get("lam") == "auto"), None)
    if tv is not None:
        bound = 30 * tv["seconds"]
        ax.axvline(bound, ls=":", color="gray", lw=1, label=f"30 × tv's time ({bound:.0f} s)")
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(a.xlabel)
    ax.set_ylabel("PSNR, dB")
    ax.set_title(a.title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(a.out)


if __name__ == "__main__":
    main()
