"""The Reconstructor: hold-out split, frame subsets, scaling, stopping, determinism, resume."""

import dataclasses

import pytest
import torch

from mridip.baselines import zero_filled
from mridip.errors import ConfigError
from mridip.metrics import evaluate
from mridip.models import build_generator
from mridip.operators import for_kspace
from mridip.preprocess import load
from mridip.recon import FitConfig, Reconstructor
from mridip.sampling import holdout_weights
from mridip.simulate import SimulationConfig, simulate, write_simulation


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "tiny.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=16, frames=4, coils=3, spokes=7)))
    return load(path)


def _gen(scan, seed=0):
    ft = scan.kspace.frame_times.float()
    return build_generator("dip", matrix=scan.kspace.matrix, frame_times=ft, seed=seed, width=8)


def _fit(scan, steps=30, **kw):
    cfg = FitConfig(max_steps=steps, min_steps=1, eval_every=5, patience=1000, **kw)
    return Reconstructor(scan.kspace, scan.maps, _gen(scan), cfg, progress=False)


def test_holdout_split_partitions_samples(tiny):
    g = torch.Generator().manual_seed(0)
    fit_w, held_w = holdout_weights(tiny.kspace, 0.2, g)
    assert torch.equal(fit_w + held_w, torch.ones_like(fit_w))
    assert 0.15 < float(held_w.mean()) < 0.25


def test_holdout_by_readout_takes_whole_spokes_and_lines(tiny, tmp_path):
    """``unit="readout"`` holds out whole radial spokes and whole Cartesian lines (of the
    measured ones), about the asked fraction of them; an unknown unit is refused."""
    ks = tiny.kspace
    ro = int(ks.meta["readout_samples"])
    fit_w, held_w = holdout_weights(ks, 0.3, torch.Generator().manual_seed(0), "readout")
    assert torch.equal(fit_w + held_w, torch.ones_like(fit_w))
    spokes = held_w.reshape(ks.n_frames, -1, ro)
    assert torch.equal(spokes, spokes[..., :1].expand_as(spokes))  # a spoke is all in or out
    assert 0.1 < float(held_w.mean()) < 0.5
    single = holdout_weights(ks, 0.3, torch.Generator().manual_seed(0))[1]
    assert not torch.equal(
        single.reshape(spokes.shape), single.reshape(spokes.shape)[..., :1].expand_as(spokes)
    )
    path = tmp_path / "cart.h5"
    cfg = SimulationConfig(trajectory="cartesian", matrix=16, frames=4, coils=3, acceleration=2)
    write_simulation(path, simulate(cfg))
    cart = load(path).kspace
    _, held = holdout_weights(cart, 0.3, torch.Generator().manual_seed(0), "readout")
    rows = held.any(dim=-1, keepdim=True)
    assert bool(rows.any())
    assert torch.equal(held.bool(), rows & cart.mask)  # whole measured lines
    with pytest.raises(ConfigError, match="holdout unit"):
        holdout_weights(ks, 0.3, torch.Generator(), "frame")
    with pytest.raises(ConfigError, match="holdout unit"):
        FitConfig(holdout_unit="frame").check()


def test_fit_can_spare_the_lines_every_frame_measures(tmp_path):
    """``holdout_spare_centre``: on a variable-density Cartesian scan the fit's held-out lines
    (its stopping rule, the blend's judge) never include a line every frame measures; the
    other held-out lines are the same draw; off, this seed holds some centre line out."""
    path = tmp_path / "vd.h5"
    cfg = SimulationConfig(trajectory="cartesian", matrix=32, frames=8, coils=3, acceleration=4)
    write_simulation(path, simulate(cfg))
    scan = load(path)
    mask = scan.kspace.mask
    always = mask.all(dim=0)  # (Ny, Nx): the centre lines
    assert bool(always.any()) and not bool(always.all())

    def held(spare):
        rec = _fit(scan, holdout=0.4, holdout_unit="readout", holdout_spare_centre=spare)
        return rec.split[1].bool()

    plain, spared = held(False), held(True)
    assert (plain & always).any()
    assert not (spared & always).any() and spared.any()
    assert torch.equal(spared, plain & ~always)


def test_frame_subsets_visit_every_frame_each_epoch(tiny):
    rec = _fit(tiny, frames_per_step=3)
    for _ in range(3):  # 4 frames in batches of 3: one batch of 3, one of 1, per epoch
        seen = torch.cat([rec._next_frames(), rec._next_frames()]).sort().values
        assert seen.tolist() == [0, 1, 2, 3]


def test_fit_beats_zero_filled_and_records_history(tiny):
    res = _fit(tiny, steps=60).fit()
    assert res.image.shape == (4, 16, 16) and res.image.dtype == torch.complex64
    zf = evaluate(zero_filled(tiny.kspace, tiny.maps).image, tiny.reference)["psnr"]
    assert evaluate(res.image, tiny.reference)["psnr"] > zf
    assert len(res.history["loss"]) == 60 and res.history["loss"][-1] < res.history["loss"][0]
    assert res.history["val_step"] == list(range(5, 61, 5))
    assert not res.stopped_early and res.info["steps_run"] == 60  # patience 1000: no stop


def test_data_scale_is_undone(tiny):
    """Multiplying the k-space by 1000 multiplies the image by 1000 and changes nothing else."""
    big = dataclasses.replace(tiny.kspace, data=tiny.kspace.data * 1000)
    a = _fit(tiny, steps=10).fit().image
    cfg = FitConfig(max_steps=10, min_steps=1, eval_every=5, patience=1000)
    b = Reconstructor(big, tiny.maps, _gen(tiny), cfg, progress=False).fit().image
    assert float((b / 1000 - a).norm() / a.norm()) < 1e-3


def test_same_seed_same_image(tiny):
    a = _fit(tiny, steps=15).fit().image
    b = _fit(tiny, steps=15).fit().image
    assert torch.equal(a, b)


class _Drifting(torch.nn.Module):
    """A stand-in generator whose image drifts further into noise with every training call, so
    that the held-out residual must turn: the stopping rule is tested, not a network's fit."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # Adam needs a parameter
        g = torch.Generator().manual_seed(0)
        noise = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
        self.register_buffer("noise", noise)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, frames=None):
        if torch.is_grad_enabled():
            self.calls += 1
        x = 0.05 * self.calls * self.noise + 0 * self.unused
        return x if frames is None else x[frames]


def test_stopping_rule_keeps_best_weights(tiny):
    """The fit stops exactly ``patience`` steps after the lowest held-out residual and restores
    that step's state (the stand-in's call counter)."""
    cfg = FitConfig(max_steps=400, min_steps=20, eval_every=5, patience=40, final="none")
    gen = _Drifting((4, *tiny.kspace.matrix))
    res = Reconstructor(tiny.kspace, tiny.maps, gen, cfg, progress=False).fit()
    vals = dict(zip(res.history["val_step"], res.history["val_residual"], strict=True))
    assert res.best_step == min(vals, key=vals.get)
    assert res.stopped_early and res.info["steps_run"] < 400
    assert res.info["steps_run"] - res.best_step == 40
    assert res.history["val_step"][-1] == res.info["steps_run"]
    assert int(gen.calls) == res.best_step  # the best state was restored


class _Crash(Exception):
    pass


@pytest.mark.parametrize(
    "lever",
    # batches of 3 of 4 frames: epochs of 2 steps; the checkpoint of step 15 lies mid-epoch.
    # The wavelet term draws a grid shift every step: the resumed fit draws the same ones
    [{"frames_per_step": 3}, {"wavelet_weight": 1.0}],
)
def test_resume_after_a_crash_equals_uninterrupted(tiny, tmp_path, lever):
    ckpt = tmp_path / "checkpoint.pt"
    cfg = FitConfig(max_steps=30, min_steps=1, eval_every=5, patience=1000, **lever)
    whole = Reconstructor(tiny.kspace, tiny.maps, _gen(tiny), cfg, progress=False).fit().image

    gen = _gen(tiny)
    calls = {"n": 0}
    real_forward = gen.forward

    def crashing(frames=None):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 17:  # dies during step 17, after the checkpoint of step 15
                raise _Crash
        return real_forward(frames)

    gen.forward = crashing
    first = Reconstructor(
        tiny.kspace, tiny.maps, gen, cfg, checkpoint=ckpt, checkpoint_every=5, progress=False
    )
    with pytest.raises(_Crash):
        first.fit()
    assert ckpt.exists()
    resumed = Reconstructor(
        tiny.kspace,
        tiny.maps,
        _gen(tiny, seed=0),
        cfg,
        checkpoint=ckpt,
        checkpoint_every=5,
        progress=False,
    ).fit(resume=True)
    assert torch.allclose(resumed.image, whole, rtol=1e-5, atol=1e-6 * float(whole.abs().max()))


def test_resume_refuses_other_settings(tiny, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    cfg = FitConfig(max_steps=10, min_steps=1, eval_every=5)
    Reconstructor(
        tiny.kspace, tiny.maps, _gen(tiny), cfg, checkpoint=ckpt, checkpoint_every=5, progress=False
    ).fit()
    other = dataclasses.replace(cfg, lr=1e-2)
    with pytest.raises(Exception, match="other settings"):
        Reconstructor(
            tiny.kspace, tiny.maps, _gen(tiny), other, checkpoint=ckpt, progress=False
        ).fit(resume=True)


@pytest.mark.parametrize("final", ["auto", "dc", "refit", "none"])
def test_final_steps_run(tiny, final):
    res = _fit(tiny, steps=10, final=final).fit()
    assert torch.isfinite(torch.view_as_real(res.image)).all()
    assert res.info["final"] == final or (final == "auto" and res.info["final"] in ("dc", "none"))


def test_refit_without_held_out_samples_is_recorded_as_skipped(tiny):
    res = _fit(tiny, steps=3, final="refit", holdout=0.0).fit()
    plain = _fit(tiny, steps=3, final="none", holdout=0.0).fit()
    assert res.info["final"] == "none"
    assert torch.equal(res.image, plain.image)  # no refit steps were taken


class _Fixed(torch.nn.Module):
    """A "generator" whose output is one stored image series (its only parameter)."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(torch.view_as_real(image.to(torch.complex64)).clone())

    def forward(self, frames=None):
        x = torch.view_as_complex(self.x)
        return x if frames is None else x[frames]


def _fixed_fit(kspace, maps, image_of_scale):
    """A Reconstructor whose generator sits at ``image_of_scale(scale)`` and (almost) stays."""
    cfg = FitConfig(max_steps=1, min_steps=1, eval_every=1, lr=1e-12, holdout=0.2)
    start = _Fixed(torch.zeros(kspace.n_frames, *kspace.matrix))
    rec = Reconstructor(kspace, maps, start, cfg, progress=False)
    with torch.no_grad():
        rec.generator.x.copy_(torch.view_as_real(image_of_scale(rec.scale).to(torch.complex64)))
    return rec


def test_auto_final_keeps_the_step_only_where_the_held_out_samples_favour_it(tiny):
    """``final="auto"`` takes the data-consistency step for a generator image that misses the
    data (the temporal mean of the truth: no motion) and refuses it for one that is right (the
    truth) when the data are noisy; in each case its choice is the one closer to the truth."""
    truth = torch.as_tensor(tiny.reference).to(torch.complex64)
    static = truth.mean(0, keepdim=True).expand_as(truth)

    res = _fixed_fit(tiny.kspace, tiny.maps, lambda s: static / s).fit()
    assert res.info["final"] == "dc"
    r = res.info["final_val_residual"]
    assert r["dc"] < r["none"]
    assert evaluate(res.image, truth)["psnr"] > evaluate(static, truth)["psnr"] + 1

    g = torch.Generator().manual_seed(3)
    data = tiny.kspace.data
    sigma = 0.5 * float(data.abs().pow(2).mean().sqrt())
    noise = torch.complex(
        torch.randn(data.shape, generator=g), torch.randn(data.shape, generator=g)
    )
    noisy = dataclasses.replace(tiny.kspace, data=data + sigma * noise)
    res = _fixed_fit(noisy, tiny.maps, lambda s: truth / s).fit()
    assert res.info["final"] == "none"
    assert evaluate(res.image, truth)["psnr"] > 40  # the truth, returned unchanged
    dc = _fixed_fit(noisy, tiny.maps, lambda s: truth / s)
    dc.config = dataclasses.replace(dc.config, final="dc")
    assert evaluate(dc.fit().image, truth)["psnr"] < evaluate(res.image, truth)["psnr"] - 3


def test_blind_image_is_the_returned_image_fitted_without_the_held_out_samples(tiny):
    """``blind_image`` (what judges a blend's weight): the generator's image when no step
    follows; with the data-consistency step, that step solved on the fitted samples only — it
    differs from the returned image (which saw all samples) and predicts the held-out samples
    worse; None when nothing is held out or a refit saw them all."""
    truth = torch.as_tensor(tiny.reference).to(torch.complex64)
    static = truth.mean(0, keepdim=True).expand_as(truth)
    rec = _fixed_fit(tiny.kspace, tiny.maps, lambda s: static / s)
    rec.config = dataclasses.replace(rec.config, final="none")
    res = rec.fit()
    assert torch.allclose(rec.blind_image, res.image)
    for final in ("auto", "dc"):
        rec = _fixed_fit(tiny.kspace, tiny.maps, lambda s: static / s)
        rec.config = dataclasses.replace(rec.config, final=final)
        res = rec.fit()
        assert res.info["final"] == "dc"
        blind = rec.blind_image
        with torch.no_grad():
            expect = rec._cg_image(
                rec._image(), rec.config.final_mu, None, rec.config.final_iters, fitted_only=True
            )
        assert torch.allclose(blind, (expect * rec.scale).to(torch.complex64), atol=1e-5)
        held = rec.split[1]
        with torch.no_grad():
            r_blind = float(rec._residual(rec.op_val, rec.rhs_val, rec.yy_val, blind / rec.scale))
            r_all = float(rec._residual(rec.op_val, rec.rhs_val, rec.yy_val, res.image / rec.scale))
        assert held.sum() > 0 and r_all < r_blind
    for kw in ({"holdout": 0.0}, {"final": "refit"}):
        rec = _fit(tiny, steps=3, **kw)
        rec.fit()
        assert rec.blind_image is None


# -- issue 20: levers of the fit ------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_support(tiny):
    """The tiny scan re-simulated with maps that see only a disc of the FOV (≈ 40% of it) and an
    object inside that disc: outside it no coil sees anything."""
    ny, nx = tiny.kspace.matrix
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, ny), torch.linspace(-1, 1, nx), indexing="ij")
    r = (yy**2 + xx**2).sqrt()
    truth = (torch.as_tensor(tiny.reference) * (r < 0.55)).to(torch.complex64)
    maps = tiny.maps * (r < 0.7)
    data = for_kspace(tiny.kspace, maps).forward(truth)
    return dataclasses.replace(tiny.kspace, data=data), maps, truth, r >= 0.7


def test_no_energy_where_no_coil_sees(small_support):
    """Without the support mask the generator leaves energy outside the maps (the data cannot see
    it); with it (the default) that region is exactly zero and the image is closer to the truth."""
    kspace, maps, truth, outside = small_support
    images = {}
    for mask in (False, True):
        cfg = FitConfig(
            max_steps=100, lr=1e-2, min_steps=1, eval_every=5, final="none", mask_support=mask
        )
        rec = Reconstructor(kspace, maps, _gen_for(kspace), cfg, progress=False)
        images[mask] = rec.fit().image
    assert float(images[False][:, outside].abs().max()) > 0.05 * float(truth.abs().max())
    assert float(images[True][:, outside].abs().max()) == 0.0
    assert evaluate(images[True], truth)["psnr"] > evaluate(images[False], truth)["psnr"]
    zf = evaluate(zero_filled(kspace, maps).image, truth)["psnr"]
    assert evaluate(images[True], truth)["psnr"] > zf


def _gen_for(kspace, seed=0):
    ft = kspace.frame_times.float()
    return build_generator("dip", matrix=kspace.matrix, frame_times=ft, seed=seed, width=8)


def test_admm_converges_and_does_not_lose_what_the_fit_had(tiny):
    """ADMM's primal residual ‖G − x‖ falls over its iterations, and its image is at least as
    good as the generator image it started from."""
    kw = dict(steps=40, holdout=0.0, final="none")
    plain = _fit(tiny, **kw).fit()
    res = _fit(tiny, **kw, admm_iters=5, admm_net_steps=15).fit()
    primal = res.history["admm_residual"]
    assert len(primal) == 5 and res.info["final"] == "admm"
    assert primal[-1] < 0.5 * primal[0]
    truth = tiny.reference
    assert evaluate(res.image, truth)["psnr"] >= evaluate(plain.image, truth)["psnr"]


def test_admm_with_a_hold_out_keeps_the_iterate_that_predicts_it_best(tiny):
    res = _fit(tiny, steps=20, holdout=0.2, final="none", admm_iters=4, admm_net_steps=5).fit()
    vals = res.history["admm_val_residual"]
    assert 1 <= len(vals) <= 4 and res.info["admm_iters_run"] == len(vals)
    best = res.info["admm_best_iter"]
    assert best == 0 or vals[best - 1] == min(vals)
    # with final="dc" (mridip's and lrdip's) the held-out samples rejoin after ADMM: the
    # returned image fits all data better than its blind counterpart, which saw the fitted only
    dc = _fit(tiny, steps=20, holdout=0.2, final="dc", admm_iters=2, admm_net_steps=5)
    res = dc.fit()
    assert res.info["final"] == "admm" and res.info["admm_final"] == "dc"
    op = for_kspace(tiny.kspace, tiny.maps)
    resid = [
        float((op.forward(x.to(torch.complex64)) - tiny.kspace.data).abs().pow(2).sum())
        for x in (res.image, dc.blind_image)
    ]
    assert resid[0] < resid[1]


class _Recorder(torch.nn.Module):
    """Wraps a generator and keeps every output computed with gradients on (the fit's steps)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.outputs = []

    def forward(self, frames=None):
        x = self.inner(frames)
        if torch.is_grad_enabled():
            self.outputs.append(x.detach().clone())
        return x


def test_ema_image_is_the_moving_average_of_the_steps(tiny):
    d = 0.8
    gen = _Recorder(_gen(tiny))
    cfg = FitConfig(max_steps=12, min_steps=1, eval_every=5, holdout=0.0, final="none", ema=d)
    rec = Reconstructor(tiny.kspace, tiny.maps, gen, cfg, progress=False)
    res = rec.fit()
    avg = gen.outputs[0]
    for x in gen.outputs[1:]:
        avg = d * avg + (1 - d) * x
    expected = (avg * rec.support * rec.scale).to(torch.complex64)
    assert len(gen.outputs) == 12
    assert torch.allclose(res.image, expected, atol=1e-5 * float(expected.abs().max()))
    assert not torch.allclose(res.image, (gen.outputs[-1] * rec.scale).to(torch.complex64))


def _temporal_tv(x):
    return float((x[1:] - x[:-1]).abs().sum())


def test_tv_term_lowers_the_temporal_tv_of_the_fit(tiny):
    plain = _fit(tiny, steps=40, final="none").fit().image
    tv = _fit(tiny, steps=40, final="none", tv_weight=1.0).fit().image
    assert _temporal_tv(tv) < 0.8 * _temporal_tv(plain)


def _spatial_tv(x):
    return float((x[:, 1:] - x[:, :-1]).abs().sum() + (x[..., 1:] - x[..., :-1]).abs().sum())


@pytest.mark.parametrize("frames_per_step", [None, 2])
def test_spatial_tv_term_lowers_the_spatial_tv_of_the_fit(tiny, frames_per_step):
    """The spatial term works frame by frame, so frame subsets may use it; it does not touch
    the temporal TV's all-frames rule."""
    kw = dict(steps=40, final="none", frames_per_step=frames_per_step)
    plain = _fit(tiny, **kw).fit().image
    tv = _fit(tiny, **kw, tv_spatial_weight=1.0).fit().image
    assert _spatial_tv(tv) < 0.8 * _spatial_tv(plain)


def _nuclear(x):
    return float(torch.linalg.svdvals(x.reshape(x.shape[0], -1)).sum())


def test_lowrank_term_lowers_the_nuclear_norm_of_the_fit(tiny):
    plain = _fit(tiny, steps=40, final="none").fit().image
    low = _fit(tiny, steps=40, final="none", lowrank_weight=1.0).fit().image
    assert _nuclear(low) < 0.8 * _nuclear(plain)


def _kt_wavelet_l1(x):
    from mridip.solvers import Wavelet2D, temporal_fft

    m = 8  # 2**levels; the fixed grid (no shift) of the baseline's transform
    ny, nx = x.shape[-2:]
    x = torch.nn.functional.pad(x, (0, (-nx) % m, 0, (-ny) % m))
    return float(Wavelet2D(3, "db2").forward(temporal_fft(x)).abs().sum())


def test_wavelet_term_lowers_the_kt_wavelet_norm_of_the_fit(tiny):
    """The k-t SPARSE term (the ``wavelet`` baseline's prior) lowers that prior's norm, measured
    on the unshifted grid although the fit's grid moves every step; it is seeded."""
    plain = _fit(tiny, steps=40, final="none").fit().image
    wav = _fit(tiny, steps=40, final="none", wavelet_weight=1.0).fit().image
    again = _fit(tiny, steps=40, final="none", wavelet_weight=1.0).fit().image
    assert _kt_wavelet_l1(wav) < 0.8 * _kt_wavelet_l1(plain)
    assert torch.equal(wav, again)


@pytest.mark.parametrize("name", ["tv_weight", "lowrank_weight", "wavelet_weight"])
def test_whole_series_terms_refuse_frame_subsets(tiny, name):
    with pytest.raises(ConfigError, match="all frames") as exc:
        _fit(tiny, **{name: 0.1}, frames_per_step=2)
    assert f"--{name.replace('_', '-')} 0" in str(exc.value)


@pytest.mark.parametrize("source", ["cgsense", "tv"])
def test_warm_start_starts_at_the_cs_image(tiny, source):
    rec = _fit(tiny, warm_start_steps=150, warm_start_from=source, lr=1e-2)
    target = rec._warm_start_target()
    with torch.no_grad():
        before = float((rec._output(None) - target).norm() / target.norm())
    rec._warm_start(torch.optim.Adam(rec.generator.parameters(), lr=1e-2))
    with torch.no_grad():
        after = float((rec._output(None) - target).norm() / target.norm())
    assert after < 0.25 < before


def test_stop_margin_stops_when_improvements_become_small(tiny):
    """With a relative margin, improvements smaller than it do not hold the fit open: it stops
    ``patience`` steps after the last large one, and still keeps the best weights."""
    kw = dict(max_steps=200, min_steps=1, eval_every=5, patience=20, final="none")
    cfg = FitConfig(**kw, stop_margin=0.5)
    res = Reconstructor(tiny.kspace, tiny.maps, _gen(tiny), cfg, progress=False).fit()
    steps, vals = res.history["val_step"], res.history["val_residual"]
    assert res.stopped_early and res.info["steps_run"] < 200
    ref, last_gain = float("inf"), 0
    for s, v in zip(steps, vals, strict=True):
        if v < ref * 0.5:
            ref, last_gain = v, s
    assert res.info["steps_run"] == last_gain + 20
    assert res.best_step == steps[vals.index(min(vals))]


@pytest.mark.parametrize(
    ("last_gain", "stop_off", "stop_on"),
    [
        (20, 35, 35),  # the stall ends before the first halving (40): the same stop
        (30, 45, 55),  # a stall across the first halving: on, it counts from 40
        (70, 85, 95),  # a stall across the second halving (80): on, it counts from 80
        (90, 105, 105),  # best after the last halving: the same stop either way
    ],
)
def test_a_scheduled_halving_restarts_the_patience(tiny, last_gain, stop_off, stop_on):
    """``halving_resets_patience``: the fit stops ``patience`` steps after the later of its
    last gain and the last scheduled halving; off, a stall that spans a halving stops it. The
    held-out residual is scripted (falling to ``last_gain``, flat after), so the steps are
    exact; the weights kept are those of the lowest residual either way."""
    kw = dict(
        max_steps=400, min_steps=1, eval_every=5, patience=15, final="none", lr_halve_at=(0.1, 0.2)
    )
    for on, stop in ((False, stop_off), (True, stop_on)):
        cfg = FitConfig(**kw, halving_resets_patience=on)
        rec = Reconstructor(tiny.kspace, tiny.maps, _gen(tiny), cfg, progress=False)
        rec.validate = lambda step=None: 1.0 - 0.001 * min(step, last_gain)
        res = rec.fit()
        assert res.stopped_early and res.info["steps_run"] == stop, (on, res.info["steps_run"])
        assert res.best_step == last_gain
        assert res.info["lr_halvings"] == sum(m <= stop for m in (40, 80))


def test_code_noise_is_seeded_and_changes_the_fit(tiny):
    a = _fit(tiny, steps=10, code_noise=0.5).fit().image
    b = _fit(tiny, steps=10, code_noise=0.5).fit().image
    c = _fit(tiny, steps=10).fit().image
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize(
    "kw",
    [
        {"ema": 1.0},
        {"tv_weight": -1.0},
        {"tv_spatial_weight": float("nan")},
        {"lowrank_weight": -0.1},
        {"wavelet_weight": float("inf")},
        {"warm_start_from": "bart"},
        {"admm_patience": 0},
        {"lr_schedule": "cosine"},
        {"plateau_halvings": -1},
    ],
)
def test_bad_lever_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        FitConfig(**kw).check()


def test_plateau_schedule_halves_the_rate_on_stalls_then_stops(tiny):
    """``lr_schedule="plateau"``: every stall of ``patience`` steps halves the learning rate (up
    to ``plateau_halvings`` times) and the next stall stops the fit, well before ``max_steps``;
    the best weights are kept."""
    kw = dict(max_steps=5000, min_steps=1, eval_every=5, patience=15, final="none", lr=1e-2)
    cfg = FitConfig(**kw, lr_schedule="plateau", plateau_halvings=2, stop_margin=0.02)
    res = Reconstructor(tiny.kspace, tiny.maps, _gen(tiny), cfg, progress=False).fit()
    hist = res.history
    assert res.stopped_early and res.info["steps_run"] < 5000
    assert res.info["lr_halvings"] == 2 and len(hist["lr_halved_at"]) == 2
    first, second = hist["lr_halved_at"]
    lr = dict(zip(hist["step"], hist["lr"], strict=True))
    # halved after the evaluation of the stalled step: from the next step on
    assert lr[first] == pytest.approx(1e-2) and lr[first + 1] == pytest.approx(5e-3)
    assert lr[second + 1] == pytest.approx(2.5e-3) and hist["lr"][-1] == pytest.approx(2.5e-3)
    # the stall that stopped it came after the second halving, counted from there
    assert res.info["steps_run"] >= second + 15
    vals = hist["val_residual"]
    assert res.best_step == hist["val_step"][vals.index(min(vals))]


def test_plateau_schedule_without_a_hold_out_keeps_the_fixed_steps(tiny):
    cfg = FitConfig(max_steps=8, holdout=0.0, lr_schedule="plateau", final="none")
    res = Reconstructor(tiny.kspace, tiny.maps, _gen(tiny), cfg, progress=False).fit()
    assert res.history["lr"][-1] == pytest.approx(cfg.lr / 4)  # halved at 4 and 6
