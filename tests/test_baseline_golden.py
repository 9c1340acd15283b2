"""Every baseline gives the images it gave before the solvers moved (issue 17).

``tests/data/baseline_golden.pt`` holds two small fixed problems (radial and Cartesian cine,
32², 4 coils, 4 frames: k-space, sampling, coil maps) and the images that ``zf``, ``cgsense``,
``tv``, ``wavelet`` and ``lps`` produced from them with the code as it was *before* the
restructuring (commit 5f7d30a). The inputs are stored, not re-simulated, so a change of the
simulator or the loader cannot move the reference. When a change is *meant* to alter a
baseline's result, re-save the images from the stored inputs with
``python tests/test_baseline_golden.py`` and say so in the commit (``--new-inputs`` re-simulates
the inputs too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mridip.kspace import DynamicKSpace

GOLDEN = Path(__file__).parent / "data" / "baseline_golden.pt"

#: Settings of each baseline: short runs, but every code path (spatial TV, Tikhonov CG, cycle
#: spinning, the low-rank prox) is exercised.
RUNS: dict[str, dict[str, Any]] = {
    "zf": {},
    "cgsense": {"iters": 8, "lam": 0.01},
    "tv": {"iters": 12, "lam_spatial": 0.02, "relaxation": 1.5},
    "wavelet": {"iters": 15},
    "lps": {"iters": 15},
}


def _run(name: str, kspace: DynamicKSpace, maps: torch.Tensor) -> torch.Tensor:
    import mridip.baselines as b

    fn = {
        "zf": b.zero_filled,
        "cgsense": b.cg_sense,
        "tv": b.total_variation,
        "wavelet": b.wavelet_fourier,
        "lps": b.low_rank_plus_sparse,
    }[name]
    return fn(kspace, maps, **RUNS[name]).image


def _kspace(p: dict[str, torch.Tensor]) -> DynamicKSpace:
    matrix = (int(p["maps"].shape[-2]), int(p["maps"].shape[-1]))
    return DynamicKSpace(
        p["data"], matrix, mask=p.get("mask"), traj=p.get("traj"), dcf=p.get("dcf")
    )


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return torch.load(GOLDEN, weights_only=True)


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize("problem", ["radial", "cartesian"])
def test_baseline_matches_the_image_saved_before_the_move(golden, problem, name):
    p = golden[problem]
    image = _run(name, _kspace(p), p["maps"])
    ref = p["images"][name]
    assert image.shape == ref.shape and image.dtype == ref.dtype
    err = float((image - ref).norm() / ref.norm())
    assert err < 1e-5, (
        f"{name} on {problem}: relative difference {err:.2e} from the saved image; if the change "
        "is meant to alter the result, re-save with python tests/test_baseline_golden.py"
    )


def _resave_images() -> None:
    """Run every baseline on the stored inputs and save its image (inputs unchanged)."""
    out = torch.load(GOLDEN, weights_only=True)
    for p in out.values():
        kspace = _kspace(p)
        p["images"] = {name: _run(name, kspace, p["maps"]).clone() for name in RUNS}
    torch.save(out, GOLDEN)


def _make() -> None:
    """Simulate the two problems, run every baseline, save inputs and images."""
    import tempfile

    from mridip.preprocess import load
    from mridip.simulate import SimulationConfig, simulate, write_simulation

    out: dict[str, Any] = {}
    base = {"kind": "cine", "matrix": 32, "coils": 4, "frames": 4, "seed": 3}
    configs = {
        "radial": SimulationConfig(trajectory="radial", spokes=9, **base),
        "cartesian": SimulationConfig(trajectory="cartesian", acceleration=4, **base),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for problem, cfg in configs.items():
            path = Path(tmp) / f"{problem}.h5"
            write_simulation(path, simulate(cfg))
            scan = load(path)
            ks = scan.kspace
            p: dict[str, Any] = {"data": ks.data.clone(), "maps": scan.maps.clone()}
            for key in ("mask", "traj", "dcf"):
                if getattr(ks, key) is not None:
                    p[key] = getattr(ks, key).clone()
            kspace = _kspace(p)
            p["images"] = {name: _run(name, kspace, p["maps"]).clone() for name in RUNS}
            out[problem] = p
    GOLDEN.parent.mkdir(exist_ok=True)
    torch.save(out, GOLDEN)


if __name__ == "__main__":
    import sys

    if "--new-inputs" in sys.argv or not GOLDEN.exists():
        _make()
    else:
        _resave_images()
