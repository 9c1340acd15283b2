"""Compressed-sensing baselines: quality against zf/CG-SENSE, λ scaling, sweep (solvers:
test_solvers.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import mridip
from mridip.baselines import (
    LPS_LAM,
    TV_LAM,
    cg_sense,
    data_consistency,
    low_rank_plus_sparse,
    total_variation,
    wavelet_fourier,
    zero_filled,
)
from mridip.errors import ConfigError
from mridip.lam import discrepancy_choice, lam_sweep
from mridip.methods import METHODS, PLANNED
from mridip.metrics import evaluate
from mridip.operators import CartesianSense
from mridip.preprocess import load
from mridip.simulate import SimulationConfig, simulate, write_simulation
from mridip.solvers import finite_difference

CS = {"tv": total_variation, "wavelet": wavelet_fourier, "lps": low_rank_plus_sparse}


def _write(tmp_path_factory, name: str, **kw) -> str:
    path = tmp_path_factory.mktemp("cs") / f"{name}.h5"
    cfg = SimulationConfig(matrix=32, coils=4, spokes=9, **kw)
    write_simulation(path, simulate(cfg))
    return str(path)


@pytest.fixture(scope="module")
def cine_path(tmp_path_factory):
    """Radial cine, 32², 4 coils, 8 frames, 9 spokes per frame (R ≈ 5.6)."""
    return _write(tmp_path_factory, "cine", kind="cine", trajectory="radial", frames=8)


@pytest.fixture(scope="module")
def cine(cine_path):
    return load(cine_path)


@pytest.fixture(scope="module")
def perfusion(tmp_path_factory):
    """Radial first-pass perfusion, 32², 4 coils, 8 frames, 9 spokes per frame."""
    return load(_write(tmp_path_factory, "perf", kind="perfusion", trajectory="radial", frames=8))


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    """Cartesian cine, 32², 4 coils, 6 frames, variable-density masks R = 4."""
    return load(
        _write(
            tmp_path_factory, "cart", kind="cine", trajectory="cartesian", frames=6, acceleration=4
        )
    )


@pytest.fixture(scope="module")
def references(cine, perfusion, cartesian):
    """PSNR of zf and CG-SENSE on each data set, computed once."""
    out = {}
    for name, scan in (("cine", cine), ("perfusion", perfusion), ("cartesian", cartesian)):
        zf = _psnr(zero_filled(scan.kspace, scan.maps).image, scan)
        cg = _psnr(cg_sense(scan.kspace, scan.maps, iters=20, lam=0.01).image, scan)
        out[name] = (zf, cg)
    return out


def _psnr(image, scan) -> float:
    return evaluate(image, scan.reference)["psnr"]


# -- quality -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(CS))
def test_cs_methods_beat_zf_and_cgsense_on_cine_and_perfusion(cine, perfusion, references, method):
    """Done-when of issue 7 on simulated radial cine and perfusion (true coil maps)."""
    for name, scan in (("cine", cine), ("perfusion", perfusion)):
        zf, cg = references[name]
        q = _psnr(CS[method](scan.kspace, scan.maps).image, scan)
        assert q > zf + 8.0, (method, name, q, zf)
        assert q > cg + 3.0, (method, name, q, cg)  # lps beats cgsense on perfusion, and more


@pytest.mark.parametrize("method", list(CS))
def test_cs_methods_beat_zf_on_cartesian(cartesian, references, method):
    zf, cg = references["cartesian"]
    q = _psnr(CS[method](cartesian.kspace, cartesian.maps).image, cartesian)
    assert q > zf + 8.0 and q > cg + 3.0


def test_tv_admm_descends_its_objective(cartesian):
    """ADMM solves the stated problem: more iterations, lower ½‖Ax − y‖² + λ‖D_t x‖₁."""
    ks, maps = cartesian.kspace, cartesian.maps
    op = CartesianSense(maps, ks.mask)

    def objective(r):
        resid = op.forward(r.image) - ks.data
        tv = finite_difference(r.image, 0).abs().sum()
        return float(0.5 * resid.abs().pow(2).sum() + r.info["lam_abs"] * tv)

    values = [objective(total_variation(ks, maps, iters=n)) for n in (5, 30, 150)]
    assert values[0] > values[1] > values[2]


def test_spatial_tv_is_applied(cine):
    base = total_variation(cine.kspace, cine.maps, iters=10)
    both = total_variation(cine.kspace, cine.maps, iters=10, lam_spatial=0.2)
    tv_s = sum(finite_difference(both.image, d).abs().sum() for d in (1, 2))
    tv_b = sum(finite_difference(base.image, d).abs().sum() for d in (1, 2))
    assert float(tv_s) < 0.95 * float(tv_b)
    assert both.info["lam_spatial_abs"] == pytest.approx(0.2 * both.info["scale"])


# -- λ relative to the data --------------------------------------------------------------------
@pytest.mark.parametrize("method", list(CS))
def test_default_weight_follows_the_data_scale(cine, method):
    """k-space ×1000 (e.g. another receiver gain, or no prewhitening) gives the same image ×1000,
    and coil maps ×10 give it ÷10: the default λ works at any scale."""
    fn = CS[method]
    base = fn(cine.kspace, cine.maps, iters=8)
    big = fn(dataclasses.replace(cine.kspace, data=cine.kspace.data * 1000), cine.maps, iters=8)
    rel = float((big.image / 1000 - base.image).norm() / base.image.norm())
    assert rel < 2e-3
    assert big.info["scale"] == pytest.approx(1000 * base.info["scale"], rel=1e-4)
    loud = fn(cine.kspace, cine.maps * 10, iters=8)
    assert float((loud.image * 10 - base.image).norm() / base.image.norm()) < 2e-3
    assert _psnr(big.image, cine) == pytest.approx(_psnr(base.image, cine), abs=0.05)


def test_weights_are_comparable_between_radial_and_cartesian(cine, cartesian):
    """The same default is within 2 dB of the best of a coarse sweep on both trajectories."""
    for scan in (cine, cartesian):
        rows = lam_sweep(
            scan.kspace,
            scan.maps,
            "tv",
            [TV_LAM / 5, TV_LAM, TV_LAM * 5],
            reference=scan.reference,
            keep_images=False,
        )
        best = max(r["psnr"] for r in rows)
        assert rows[1]["psnr"] > best - 2.0


# -- λ sweep and data consistency ------------------------------------------------------------------
@pytest.mark.parametrize("method", list(CS))
def test_a_prebuilt_operator_gives_the_same_result_each_solve(cine, method):
    # its gains are estimated once per operator and seed, then reused (mridip.lam's fits)
    from mridip.baselines import _GAINS
    from mridip.operators import for_kspace

    ks, maps = cine.kspace, cine.maps
    op = for_kspace(ks, maps)
    first = CS[method](ks, maps, iters=3, operator=op)
    assert len(_GAINS[op]) == 1
    again = CS[method](ks, maps, lam=0.02, iters=3, operator=op)  # from the cache
    fresh = CS[method](ks, maps, lam=0.02, iters=3, operator=for_kspace(ks, maps))
    assert again.info["lipschitz"] == fresh.info["lipschitz"] == first.info["lipschitz"]
    assert torch.equal(again.image, fresh.image)
    CS[method](ks, maps, iters=3, operator=op, seed=1)
    assert len(_GAINS[op]) == 2  # another seed, another start vector


def test_data_consistency_of_exact_data_is_zero():
    g = torch.Generator().manual_seed(0)
    maps = mridip.phantoms.coil_maps((24, 24), 3)
    mask = torch.rand(4, 24, 24, generator=g) < 0.4
    mask[:, 12] = True
    x = mridip.phantoms.cine_phantom((24, 24), 4).image
    y = CartesianSense(maps, mask).forward(x)
    ks = mridip.DynamicKSpace(y, (24, 24), mask=mask)
    dc = data_consistency(ks, maps, x)
    assert dc["relative_residual"] < 1e-5 and dc["samples"] == 3 * int(mask.sum())
    dc2 = data_consistency(ks, maps, 0.5 * x)
    assert dc2["relative_residual"] == pytest.approx(0.5, rel=1e-4)


def test_lam_sweep_reports_growing_residual(cine):
    rows = lam_sweep(
        cine.kspace, cine.maps, "tv", [0.01, 0.1, 1.0], iters=10, reference=cine.reference
    )
    assert [r["lam"] for r in rows] == [0.01, 0.1, 1.0]
    chi2 = [r["chi2"] for r in rows]
    assert chi2[0] < chi2[1] < chi2[2]
    assert rows[2]["lam_abs"] == pytest.approx(100 * rows[0]["lam_abs"])
    assert all(r["image"].shape == (8, 32, 32) and "psnr" in r for r in rows)
    with pytest.raises(ConfigError, match="regularised method"):
        lam_sweep(cine.kspace, cine.maps, "zf", [0.1])
    with pytest.raises(ConfigError, match="≥ 0"):
        lam_sweep(cine.kspace, cine.maps, "tv", [-1.0])


def test_discrepancy_choice():
    rows = [{"lam": 0.01, "chi2": 2.0}, {"lam": 0.1, "chi2": 2.15}, {"lam": 1.0, "chi2": 2.6}]
    assert discrepancy_choice(rows) == 1  # largest λ within 10% of the floor 2.0
    assert discrepancy_choice(rows, tau=1.5) == 2
    assert discrepancy_choice(rows, noise_floor=1.0) == 0  # nothing fits: the best fit
    assert discrepancy_choice(rows[::-1]) == 1  # order does not matter
    with pytest.raises(ConfigError):
        discrepancy_choice([])


# -- options, registry, command line -------------------------------------------------------------
def test_bad_options_raise(cine):
    ks, maps = cine.kspace, cine.maps
    with pytest.raises(ConfigError, match="lam"):
        total_variation(ks, maps, lam=-1)
    with pytest.raises(ConfigError, match="iteration"):
        wavelet_fourier(ks, maps, iters=0)
    with pytest.raises(ConfigError, match="relaxation"):
        total_variation(ks, maps, relaxation=2.5)
    with pytest.raises(ConfigError, match="lam_lowrank"):
        low_rank_plus_sparse(ks, maps, lam_lowrank=math.nan)
    with pytest.raises(ConfigError, match="zero"):
        total_variation(dataclasses.replace(ks, data=torch.zeros_like(ks.data)), maps)


def test_registered_with_their_settings(cine):
    assert {"tv", "wavelet", "lps", "bart"} <= set(METHODS) and not set(PLANNED) & set(METHODS)
    rec = mridip.reconstruct(cine.kspace, "tv", cine.maps, iters=3, lam=0.1, lam_spatial=0.01)
    assert rec.config["lam"] == 0.1 and rec.config["iters"] == 3
    assert rec.config["lam_abs"] == pytest.approx(0.1 * rec.config["scale"])
    assert len(rec.history["primal_residual"]) == 3
    rec = mridip.reconstruct(cine.kspace, "lps", cine.maps, iters=3, lam=LPS_LAM)
    assert rec.config["lam"] == LPS_LAM and "lowrank" not in rec.config
    assert "lam_choice" not in rec.config  # a given λ is used as it is
    assert len(rec.history["rank"]) == 3


def test_cli_lam_sweep_writes_the_chosen_result(cine_path, tmp_path, capsys):
    from mridip.cli import main
    from mridip.io.results import read_image

    out = tmp_path / "sweep"
    rc = main(
        [
            "recon",
            cine_path,
            "-o",
            str(out),
            "--method",
            "tv",
            "--lam-sweep",
            "0.003,0.03,0.3",
            "--iters",
            "8",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "← chosen" in text and "chi2" in text and "PSNR" in text
    assert read_image(str(out / "recon.h5")).shape == (8, 32, 32)
    assert main(["recon", cine_path, "-o", str(out), "--method", "zf", "--lam-sweep", "0.1"]) == 2
    assert "regularised method" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.parametrize("method", list(CS))
def test_cs_methods_on_cuda_match_cpu(cine, method):
    cpu = CS[method](cine.kspace, cine.maps, iters=10)
    ks, maps = cine.kspace.to("cuda"), cine.maps.to("cuda")
    gpu = CS[method](ks, maps, iters=10)
    assert gpu.image.device.type == "cuda"
    assert float((gpu.image.cpu() - cpu.image).norm() / cpu.image.norm()) < 1e-3


def test_baselines_benchmark_structure():
    from mridip.bench import SECTIONS, baselines_benchmark

    assert "baselines" in SECTIONS
    r = baselines_benchmark(matrix=24, coils=2, frames=4, spokes=7, methods=("cgsense", "tv"))
    rows = r["methods"]
    assert set(rows) == {"cgsense", "tv"} and r["size"]["matrix"] == 24
    # --lam auto chooses tv's iterations with its weight, up to its default 30 (mridip.lam)
    assert rows["tv"]["seconds"] > 0 and rows["tv"]["iters"] in range(5, 31, 5)
    assert rows["tv"]["psnr_gain_vs_cgsense"] == rows["tv"]["psnr"] - rows["cgsense"]["psnr"]
