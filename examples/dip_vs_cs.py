"""Where the default DIP method stands against the best CS image: the table and figure of
docs/benchmarks.md ("The default DIP against the best CS image").

Reads the recorded per-seed results (``docs/results/dip_vs_best_cs.csv``: one row per scan and
seed, the ``mridip`` image and the best of ``tv``, ``lps`` and ``wavelet`` over ``--lam auto``
and a grid of weights swept against the truth), prints one Markdown row per scan with the
per-seed gaps, their medians and whether issue 20's bar is met, and with ``--plot`` draws the
gaps seed by seed:

    python examples/dip_vs_cs.py --plot docs/img/dip_vs_cs.png

The bar: on real anatomy and PINCAT (``kind`` = ``anatomy``) a median PSNR gap of at least
1 dB with a positive median SSIM gap; on the piecewise-constant phantoms (``phantom``) a
median PSNR gap of at least −0.5 dB. The rows come from the runs that docs/benchmarks.md
describes (``examples/dip_seeds.py``); ``version`` says whether a row was fitted with the
version of the table (``this``) or an earlier one.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from mridip.io.atomic import atomic_path

CSV = Path(__file__).resolve().parent.parent / "docs" / "results" / "dip_vs_best_cs.csv"
#: Issue 20's bar: median PSNR gap (dB) per kind of scan; anatomy also needs SSIM above.
BAR = {"anatomy": 1.0, "phantom": -0.5}


@dataclass
class Scan:
    """The seeds of one scan (one row of the table)."""

    row: str
    kind: str
    seeds: list[int]
    psnr_gaps: list[float]
    ssim_gaps: list[float]
    stopped: int
    cs: list[str]
    earlier: bool

    @property
    def psnr_median(self) -> float:
        return round(statistics.median(self.psnr_gaps), 2)

    @property
    def ssim_median(self) -> float:
        return round(statistics.median(self.ssim_gaps), 3)

    @property
    def verdict(self) -> str:
        """``met`` or what misses."""
        misses = []
        if self.psnr_median < BAR[self.kind]:
            misses.append("PSNR")
        if self.kind == "anatomy" and not self.ssim_median > 0:
            misses.append("SSIM")
        if self.stopped < len(self.seeds):
            misses.append("stopping")
        return "met" if not misses else "not met (" + ", ".join(misses) + ")"


def load(path: Path = CSV) -> list[Scan]:
    """The scans of the CSV in file order, seeds grouped."""
    scans: dict[str, Scan] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["kind"] not in BAR:
                raise ValueError(f"{path}: unknown kind {r['kind']!r} in row {r['row']!r}")
            s = scans.setdefault(r["row"], Scan(r["row"], r["kind"], [], [], [], 0, [], False))
            s.seeds.append(int(r["seed"]))
            s.psnr_gaps.append(round(float(r["dip_psnr"]) - float(r["cs_psnr"]), 2))
            s.ssim_gaps.append(round(float(r["dip_ssim"]) - float(r["cs_ssim"]), 3))
            s.stopped += r["stopped"] == "yes"
            s.cs.append(f"`{r['cs_method']}` {r['cs_lam']}")
            s.earlier |= r["version"] != "this"
    return list(scans.values())


def _signed(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def markdown(scans: list[Scan]) -> str:
    """One Markdown row per scan: per-seed gaps, medians, stops and the verdict."""
    lines = [
        "| scan | seeds | PSNR gap per seed (dB) | median PSNR gap | SSIM gap per seed "
        "| median SSIM gap | stopped by its rule | issue 20's bar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in scans:
        mark = " ¹" if s.earlier else ""
        lines.append(
            f"| {s.row}{mark} | {', '.join(map(str, s.seeds))} "
            f"| {', '.join(_signed(g, 2) for g in s.psnr_gaps)} | **{_signed(s.psnr_median, 2)}** "
            f"| {', '.join(_signed(g, 3) for g in s.ssim_gaps)} | {_signed(s.ssim_median, 3)} "
            f"| {s.stopped} of {len(s.seeds)} | {s.verdict} |"
        )
    return "\n".join(lines)


def plot(scans: list[Scan], path: Path) -> None:
    """The PSNR and SSIM gaps seed by seed, the medians and the bar, one line per scan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(scans) + 1.6), sharey=True)
    ys = list(range(len(scans)))[::-1]
    for y, s in zip(ys, scans, strict=True):
        colour = "tab:green" if s.verdict == "met" else "tab:red"
        for ax, gaps, med in (
            (axes[0], s.psnr_gaps, s.psnr_median),
            (axes[1], s.ssim_gaps, s.ssim_median),
        ):
            ax.scatter(gaps, [y] * len(gaps), s=18, color=colour, alpha=0.6, zorder=3)
            ax.scatter([med], [y], marker="|", s=300, color="black", zorder=4)
    axes[0].axvline(BAR["anatomy"], color="grey", ls="--", lw=1, label="bar, anatomy and PINCAT")
    axes[0].axvline(BAR["phantom"], color="grey", ls=":", lw=1, label="bound, phantoms")
    axes[1].axvline(0, color="grey", ls="--", lw=1)
    axes[0].axvline(0, color="black", lw=0.5)
    axes[0].set_yticks(ys, [s.row + (" ¹" if s.earlier else "") for s in scans])
    axes[0].set_xlabel("PSNR: mridip − best CS image (dB)")
    axes[1].set_xlabel("SSIM: mridip − best CS image")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(
        "mridip against the best CS image at its truth-swept weight (dots: seeds; bar: median)"
    )
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=CSV, help="recorded results (default: %(default)s)")
    ap.add_argument("--plot", type=Path, default=None, help="write the figure here (PNG)")
    a = ap.parse_args()
    if not a.csv.is_file():
        ap.error(f"no such file: {a.csv}")
    try:
        scans = load(a.csv)
    except (KeyError, ValueError) as exc:
        ap.error(f"{a.csv} is not a results table: {exc}")
    print(markdown(scans))
    if a.plot is not None:
        try:
            plot(scans, a.plot)
        except OSError as exc:
            ap.error(f"cannot write {a.plot}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
