"""Regularisation weights chosen from the scan itself (mridip/lam.py, ``--lam auto``)."""

from __future__ import annotations

import dataclasses
import json
import math

import h5py
import pytest
import torch

import mridip
from mridip.baselines import TV_LAM, data_consistency
from mridip.errors import ConfigError
from mridip.lam import _bracket_root, _Residual, _search_min, choose_lam, solve
from mridip.metrics import evaluate
from mridip.operators import for_kspace
from mridip.preprocess import load
from mridip.sampling import holdout_weights
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

    seen, best = _search_min(f, 1.0, 4.0, 6)
    assert best == min(seen, key=seen.__getitem__)
    assert len(calls) == len(seen) <= 6  # never evaluates twice, never over budget
    assert 0.03 / 2 < best < 0.03 * 2
    seen, best = _search_min(f, 0.03 * 1.5, 4.0, 4)  # interior at once: a parabolic step ...
    assert len(seen) == 4 and best in seen and best == pytest.approx(0.03, rel=1e-6)
    calls.clear()  # ... exact here, so it needs no fit of its own
    seen, vertex = _search_min(f, 0.03 * 1.5, 4.0, 4, fit_vertex=False)
    assert len(calls) == len(seen) == 3 and vertex not in seen
    assert vertex == pytest.approx(0.03, rel=1e-6)
    calls.clear()  # on an edge until the budget ends: the best point, no vertex
    seen, best = _search_min(f, 100.0, 4.0, 4, fit_vertex=False)
    assert len(calls) == 4 and best == min(seen) == 100.0 / 16


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


def test_cv_chooses_the_iterations_with_the_lowest_heldout_residual(cine):
    ks, maps = cine.kspace, cine.maps
    choice = choose_lam(
        ks, maps, "tv", choose_iters=True, iters=ITERS, iter_every=2, fit_vertex=True
    )
    assert choice.iter_counts == [2, 4, 6, 8, 10]  # every 2 up to the cap (the given iters)
    assert len(choice.iter_scores) == len(choice.lams)
    for row, score in zip(choice.iter_scores, choice.scores, strict=True):
        assert score == min(row)  # a weight's score is its best iteration count
    row = choice.iter_scores[choice.lams.index(choice.lam)]
    assert choice.iters == choice.iter_counts[row.index(min(row))]
    # the curve is the held-out residual of what a run of that many iterations returns
    assert (choice.holdout, choice.holdout_unit) == (0.1, "sample")  # tv: radial samples
    fit_w, held_w = holdout_weights(ks, 0.1, torch.Generator().manual_seed(1))
    op_fit = for_kspace(ks, maps, weights=fit_w)
    residual = _Residual(ks, maps)
    for k in (choice.iters, ITERS):
        image = solve("tv", ks, maps, choice.lam, operator=op_fit, iters=k).image
        got = residual(image, held_w) / residual.energy(held_w)
        assert got == pytest.approx(row[choice.iter_counts.index(k)], rel=1e-4)
    record = choice.record()
    assert record["iters"] == choice.iters and record["iter_counts"] == choice.iter_counts


def test_early_stopping_wins_at_a_weak_weight(cine):
    # at a weight far below the best the ADMM iterates fit the noise as they go on, and the
    # held-out residual says so: the choice stops before the cap
    ks, maps = cine.kspace, cine.maps
    choice = choose_lam(
        ks,
        maps,
        "tv",
        start=1e-4,
        factor=1.01,
        max_solves=3,
        choose_iters=True,
        iters=30,
        fit_vertex=True,
    )
    row = choice.iter_scores[choice.lams.index(choice.lam)]
    assert choice.iters < 30 and min(row) < 0.98 * row[-1], (choice.iter_counts, row)


def test_the_unfitted_vertex_predicts_its_heldout_residual(cine):
    # choosing the iterations too, the vertex of the parabola is not fitted: its iteration
    # count comes from its neighbours' curves, and a fit there does as well as they promise
    ks, maps = cine.kspace, cine.maps
    choice = choose_lam(ks, maps, "tv", start=0.05, choose_iters=True, iters=ITERS, iter_every=2)
    assert choice.solves == len(choice.lams) <= 4
    if choice.lam_fitted:
        pytest.skip(f"the search ended on an edge here: {choice.lams}")
    assert choice.lam not in choice.lams and choice.record()["lam_fitted"] is False
    assert choice.lams[0] < choice.lam < choice.lams[-1]
    assert (choice.holdout, choice.holdout_unit) == (0.1, "sample")  # tv: radial samples
    fit_w, held_w = holdout_weights(ks, 0.1, torch.Generator().manual_seed(1))
    op_fit = for_kspace(ks, maps, weights=fit_w)
    residual = _Residual(ks, maps)
    got = {}

    def check(k, image):
        got[k] = residual(image, held_w) / residual.energy(held_w)

    solve("tv", ks, maps, choice.lam, operator=op_fit, iters=ITERS, on_iter=check)
    assert got[choice.iters] <= min(choice.scores) * 1.01, (choice.iters, got, choice.scores)
    assert got[choice.iters] == pytest.approx(min(got[k] for k in choice.iter_counts), rel=0.01)


def test_given_iters_are_not_chosen(cine):
    ks, maps = cine.kspace, cine.maps
    choice = choose_lam(ks, maps, "tv", iters=ITERS)
    assert choice.iters is None and "iters" not in choice.record()
    rec = mridip.reconstruct(ks, "tv", maps, iters=4)
    assert "iters" not in rec.config["lam_choice"]
    assert len(rec.history["relative_change"]) == 4
    with pytest.raises(ConfigError, match="iteration count"):
        choose_lam(ks, maps, "lps", choose_iters=True, iters=2)
    with pytest.raises(ConfigError, match="iteration count"):
        choose_lam(ks, maps, "tv", "discrepancy", choose_iters=True, iters=2)


def test_reconstruct_runs_the_chosen_iterations(cine):
    rec = mridip.reconstruct(cine.kspace, "tv", cine.maps)
    choice = rec.config["lam_choice"]
    assert choice["iter_counts"][-1] == 30 and choice["iters"] in choice["iter_counts"]
    assert len(rec.history["relative_change"]) == choice["iters"] == rec.config["iters"]
    assert rec.config["lam"] == choice["lam"]


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


def test_cv_choice_holds_out_whole_readouts(tmp_path, monkeypatch, cine):
    """The ``cv`` rule holds out 20% of the readouts: Cartesian lines (a lone sample on a
    measured line is predicted by its neighbours through the coils, whatever the weight) and,
    for ``lps`` and ``wavelet``, radial spokes (by the readout's oversampling); ``tv`` keeps
    10% of single radial samples, and so does radial data whose readout length is unknown.
    The unit and fraction are recorded; an unknown unit is refused."""
    import mridip.lam as lam_module

    path = tmp_path / "cart.h5"
    cfg = SimulationConfig(trajectory="cartesian", matrix=32, coils=4, frames=4, acceleration=6)
    write_simulation(path, simulate(cfg))
    cart = load(path)
    ks, maps = cart.kspace, cart.maps
    seen = []
    real = lam_module.holdout_weights

    def spy(kspace, fraction, generator, unit="sample", spare_centre=False):
        split = real(kspace, fraction, generator, unit=unit, spare_centre=spare_centre)
        seen.append((fraction, unit, split, spare_centre))
        return split

    monkeypatch.setattr(lam_module, "holdout_weights", spy)
    choice = choose_lam(ks, maps, "lps", iters=5)
    fraction, unit, (fit_w, held_w), spared = seen[-1]
    assert (fraction, unit) == (0.2, "readout")
    assert (choice.holdout, choice.holdout_unit) == (0.2, "readout")
    assert choice.record()["holdout_unit"] == "readout"
    # every line is held out whole or not at all, and some lines of the series are held out
    held_lines = held_w.amax(dim=2)  # (T, Ny)
    assert torch.equal(held_w, held_lines[:, :, None] * ks.mask.to(held_w.dtype))
    assert 0 < int(held_lines.sum()) < int(ks.mask.amax(dim=2).sum())
    # lps spares the lines every frame measures (the centre); tv holds them out like the rest
    always = ks.mask.all(dim=0)[:, 0]
    assert spared and choice.record()["spare_centre"] and bool(always.any())
    assert not held_lines[:, always].any()
    tv_cart = choose_lam(ks, maps, "tv", iters=5)
    assert not seen[-1][3] and "spare_centre" not in tv_cart.record()
    # the same choice when asked for explicitly; single samples when asked
    again = choose_lam(ks, maps, "lps", iters=5, holdout_unit="readout", holdout=0.2)
    assert again.lam == choice.lam
    choose_lam(ks, maps, "lps", iters=5, holdout_unit="sample")
    assert seen[-1][:2] == (0.1, "sample")
    # radial: whole spokes (the simulator's 2×-oversampled readouts of 64 samples)
    radial = choose_lam(cine.kspace, cine.maps, "lps", iters=5)
    assert (radial.holdout, radial.holdout_unit) == (0.2, "readout")
    fraction, unit, (fit_w, held_w), spared = seen[-1]
    assert (fraction, unit) == (0.2, "readout")
    ro = int(cine.kspace.meta["readout_samples"])
    assert ro == 64 and held_w.shape[-1] % ro == 0
    spokes = held_w.reshape(held_w.shape[0], -1, ro)  # (T, spokes, samples)
    assert torch.equal(spokes, spokes[..., :1].expand_as(spokes))  # a spoke whole or not at all
    assert 0 < int(spokes[..., 0].sum()) < spokes[..., 0].numel()
    # without a readout length the split cannot find the spokes: single samples, 10%
    bare = dataclasses.replace(cine.kspace, meta={})
    fallback = choose_lam(bare, cine.maps, "lps", iters=5)
    assert (fallback.holdout, fallback.holdout_unit) == (0.1, "sample")
    assert seen[-1][:2] == (0.1, "sample")
    for method, unit in (("tv", "sample"), ("bart", "sample"), ("wavelet", "readout")):
        assert lam_module.default_holdout_unit(cine.kspace, method) == unit
        assert lam_module.default_holdout_unit(ks, method) == "readout"  # Cartesian lines
    tv = choose_lam(cine.kspace, cine.maps, "tv", iters=5)
    assert (tv.holdout, tv.holdout_unit) == (0.1, "sample") and seen[-1][:2] == (0.1, "sample")
    with pytest.raises(ConfigError, match="holdout unit"):
        choose_lam(ks, maps, "lps", holdout_unit="frame")


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
    assert config["iters"] == 5 and "iters" not in config["lam_choice"]  # --iters fixes them

    out = tmp_path / "chosen"  # no --iters: tv's iterations are chosen with λ and recorded
    assert main(["recon", cine_path, "-o", str(out), "--method", "tv", "--formats", "h5"]) == 0
    with h5py.File(out / "recon.h5") as f:
        config = json.loads(f.attrs["config"])
        steps = len(f["history/relative_change"][()])
    choice = config["lam_choice"]
    assert config["iters"] == choice["iters"] == steps <= 30
    assert len(choice["iter_scores"]) == len(choice["lams"])
    assert len(choice["iter_scores"][0]) == len(choice["iter_counts"])

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
