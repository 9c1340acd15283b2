"""The Reconstructor: hold-out split, frame subsets, scaling, stopping, determinism, resume."""

import dataclasses

import pytest
import torch

from mridip.baselines import zero_filled
from mridip.metrics import evaluate
from mridip.models import build_generator
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


def test_stopping_rule_keeps_best_weights(tiny):
    cfg = FitConfig(max_steps=400, min_steps=20, eval_every=5, patience=40, lr=1e-2)
    res = Reconstructor(tiny.kspace, tiny.maps, _gen(tiny), cfg, progress=False).fit()
    vals = dict(zip(res.history["val_step"], res.history["val_residual"], strict=True))
    assert res.best_step == min(vals, key=vals.get)
    if res.stopped_early:
        assert res.info["steps_run"] - res.best_step >= 40


class _Crash(Exception):
    pass


def test_resume_after_a_crash_equals_uninterrupted(tiny, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    # batches of 3 of 4 frames: epochs of 2 steps; the checkpoint of step 15 lies mid-epoch
    cfg = FitConfig(max_steps=30, min_steps=1, eval_every=5, patience=1000, frames_per_step=3)
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


def test_admm_refinement_runs(tiny):
    res = _fit(tiny, steps=10, admm_iters=2, admm_net_steps=3).fit()
    assert len(res.history["admm_residual"]) == 2
