"""Pictures people look at: a cine GIF, a montage of frames with an x–t profile, loss curves."""

from __future__ import annotations

import os

import numpy as np


def _display_scale(image: np.ndarray) -> np.ndarray:
    mag = np.abs(image)
    hi = float(np.percentile(mag, 99.5)) or float(mag.max()) or 1.0
    return np.clip(mag / hi, 0.0, 1.0)


def write_gif(path: str | os.PathLike[str], image: np.ndarray, frame_times=None) -> None:
    """Loop the magnitude series as an 8-bit GIF, at the series' own frame rate (40–500 ms)."""
    import imageio.v3 as iio

    frames = (_display_scale(image) * 255).round().astype(np.uint8)
    dt = 0.08
    if frame_times is not None and len(frame_times) > 1:
        dt = float(np.median(np.diff(np.asarray(frame_times, float))))
    ms = int(np.clip(dt * 1000.0, 40, 500))
    iio.imwrite(str(path), frames, extension=".gif", duration=ms, loop=0)


def write_montage(
    path: str | os.PathLike[str], image: np.ndarray, frame_times=None, title: str = ""
) -> None:
    """Grid of up to 12 frames and the x–t profile through the centre row, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mag = _display_scale(image)
    t = mag.shape[0]
    show = np.unique(np.linspace(0, t - 1, min(t, 12)).round().astype(int))
    cols = min(len(show), 6)
    rows = int(np.ceil(len(show) / cols)) + 1
    fig = plt.figure(figsize=(2.2 * cols, 2.2 * rows), dpi=100)
    for i, f in enumerate(show):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(mag[f], cmap="gray", vmin=0, vmax=1)
        label = f"frame {f}"
        if frame_times is not None:
            label += f" · {float(frame_times[f]):.2f} s"
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(rows, 1, rows)
    row = mag.shape[1] // 2
    ax.imshow(mag[:, row, :].T, cmap="gray", vmin=0, vmax=1, aspect="auto")
    ax.set_xlabel("frame")
    ax.set_ylabel(f"x (row {row})")
    ax.set_title("x–t profile through the centre row", fontsize=8)
    if title:
        fig.suptitle(title)
    # fixed margins: tight_layout measured every tick label and took half of the montage's
    # second (one per method in `mridip demo`)
    top = 1 - (0.5 if title else 0.3) / (2.2 * rows)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.6 / (2.2 * rows), top=top, hspace=0.3)
    fig.savefig(path, format="png")
    plt.close(fig)


def write_loss(path: str | os.PathLike[str], history: dict[str, np.ndarray]) -> None:
    """Plot every 1-D history curve against its step, log scale, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, values in history.items():
        v = np.asarray(values, float)
        if v.ndim != 1 or len(v) < 2 or name == "step" or name.endswith("_step") or name == "lr":
            continue
        # a curve ``val_residual`` is drawn against ``val_step`` when there is one
        steps = history.get(name.split("_")[0] + "_step", history.get("step"))
        x = np.asarray(steps) if steps is not None and len(steps) == len(v) else np.arange(len(v))
        ax.semilogy(x, np.abs(v) + 1e-30, label=name)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_lam_curve(path: str | os.PathLike[str], choice: dict, method: str) -> None:
    """The score of every weight ``--lam auto`` tried, the chosen one marked, as PNG.

    ``choice`` is :meth:`mridip.lam.LamChoice.record`: ``lams``, ``scores``, ``lam``, ``rule``,
    ``score`` and, for the discrepancy rule, ``target``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams, scores = np.asarray(choice["lams"], float), np.asarray(choice["scores"], float)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.semilogx(lams, scores, "o-", color="C0")
    ax.axvline(float(choice["lam"]), color="C3", lw=1, label=f"chosen λ = {choice['lam']:.3g}")
    if "target" in choice:
        ax.axhline(float(choice["target"]), color="0.5", lw=1, ls="--", label="target")
    label = {"heldout_residual": "held-out residual (relative)", "chi2": "χ² per sample"}
    ax.set_xlabel("λ (relative)")
    ax.set_ylabel(label.get(choice["score"], choice["score"]))
    ax.set_title(f"{method}: λ by {choice['rule']}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_quality_plot(path: str | os.PathLike[str], quality: dict) -> None:
    """PSNR against wall time of ``mridip bench``'s quality section, as PNG.

    Methods that return one image are points at (seconds, PSNR); the DIP fits are curves of
    their generator's PSNR along the fit, ending in a point at the final image (after the final
    data-consistency step).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for i, (name, row) in enumerate(quality["methods"].items()):
        color = f"C{i % 10}"
        trace = row.get("trace")
        if trace:
            t, p = np.asarray(trace, float).T
            ax.plot(t, p, color=color, lw=1.2, alpha=0.8)
        ax.plot([row["seconds"]], [row["psnr"]], "o", color=color, label=name)
    s = quality["size"]
    ax.set_xscale("log")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("PSNR against the truth (dB)")
    ax.set_title(
        f"radial cine {s['matrix']}², {s['coils']} coils, {s['frames']} frames, "
        f"{s['spokes']} spokes",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
