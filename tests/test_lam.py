"""Regularisation weights chosen from the scan itself (mridip/lam.py, ``--lam auto``)."""

from __future__ import annotations

import dataclasses
import json
import math

import h5py
import pytest

import mridip
from mridip.baselines import TV_LAM, data_consistency
from mridip.errors import ConfigError
from mridip.lam import _bracket_root, _search_min, choose_lam, solve
from mridip.metrics import evaluate
from mridip.preprocess import load
from mridip.simulate import SimulationConfig, simulate, write_simulation

ITERS = 10  # fewer ADMM iterations than the default keep the file fast; the rule is the same


@pytest.fixture(scope="module")
def cine_path(tmp_path_factory):
    """Radial cine, 32², 4 coils, 6 frames, 9 spokes per frame, σ = 0.02 (prewhitened on load)."""
    path = tmp_path_factory.mktemp("lam") / "cine.h5"
    cfg = SimulationConfig(matrix=32, coils=4, spokes=9, frames=6, noise=0.02, seed=3)
    write_simulation(path, simulate(cfg))
    return str(path)


@pytest.fixture(scope="module")
def cine(cine_path):
    return load(cine_path)


def _psnr(image, scan) -> float:
    return evaluate(image, scan.reference)["psnr"]


def test_search_min_brackets_and_refines():
    calls = []

    def f(v: float) -> float:
        calls.append(v)
        return (math.log(v) - math.log(0.03)) ** 2

    seen = _search_min(f, 1.0, 4.0, 6)
    best = min(seen, key=seen.__getitem__)
    assert len(calls) == len(seen) <= 6  # never evaluates twice, never over budget
    assert 0.03 / 2 < best < 0.03 * 2
    seen = _search_min(f, 0.03, 4.0, 4)  # interior at once: one parabolic step, exact here
    assert min(seen, key=seen.__getitem__) == pytest.approx(0.03, rel=1e-6)


def test_bracket_root_finds_the_crossing():
    seen = _bracket_root(lambda v: v**0.5, 0.01, 0.5, 4.0, 6)  # crosses at 0.25
    below = max(v for v in seen if seen[v] <= 0.5)
    above = min(v for v in seen if seen[v] > 0.5)
    assert below < 0.25 < above and above / below < 4.0
    assert len(seen) <= 6


def test_cv_choice_lands_near_the_truth_swept_best(cine):
    ks, maps = cine.kspace, cine.maps
    choice = choose_lam(ks, maps, "tv", iters=ITERS)
    assert choice.rule == "cv" and choice.solves <= 5 and len(choice.lams) == choice.solves
    assert choice.lam in choice.lams
    assert choice.scores[choice.lams.index(choice.lam)] == min(choice.scores)
    auto = _psnr(solve("tv", ks, maps, choice.lam, iters=ITERS).image, cine)
    grid = [TV_LAM * 2.0**k for k in range(-6, 4)]
    sweep = {v: _psnr(solve("tv", ks, maps, v, iters=ITERS).image, cine) for v in grid}
    best = max(sweep.values())
    assert auto > best - 1.0, (choice.lam, auto, sweep)
    # the tolerance means something: the ends of the sweep are well below its best
    assert min(sweep[grid[0]], sweep[grid[-1]]) < best - 2.0, sweep


def test_discrepancy_rule_meets_its_chi2_target(cine):
    ks, maps = cine.kspace, cine.maps
    lam0 = 0.05
    chi2_0 = data_consistency(ks, maps, solve("tv", ks, maps, lam0, iters=ITERS).image)["chi2"]
    tau = 1.05 * chi2_0  # a target the start meets, and a 4× larger weight likely exceeds
    choice = choose_lam(ks, maps, "tv", "discrepancy", start=lam0, tau=tau, iters=ITERS)
    assert choice.score == "chi2" and choice.target == tau and choice.result is not None
    chi2 = dict(zip(choice.lams, choice.scores, strict=True))
    assert chi2[choice.lam] <= tau and choice.lam >= lam0
    assert all(chi2[v] > tau for v in choice.lams if v > choice.lam)  # the largest that fits
    assert any(v > choice.lam for v in choice.lams)  # ... and a larger one was tried
    # the score is χ² per measured complex sample, in units of the (prewhitened) noise variance
    dc = data_consistency(ks, maps, choice.result.image)
    assert chi2[choice.lam] == pytest.approx(dc["chi2"], rel=1e-3)
    half = choose_lam(
        ks, maps, "tv", "discrepancy", start=lam0, tau=tau, iters=ITERS, noise_var=2.0
    )
    assert half.scores[half.lams.index(lam0)] == pytest.approx(chi2[lam0] / 2, rel=1e-3)


def test_discrepancy_rule_needs_the_noise_level(cine):
    raw = dataclasses.replace(cine.kspace, meta={**cine.kspace.meta, "prewhitened": False})
    with pytest.raises(ConfigError, match="noise"):
        choose_lam(raw, cine.maps, "tv", "discrepancy", iters=2)


def test_bad_choices_raise(cine):
    ks, maps = cine.kspace, cine.maps
    with pytest.raises(ConfigError, match="rule"):
        choose_lam(ks, maps, "tv", "gcv")
    with pytest.raises(ConfigError, match="regularised method"):
        choose_lam(ks, maps, "zf")
    with pytest.raises(ConfigError, match="holdout"):
        choose_lam(ks, maps, "tv", holdout=0.6)
    with pytest.raises(ConfigError, match="3 solves"):
        choose_lam(ks, maps, "tv", max_solves=2)


def test_reconstruct_chooses_lam_unless_given(cine):
    rec = mridip.reconstruct(cine.kspace, "cgsense", cine.maps)
    choice = rec.config["lam_choice"]
    assert choice["rule"] == "cv" and rec.config["lam"] == choice["lam"]
    fixed = mridip.reconstruct(cine.kspace, "cgsense", cine.maps, lam=0.01)
    assert fixed.config["lam"] == 0.01 and "lam_choice" not in fixed.config


def test_cli_records_the_auto_choice_and_a_fixed_lam(cine_path, tmp_path, capsys):
    from mridip.cli import main

    out = tmp_path / "auto"
    assert main(["recon", cine_path, "-o", str(out), "--method", "tv", "--iters", "5"]) == 0
    with h5py.File(out / "recon.h5") as f:
        config = json.loads(f.attrs["config"])
        lams, scores = f["lam_choice/lams"][()], f["lam_choice/scores"][()]
        assert f["lam_choice"].attrs["rule"] == "cv"
        assert f["lam_choice"].attrs["lam"] == config["lam"] == config["lam_choice"]["lam"]
    assert len(lams) == len(scores) >= 3 and config["lam"] in lams
    assert (out / "lam.png").stat().st_size > 0

    out = tmp_path / "fixed"
    args = ["recon", cine_path, "-o", str(out), "--method", "tv", "--iters", "5"]
    assert main([*args, "--lam", "0.01"]) == 0
    with h5py.File(out / "recon.h5") as f:
        assert json.loads(f.attrs["config"])["lam"] == 0.01 and "lam_choice" not in f
    assert not (out / "lam.png").exists()

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--lam", "lots"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "auto or a number" in err and len(err.splitlines()) == 1


def test_bart_takes_the_tv_choice(cine):
    from mridip.bart import bart_executable

    if bart_executable() is None:
        pytest.skip("BART is not installed")
    rec = mridip.reconstruct(cine.kspace, "bart", cine.maps, iters=ITERS)
    assert rec.config["lam_choice"]["rule"] == "cv"
    assert rec.config["lam"] == rec.config["lam_choice"]["lam"]
