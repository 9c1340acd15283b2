"""Simulate a radial cine, reconstruct it with every available method, and save a comparison.

Run: ``.venv/bin/python examples/demo_compare_methods.py`` (a few seconds on two cores).
Writes ``out/examples/compare_methods.png``: one frame per method, its error map against the truth,
and the PSNR of each.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import mridip  # noqa: E402
from mridip.simulate import SimulationConfig, simulate, write_simulation  # noqa: E402

out = Path("out/examples")
out.mkdir(parents=True, exist_ok=True)
raw = out / "cine.h5"
write_simulation(raw, simulate(SimulationConfig(matrix=64, frames=12, coils=8, spokes=13)))

scan = mridip.load(raw)
truth = abs(scan.reference)
methods = ["zf", "cgsense", "tv", "lps"]  # the DIP methods take minutes on a CPU
fig, axes = plt.subplots(2, len(methods) + 1, figsize=(3 * (len(methods) + 1), 6))
frame = 4
axes[0, 0].imshow(truth[frame], cmap="gray")
axes[0, 0].set_title("truth")
axes[1, 0].axis("off")
for i, name in enumerate(methods, start=1):
    rec = mridip.reconstruct(scan.kspace, name, scan.maps)
    q = mridip.evaluate(rec.image, scan.reference)
    img = abs(rec.image.numpy()) * q["scale"]
    axes[0, i].imshow(img[frame], cmap="gray", vmin=0, vmax=truth.max())
    axes[0, i].set_title(f"{name}: {q['psnr']:.1f} dB, {rec.seconds:.1f} s")
    axes[1, i].imshow(abs(img[frame] - truth[frame]), cmap="magma", vmin=0, vmax=0.3 * truth.max())
    axes[1, i].set_title("|error|")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
fig.savefig(out / "compare_methods.png", dpi=90)
print(f"wrote {out / 'compare_methods.png'}")
