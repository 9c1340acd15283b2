import dataclasses
import json
import math

import pytest
import torch

import mridip
from mridip.baselines import cg_sense, zero_filled
from mridip.coils import estimate_maps
from mridip.errors import ConfigError
from mridip.metrics import evaluate
from mridip.preprocess import load
from mridip.simulate import SimulationConfig, simulate, write_simulation

#: The option that makes a CS method choose λ as a blend's partner does on radial data (single
#: held-out samples, ``methods._partner_holdout_unit``; ``lps`` and ``wavelet`` alone hold out
#: whole spokes), so that a test's CS image is the blend's own partner
PARTNER = {"lam_holdout_unit": "sample"}


@pytest.fixture(scope="module")
def cine(radial_cine):
    return load(radial_cine)


def test_cgsense_beats_zf_on_radial_cine(cine):
    """Done-when of issue 2: 64², 8 coils, 12 frames, 13 spokes per frame."""
    zf = evaluate(zero_filled(cine.kspace, cine.maps).image, cine.reference)
    cg = evaluate(cg_sense(cine.kspace, cine.maps, iters=20, lam=0.01).image, cine.reference)
    assert cg["psnr"] > zf["psnr"] + 4.0
    assert cg["ssim"] > zf["ssim"]


def test_cgsense_beats_zf_with_estimated_maps(cine):
    maps = estimate_maps(cine.kspace)
    zf = evaluate(zero_filled(cine.kspace, maps).image, cine.reference)
    cg = evaluate(cg_sense(cine.kspace, maps).image, cine.reference)
    assert cg["psnr"] > zf["psnr"] + 2.0


@pytest.mark.parametrize("fixture", ["cartesian_cine", "radial_perfusion"])
def test_cgsense_beats_zf_elsewhere(request, fixture):
    scan = load(request.getfixturevalue(fixture))
    zf = evaluate(zero_filled(scan.kspace, scan.maps).image, scan.reference)
    cg = evaluate(cg_sense(scan.kspace, scan.maps).image, scan.reference)
    assert cg["psnr"] > zf["psnr"] + 2.0


def test_zero_filled_intensity_is_unbiased(cine):
    q = evaluate(zero_filled(cine.kspace, cine.maps).image, cine.reference)
    assert q["scale"] == pytest.approx(1.0, abs=0.15)


def test_reconstruct_one_liner(cine):
    rec = mridip.reconstruct(cine.kspace, "cgsense", cine.maps, iters=5)
    assert rec.image.shape == (12, 64, 64) and rec.image.dtype == torch.complex64
    assert rec.config["iters"] == 5 and len(rec.history["relative_residual"]) == 5
    again = mridip.reconstruct(cine.kspace, "cgsense", cine.maps, iters=5)
    assert torch.equal(rec.image, again.image)


def test_reconstruct_rejects_bad_choices(cine):
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        mridip.reconstruct(cine.kspace, "nope")
    with pytest.raises(ConfigError, match="iters"):
        mridip.reconstruct(cine.kspace, "cgsense", iters=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            mridip.reconstruct(cine.kspace, "zf", device="cuda")


def test_an_option_the_method_would_ignore_is_refused(cine):
    """A CS method given a DIP option (or the reverse) used to run without it; now the call
    is refused before any work, naming the option and the methods that take it."""
    from mridip.methods import CS_OPTIONS, METHODS, method_options

    cases = [
        ("tv", {"holdout_spare_centre": True}, "it is an option of dip, tddip, gip, mridip"),
        ("lps", {"ema": 0.9}, "'ema'"),
        ("zf", {"lam": 0.1}, "it is an option of cgsense, tv, wavelet, lps"),
        ("cgsense", {"relaxation": 1.5}, "its options are: density_weighted, lam"),
        ("mridip", {"lam": 0.1}, "has no option 'lam'"),
        ("lrdip", {"lam_spatial": 0.1}, "it is an option of tv, bart"),
    ]
    for method, opts, words in cases:
        with pytest.raises(ConfigError, match=words):
            mridip.reconstruct(cine.kspace, method, cine.maps, iters=1, **opts)
    # method_options holds each baseline's own table, and the DIP levers for every preset
    for name, own in CS_OPTIONS.items():
        assert set(own) <= method_options(name)
    assert {"holdout_spare_centre", "tv_weight", "rank", "blend"} <= method_options("mridip")
    assert all(method_options(m) is not None for m in METHODS)
    # options a method reads still pass, and None means "not given" for any method
    rec = mridip.reconstruct(cine.kspace, "tv", cine.maps, iters=1, lam=0.01, rho=1.0, ema=None)
    assert rec.config["lam"] == 0.01


@pytest.mark.cuda
def test_cgsense_on_cuda_matches_cpu(cine):
    cpu = mridip.reconstruct(cine.kspace, "cgsense", cine.maps, iters=5)
    gpu = mridip.reconstruct(cine.kspace, "cgsense", cine.maps, iters=5, device="cuda")
    assert float((cpu.image - gpu.image).norm() / cpu.image.norm()) < 1e-3


def test_cgsense_lambda_is_relative_to_the_operator(cine):
    """Maps ×10 scale AᴴA by 100: with a relative λ the image is exactly ÷10, not re-weighted."""
    a = cg_sense(cine.kspace, cine.maps, iters=8, lam=0.5).image
    b = cg_sense(cine.kspace, cine.maps * 10, iters=8, lam=0.5).image
    assert float((b * 10 - a).norm() / a.norm()) < 1e-3
    plain = cg_sense(cine.kspace, cine.maps, iters=8, lam=0.0).image
    assert float((plain - a).norm() / a.norm()) > 1e-2  # λ = 0.5 does act


def test_a_preset_sets_its_own_step_limit_and_the_record_says_which(cine, monkeypatch):
    """``lrdip`` runs up to 5000 steps unless ``iters`` says otherwise (its fit_defaults); the
    other presets up to FitConfig's 1500; the recorded ``iters`` is the limit the fit ran with.
    ``lrdip``'s stopping margin (1%) is its default too, and an option overrides it."""
    from mridip import recon

    seen, margins = [], []

    def fake_fit(self, resume=False):
        seen.append(self.config.max_steps)
        margins.append(self.config.stop_margin)
        t = self.kspace.n_frames
        image = torch.zeros((t, *self.kspace.matrix), dtype=torch.complex64)
        return recon.FitResult(image, {}, 0, False, 0.0, {})

    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit)
    kw = {"blend": "none"}
    assert mridip.reconstruct(cine.kspace, "lrdip", cine.maps, **kw).config["iters"] == 5000
    assert mridip.reconstruct(cine.kspace, "lrdip", cine.maps, iters=30, **kw).config["iters"] == 30
    assert mridip.reconstruct(cine.kspace, "tddip", cine.maps).config["iters"] == 1500
    assert seen == [5000, 30, 1500]
    assert margins == [0.01, 0.01, 0.0]
    mridip.reconstruct(cine.kspace, "lrdip", cine.maps, stop_margin=0.0, **kw)
    assert margins[-1] == 0.0


def test_the_graph_preset_fits_with_both_tv_terms_and_says_how_to_use_frame_subsets(
    cine, monkeypatch
):
    """``mridip`` fits with temporal and spatial TV by default (its fit_defaults), the other
    presets without; options override them; frame subsets with the temporal term are refused
    in one line that names the way out, before any step."""
    from mridip import recon

    weights = []

    def fake_fit(self, resume=False):
        weights.append((self.config.tv_weight, self.config.tv_spatial_weight))
        t = self.kspace.n_frames
        image = torch.zeros((t, *self.kspace.matrix), dtype=torch.complex64)
        return recon.FitResult(image, {}, 0, False, 0.0, {})

    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit)
    kw = {"blend": "none"}
    mridip.reconstruct(cine.kspace, "mridip", cine.maps, **kw)
    mridip.reconstruct(cine.kspace, "lrdip", cine.maps, **kw)
    mridip.reconstruct(cine.kspace, "mridip", cine.maps, tv_weight=0.0, tv_spatial_weight=0.0, **kw)
    assert weights == [(0.03, 0.1), (0.0, 0.0), (0.0, 0.0)]
    with pytest.raises(ConfigError, match="--tv-weight 0") as exc:
        mridip.reconstruct(cine.kspace, "mridip", cine.maps, frames_per_step=2, **kw)
    assert "\n" not in str(exc.value)
    assert len(weights) == 3
    mridip.reconstruct(cine.kspace, "mridip", cine.maps, frames_per_step=2, tv_weight=0.0, **kw)
    assert weights[-1] == (0.0, 0.1)


def test_the_graph_preset_runs_to_4000_steps_with_the_halvings_of_1500(cine, monkeypatch):
    """docs/reconstructor.md: ``mridip`` runs up to 4000 steps and halves its rate at 750 and
    1125, the steps where its earlier 1500- and 3000-step limits halved it; a smaller ``iters``
    moves the halvings with it (3/16 and 9/32 of the limit); the other presets keep theirs;
    ``mridip`` restarts the patience at each halving (measured, on) unless told not to, the
    other presets only when asked."""
    from mridip import recon

    seen = []

    def fake_fit(self, resume=False):
        c = self.config
        halvings = sorted({int(f * c.max_steps) for f in c.lr_halve_at})
        seen.append((c.max_steps, halvings, c.halving_resets_patience))
        image = torch.zeros((self.kspace.n_frames, *self.kspace.matrix), dtype=torch.complex64)
        return recon.FitResult(image, {}, 0, False, 0.0, {})

    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit)
    kw = {"blend": "none"}
    rec = mridip.reconstruct(cine.kspace, "mridip", cine.maps, **kw)
    mridip.reconstruct(cine.kspace, "mridip", cine.maps, iters=1600, **kw)
    mridip.reconstruct(cine.kspace, "tddip", cine.maps, **kw)
    mridip.reconstruct(cine.kspace, "mridip", cine.maps, halving_resets_patience=False, **kw)
    mridip.reconstruct(cine.kspace, "tddip", cine.maps, halving_resets_patience=True, **kw)
    assert seen == [
        (4000, [750, 1125], True),
        (1600, [300, 450], True),
        (1500, [750, 1125], False),
        (4000, [750, 1125], False),
        (1500, [750, 1125], True),
    ]
    assert rec.config["iters"] == 4000


def test_blend_averages_the_dip_image_with_the_cs_image(tmp_path, monkeypatch):
    """``blend="tv", blend_weight=w`` returns ``(1 − w)·G + w·tv`` with tv's λ chosen from the
    scan, and records the choice; a bad blend is refused before any fit step."""
    from mridip import recon

    calls = []

    def fake_fit(self, resume=False):
        calls.append(1)
        t = self.kspace.n_frames
        g = torch.full((t, *self.kspace.matrix), 0.3 + 0.1j, dtype=torch.complex64)
        return recon.FitResult(g, {}, 0, False, 0.0, {})

    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit)
    path = tmp_path / "small.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=24, frames=4, coils=3, spokes=9)))
    cine = load(path)
    ks = cine.kspace
    kw = {"blend": "tv", "blend_weight": 0.25, "blend_band": "all"}
    rec = mridip.reconstruct(ks, "lrdip", cine.maps, **kw)
    tv = mridip.reconstruct(ks, "tv", cine.maps, lam="auto", **PARTNER)
    g = torch.full_like(tv.image, 0.3 + 0.1j)
    assert torch.allclose(rec.image, 0.75 * g + 0.25 * tv.image, atol=1e-6)
    record = rec.config["blend"]
    assert record["method"] == "tv" and record["weight"] == 0.25
    assert record["lam"] == pytest.approx(tv.config["lam"])
    # band "measured": that blend where the spokes reach, the DIP image in the grid's corners
    band = mridip.reconstruct(
        ks, "lrdip", cine.maps, blend="tv", blend_weight=0.25, blend_band="measured"
    )
    radius = float(ks.traj.pow(2).sum(1).sqrt().max()) / (2 * math.pi)  # cycles per voxel
    f = torch.fft.fftfreq(24)
    inside = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() <= radius + 1e-6
    assert 0.7 < float(inside.float().mean()) < 0.85  # about π/4 of the grid
    kb, kr, kg = (torch.fft.fft2(x) for x in (band.image, rec.image, g))
    tol = 1e-5 * float(kr.abs().max())
    assert float(kr[:, ~inside].abs().max()) > 100 * tol  # tv's image has something there
    assert torch.allclose(kb[:, inside], kr[:, inside], atol=tol)
    assert torch.allclose(kb[:, ~inside], kg[:, ~inside], atol=tol)
    assert band.config["blend"]["band"] == "measured"
    assert band.config["blend"]["band_share"] == pytest.approx(float(inside.float().mean()))
    with pytest.raises(ConfigError, match="blend band"):
        mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_band="corners")
    # Cartesian data measure the grid's whole extent: the band changes nothing
    cart_path = tmp_path / "cart.h5"
    write_simulation(
        cart_path,
        simulate(SimulationConfig(matrix=24, frames=4, coils=3, trajectory="cartesian")),
    )
    cart = load(cart_path)
    both = [
        mridip.reconstruct(cart.kspace, "lrdip", cart.maps, blend="tv", blend_weight=0.25, **b)
        for b in ({"blend_band": "measured"}, {})
    ]
    assert torch.equal(both[0].image, both[1].image)
    assert both[0].config["blend"]["band_share"] == 1.0
    # a CS image the caller has already made is reused when it is the one the blend would make
    # (the demo's tv): a marked copy shows which image was taken; other options: solved again
    marked = dataclasses.replace(tv, image=tv.image + 1.0)
    reused = mridip.reconstruct(ks, "lrdip", cine.maps, **kw, blend_partners={"tv": marked})
    assert torch.allclose(reused.image, 0.75 * g + 0.25 * marked.image, atol=1e-6)
    assert reused.config["blend"]["reused"] and "blend_partners" not in reused.config
    json.dumps(reused.config)  # the result files' record stays plain JSON
    for other in (
        mridip.reconstruct(ks, "tv", cine.maps, lam="auto", seed=1, **PARTNER),
        mridip.reconstruct(ks, "tv", cine.maps, lam="auto", lam_spatial=0.5, **PARTNER),
        mridip.reconstruct(ks, "tv", cine.maps, lam=0.03),
    ):
        again = mridip.reconstruct(ks, "lrdip", cine.maps, **kw, blend_partners={"tv": other})
        assert "reused" not in again.config["blend"]
        assert torch.allclose(again.image, rec.image, atol=1e-6)
    plain = mridip.reconstruct(ks, "lrdip", cine.maps, blend="none")
    assert torch.equal(plain.image, g) and plain.config["blend"] == "none"  # no blend record
    # lrdip's default: blend auto (the fake fit has no blind image: wavelet, even, said so)
    default = mridip.reconstruct(ks, "lrdip", cine.maps).config["blend"]
    assert default["method"] == "wavelet" and default["weight_rule"].startswith("even")
    graph = mridip.reconstruct(ks, "mridip", cine.maps).config["blend"]  # the default method too
    assert graph["method"] == "wavelet" and graph["weight_rule"].startswith("even")
    assert graph["band"] == "measured" and default["band"] == "all"  # the presets' bands
    other = mridip.reconstruct(ks, "tddip", cine.maps, iters=2, blend=None)
    assert other.config["blend"] is None  # other presets: no blend record unless asked
    n = len(calls)
    with pytest.raises(ConfigError, match="blend must be"):
        mridip.reconstruct(ks, "lrdip", cine.maps, blend="bart")
    with pytest.raises(ConfigError, match="blend weight"):
        mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_weight=1.5)
    assert len(calls) == n  # refused before the fit


def test_an_ensemble_is_the_average_of_fits_that_share_their_hold_out(tmp_path, monkeypatch):
    """``ensemble=2``: the image is the average of two fits with the same configuration and
    hold-out, the second from a generator seeded ``ENSEMBLE_SEED_STEP`` further on, each fitted
    here by hand; the blend is judged on the average of their blind images; the record lists
    each fit. ``ensemble=0`` and an ensemble with checkpoints are refused before a fit."""
    from mridip import methods
    from mridip.models import PRESETS, build_generator
    from mridip.recon import FitConfig, Reconstructor

    path = tmp_path / "small.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=24, frames=4, coils=3, spokes=9)))
    cine = load(path)
    ks = cine.kspace
    judged = []
    real_blend = methods._blend

    def spy(image, *args, fitted=None, **kw):
        judged.append(fitted.blind_image.clone())
        return real_blend(image, *args, fitted=fitted, **kw)

    monkeypatch.setattr(methods, "_blend", spy)
    kw = {"iters": 6, "min_steps": 1, "progress": False, "blend": "tv", "blend_weight": 0.0}
    got = mridip.reconstruct(ks, "lrdip", cine.maps, seed=3, ensemble=2, **kw)
    images, blinds = [], []
    for member in (0, 1):
        fit_kw = {**PRESETS["lrdip"].fit_defaults, "max_steps": 6, "min_steps": 1}
        config = FitConfig(seed=3, ensemble=2, **fit_kw)
        gen = build_generator(
            "lrdip",
            matrix=ks.matrix,
            frame_times=ks.frame_times.to(torch.float32),
            seed=3 + methods.ENSEMBLE_SEED_STEP * member,
        )
        rec = Reconstructor(ks, cine.maps, gen, config, progress=False)
        images.append(rec.fit().image)
        blinds.append(rec.blind_image)
    assert not torch.allclose(images[0], images[1], atol=1e-4)  # two different fits
    assert torch.allclose(got.image, (images[0] + images[1]) / 2, atol=1e-6)  # blend weight 0
    assert torch.allclose(judged[0], (blinds[0] + blinds[1]) / 2, atol=1e-6)
    record = got.config["ensemble"]
    assert record["fits"] == 2 and len(record["steps_run"]) == 2 == len(record["seconds"])
    assert got.config["blend"]["method"] == "tv"
    one = mridip.reconstruct(ks, "lrdip", cine.maps, seed=3, **kw)
    assert torch.allclose(one.image, images[0], atol=1e-6) and "ensemble" not in one.config
    fits = []
    monkeypatch.setattr(Reconstructor, "fit", lambda self, resume=False: fits.append(1))
    with pytest.raises(ConfigError, match="ensemble must be"):
        mridip.reconstruct(ks, "lrdip", cine.maps, ensemble=0, **kw)
    with pytest.raises(ConfigError, match="keeps no checkpoints"):
        mridip.reconstruct(ks, "lrdip", cine.maps, ensemble=2, checkpoint=tmp_path / "c.pt", **kw)
    assert fits == []


def _blend_scan(tmp_path):
    """A small radial cine, its ``tv`` image (λ chosen from the scan) and a stand-in generator
    image with the right content and the zero-filled image's streaks."""
    path = tmp_path / "small.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=24, frames=4, coils=3, spokes=9)))
    cine = load(path)
    tv = mridip.reconstruct(cine.kspace, "tv", cine.maps, lam="auto", **PARTNER)
    zf = mridip.reconstruct(cine.kspace, "zf", cine.maps).image
    return cine, tv, 0.5 * (zf + tv.image)


def _stand_in_fit(monkeypatch, image):
    """``Reconstructor.fit`` replaced by one that returns ``image`` as the fit's image and its
    blind image at once; returns the dict that gets the fit's hold-out split (``"split"``) and
    the list with one entry per call."""
    from mridip import recon

    seen, calls = {}, []

    def fit(self, resume=False):
        calls.append(1)
        self.blind_image = image
        seen["split"] = self.split
        return recon.FitResult(image, {}, 0, False, 0.0, {})

    monkeypatch.setattr(recon.Reconstructor, "fit", fit)
    return seen, calls


def test_blend_outside_partner_takes_the_cs_image_where_no_coil_sees(tmp_path, monkeypatch):
    """``blend_outside="partner"``: where the maps are zero (and the fit masked the DIP image to
    zero there) the blend returns the CS estimate alone, a stack's CS images in their stacked
    proportions; inside the maps' support nothing changes. ``dip`` (the default) keeps the
    blend of the DIP's zero there; a fit without the support mask keeps its own values."""
    cine, _, g = _blend_scan(tmp_path)
    ks = cine.kspace
    ny, nx = ks.matrix
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, ny), torch.linspace(-1, 1, nx), indexing="ij")
    seen_by_coils = (yy**2 + xx**2).sqrt() < 0.8
    maps = cine.maps * seen_by_coils
    unseen = ~seen_by_coils
    g = g * seen_by_coils  # what a masked fit returns
    _stand_in_fit(monkeypatch, g)
    # wavelet's spatial prior carries its image across the support's edge (tv's temporal one
    # and lps's Casorati matrix keep it zero there)
    cs = mridip.reconstruct(ks, "wavelet", maps, lam="auto", **PARTNER).image
    assert float(cs[:, unseen].abs().max()) > 1e-3 * float(cs.abs().max())
    kw = {"blend": "wavelet", "blend_weight": 0.25, "blend_band": "all"}
    zero = mridip.reconstruct(ks, "lrdip", maps, **kw)
    part = mridip.reconstruct(ks, "lrdip", maps, **kw, blend_outside="partner")
    assert torch.allclose(zero.image, 0.75 * g + 0.25 * cs, atol=1e-6)
    assert torch.allclose(part.image[:, unseen], cs[:, unseen], atol=1e-6)
    assert torch.equal(part.image[:, seen_by_coils], zero.image[:, seen_by_coils])
    assert zero.config["blend"]["outside"] == "dip" and "outside_share" not in zero.config["blend"]
    record = part.config["blend"]
    assert record["outside"] == "partner"
    assert record["outside_share"] == pytest.approx(float(unseen.float().mean()))
    # an unmasked fit's image is its own estimate there: kept
    own = mridip.reconstruct(ks, "lrdip", maps, **kw, blend_outside="partner", mask_support=False)
    assert torch.equal(own.image, zero.image) and own.config["blend"]["outside"] == "dip"
    # a stack: Σ cₘ·CSₘ there (the DIP's share is zero), divided by the CS images' share; a
    # streaky stand-in (the zero-filled image) so that the stack takes some of each
    zf = mridip.reconstruct(ks, "zf", maps).image
    _stand_in_fit(monkeypatch, zf * seen_by_coils)
    st = {"blend": "stack", "blend_band": "all"}
    zero = mridip.reconstruct(ks, "lrdip", maps, **st)
    part = mridip.reconstruct(ks, "lrdip", maps, **st, blend_outside="partner")
    share = part.config["blend"]["weight"]
    assert 0.05 < share < 0.95 and part.config["blend"]["outside"] == "partner"
    assert torch.allclose(part.image[:, unseen], zero.image[:, unseen] / share, atol=1e-5)
    assert torch.equal(part.image[:, seen_by_coils], zero.image[:, seen_by_coils])
    with pytest.raises(ConfigError, match="blend outside"):
        mridip.reconstruct(ks, "lrdip", maps, **kw, blend_outside="zero")


def test_blend_weight_auto_minimises_the_blind_heldout_residual(tmp_path, monkeypatch):
    """``blend_weight="auto"``: the weight is the minimum over ``[0, 1]`` of the held-out
    residual of ``(1 − w)·G + w·C``, with ``G`` the DIP's image fitted without the held-out
    samples and ``C`` the CS image solved on the fitted samples only (both blind to the held-out
    ones); a generator that explains nothing gets the CS image; no hold-out falls back to ½."""
    from mridip import recon
    from mridip.lam import _HeldOut, solve
    from mridip.operators import for_kspace

    cine, tv, g = _blend_scan(tmp_path)
    ks = cine.kspace
    seen = {}

    def fake_fit(g):
        def fit(self, resume=False):
            self.blind_image = g
            seen["split"] = self.split
            return recon.FitResult(g, {}, 0, False, 0.0, {})

        return fit

    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit(g))
    rec = mridip.reconstruct(
        ks, "lrdip", cine.maps, blend="tv", blend_weight="auto", blend_band="all"
    )
    record = rec.config["blend"]
    w = record["weight"]
    assert record["weight_rule"] == "heldout" and 0 <= w <= 1
    assert torch.allclose(rec.image, (1 - w) * g + w * tv.image, atol=1e-6)
    # the brute-force minimum over a grid, with the CS image blind to the held-out samples
    fit_w, held_w = seen["split"]
    c = solve(
        "tv",
        ks,
        cine.maps,
        tv.config["lam"],
        operator=for_kspace(ks, cine.maps, weights=fit_w),
        iters=tv.config.get("iters"),
        seed=0,
    ).image
    held = _HeldOut(ks, cine.maps, held_w * ks.dcf)  # the rule weights by the density
    grid = torch.linspace(0, 1, 41)
    scores = [held((1 - v) * g + v * c) for v in grid.tolist()]
    best = float(grid[int(torch.tensor(scores).argmin())])
    assert abs(w - best) <= 0.025 + 1e-6
    assert held((1 - w) * g + w * c) <= min(scores) * (1 + 1e-4)
    assert 0 < w < 1  # both images carry something the other lacks
    # a generator that explains nothing: all of the weight goes to the CS image
    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit(torch.zeros_like(g)))
    rec = mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_weight="auto")
    assert rec.config["blend"]["weight"] > 0.95
    # nothing held out: the even average, said so
    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit(g))
    rec = mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_weight="auto", holdout=0)
    assert rec.config["blend"]["weight"] == 0.5
    assert rec.config["blend"]["weight_rule"] == "even (no hold-out)"
    with pytest.raises(ConfigError, match="blend weight"):
        mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_weight="best")
    # blend="auto": every CS partner tried, the one whose blend predicts the held-out samples
    # best kept, at its own weight
    monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit(g))
    rec = mridip.reconstruct(ks, "lrdip", cine.maps, blend="auto", blend_band="all")
    record = rec.config["blend"]
    tried = record["tried"]
    assert set(tried) == {"wavelet", "tv", "lps"}
    assert record["method"] == min(tried, key=lambda m: tried[m]["heldout_blend"])
    partner = mridip.reconstruct(ks, record["method"], cine.maps, lam="auto", **PARTNER).image
    w = record["weight"]
    assert torch.allclose(rec.image, (1 - w) * g + w * partner, atol=1e-6)


def test_blend_partner_lam_is_refined_by_the_heldout_residual(tmp_path, monkeypatch):
    """``blend_lam="refine"`` (off by default): the partner's λ moves by factors of 2 from its own
    choice while the blend predicts the held-out samples better; the λ kept is the path's
    minimum, its residual is what the blind image at that λ gives, and the returned image is
    the blend with the partner solved at that λ. ``"scan"`` keeps the method's own λ."""
    from mridip.methods import (
        BLEND_LAM_FACTOR,
        BLEND_LAM_STEPS,
        _blind_cs,
        _held_judge,
        _heldout_curve,
        _quadratic,
    )

    cine, tv, g = _blend_scan(tmp_path)
    ks = cine.kspace
    seen, _ = _stand_in_fit(monkeypatch, g)
    scan = mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv").config  # the default
    assert scan["blend"]["lam"] == pytest.approx(tv.config["lam"]) and "lam_path" not in scan
    rec = mridip.reconstruct(
        ks, "lrdip", cine.maps, blend="tv", blend_lam="refine", blend_band="all"
    )
    record = rec.config["blend"]
    assert record["lam_rule"] == "refine"
    steps = record["lam_path"]
    factors = [s["factor"] for s in steps]
    scores = [s["heldout_blend"] for s in steps]
    assert factors[0] == 1.0 and scores[0] == pytest.approx(scan["blend"]["heldout_blend"])
    kept = record.get("lam_factor", 1.0)
    assert kept != 1.0  # it moves on this scan, so the partner solved again is checked below
    assert min(scores) == pytest.approx(scores[factors.index(kept)])
    # the walk: up while it helps (at most BLEND_LAM_STEPS), down only if the first step up lost
    up = [f for f in factors[1:] if f > 1]
    assert up[0] == BLEND_LAM_FACTOR and len(up) <= BLEND_LAM_STEPS
    assert all(b / a == BLEND_LAM_FACTOR for a, b in zip(up, up[1:], strict=False))
    assert any(f < 1 for f in factors) == (scores[1] >= scores[0])
    lam = tv.config["lam"] * kept
    assert record["lam"] == pytest.approx(lam)
    fit_w, held_w = seen["split"]
    held = _held_judge(ks, cine.maps, held_w)
    blind = _blind_cs(ks, cine.maps, "tv", fit_w, lam, tv.config.get("iters"), 0)
    w, score = _quadratic(*_heldout_curve(held, g, blind), None)
    assert score == pytest.approx(min(scores), rel=1e-4) and w == pytest.approx(record["weight"])
    partner = mridip.reconstruct(ks, "tv", cine.maps, lam=lam, iters=tv.config.get("iters"))
    assert torch.allclose(rec.image, (1 - w) * g + w * partner.image, atol=1e-5)
    with pytest.raises(ConfigError, match="blend lam"):
        mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_lam="sweep")


def test_blend_rings_weigh_each_band_of_spatial_frequency_by_the_heldout_samples(
    tmp_path, monkeypatch
):
    """``blend_rings=n``: the grid's spatial frequencies split into n rings that partition it;
    each ring's weight in ``[0, 1]`` minimises the held-out residual of
    ``G + Σₖ wₖ·Rₖ(C − G)`` (exact from the Gram matrix, no worse than a brute grid or the
    single weight); the returned image is that blend of the images of all data. Two images
    whose errors lie in different rings are combined ring by ring, nearer the truth than any
    single weight makes them. Bad counts are refused before the fit."""
    from mridip.lam import _HeldOut
    from mridip.methods import (
        BLEND_RINGS_MAX,
        _blend_with,
        _blind_cs,
        _box_weights,
        _CSPartner,
        _held_judge,
        _ring_masks,
        _ring_parts,
    )
    from mridip.sampling import holdout_weights

    cine, tv, g = _blend_scan(tmp_path)
    ks = cine.kspace
    # the rings partition the grid: every frequency in one ring, the centre in the first, and
    # the first ring ends at half the trajectory's largest radius
    masks = _ring_masks(ks, 3)
    assert masks.shape == (3, *ks.matrix) and bool((masks.sum(0) == 1).all())
    assert bool(masks[0, 0, 0])
    kmax = float(ks.traj.pow(2).sum(1).sqrt().max()) / (2 * math.pi)
    fy = torch.fft.fftfreq(ks.matrix[0])[:, None]
    fx = torch.fft.fftfreq(ks.matrix[1])[None, :]
    radius = (fy**2 + fx**2).sqrt()
    assert float(radius[masks[0]].max()) <= kmax / 3 + 1e-6
    assert float(radius[masks[1]].min()) > kmax / 3 - 1e-6
    parts = _ring_parts(g, masks)
    assert torch.allclose(sum(parts), g, atol=1e-5)

    seen, calls = _stand_in_fit(monkeypatch, g)
    one = mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_band="all")
    assert "ring_weights" not in one.config["blend"]
    rec = mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_band="all", blend_rings=2)
    record = rec.config["blend"]
    ws = record["ring_weights"]
    assert len(ws) == 2 and all(0 <= w <= 1 for w in ws)
    assert record["weight"] == pytest.approx(one.config["blend"]["weight"])
    two = _ring_masks(ks, 2)
    want = g + sum(w * d for w, d in zip(ws, _ring_parts(tv.image - g, two), strict=True))
    assert torch.allclose(rec.image, want, atol=1e-5)
    # judged on the blind images: the recorded residual is the blend's, the grid's best and
    # the single weight's are no better
    fit_w, held_w = seen["split"]
    c = _blind_cs(ks, cine.maps, "tv", fit_w, tv.config["lam"], tv.config.get("iters"), 0)
    held = _HeldOut(ks, cine.maps, held_w * ks.dcf)
    d = _ring_parts(c - g, two)

    def score(w0, w1):
        return held(g + w0 * d[0] + w1 * d[1])

    assert record["heldout_blend"] == pytest.approx(score(*ws), rel=1e-4)
    grid = torch.linspace(0, 1, 11).tolist()
    assert record["heldout_blend"] <= min(score(a, b) for a in grid for b in grid) * (1 + 1e-5)
    assert record["heldout_blend"] <= record["heldout_one_ring"] * (1 + 1e-6)

    # errors in different rings: the blend takes each ring from the image that is right there
    truth = torch.as_tensor(cine.reference).to(torch.complex64)
    noise = torch.randn(
        truth.shape, generator=torch.Generator().manual_seed(1), dtype=torch.complex64
    )
    noise *= 0.3 * float(truth.abs().mean())
    low, high = _ring_parts(noise, two)
    dip, cs = truth + low, truth + high  # the DIP wrong at low frequencies, the CS at high
    _, held_w = holdout_weights(ks, 0.3, torch.Generator().manual_seed(0))
    judge = _held_judge(ks, cine.maps, held_w)
    fitted = type("Fitted", (), {"blind_image": dip})()
    partner = _CSPartner("cs", cs, {}, False, cs)
    _, single = _blend_with(partner, None, fitted, judge)
    _, ringed = _blend_with(partner, None, fitted, judge, two)
    w0, w1 = ringed["ring_weights"]
    assert w0 > 0.9 and w1 < 0.1
    w = single["weight"]
    err_single = float(((1 - w) * dip + w * cs - truth).abs().norm())
    blended = dip + w0 * _ring_parts(cs - dip, two)[0] + w1 * _ring_parts(cs - dip, two)[1]
    assert float((blended - truth).abs().norm()) < 0.5 * err_single

    # the box solver alone, against a brute grid
    m = torch.tensor([[3.0, -1.0, 0.4], [-1.0, 1.0, 0.2], [0.4, 0.2, 0.5]], dtype=torch.float64)
    w, q = _box_weights(m)
    brute = min(
        float(v @ m @ v)
        for v in (
            torch.tensor([1.0, a / 100, b / 100], dtype=torch.float64)
            for a in range(101)
            for b in range(101)
        )
    )
    assert q <= brute + 1e-9 and bool(((w >= 0) & (w <= 1)).all())
    n = len(calls)
    for bad in (0, BLEND_RINGS_MAX + 1, 1.5, "two"):
        with pytest.raises(ConfigError, match="blend rings"):
            mridip.reconstruct(ks, "lrdip", cine.maps, blend="tv", blend_rings=bad)
    assert len(calls) == n  # refused before the fit


def test_heldout_judge_weights_cartesian_lines_by_their_density(cartesian_cine):
    """The blends' held-out score on Cartesian data weights each held-out line by the inverse of
    its sampling density (``sampling.cartesian_density_weights``), as radial data are weighted by
    their density compensation: computed here from the operator's own forward transform."""
    from mridip.methods import _held_judge
    from mridip.operators import for_kspace
    from mridip.sampling import cartesian_density_weights, holdout_weights

    scan = mridip.load(cartesian_cine)
    ks = scan.kspace
    assert ks.is_cartesian and ks.dcf is None
    _, held_w = holdout_weights(ks, 0.3, torch.Generator().manual_seed(0), unit="readout")
    x = torch.as_tensor(scan.reference).to(torch.complex64) * 0.9  # an image with some error
    r = for_kspace(ks, scan.maps).forward(x) - ks.data  # (T, C, Ny, Nx)
    e = ks.data.abs().pow(2)
    dens = cartesian_density_weights(ks.mask)
    assert float(dens.max()) > 2  # the periphery is measured less often than the centre

    def score(w):
        w = (w * ks.mask)[:, None]
        return float((r.abs().pow(2) * w).sum() / (e * w).sum())

    judged = _held_judge(ks, scan.maps, held_w)(x)
    assert judged == pytest.approx(score(held_w * dens), rel=1e-4)
    assert abs(judged - score(held_w)) > 0.01 * judged  # not the unweighted score


def test_blend_stack_weights_minimise_the_heldout_residual_over_the_simplex(tmp_path, monkeypatch):
    """``blend="stack"``: the DIP image and all three CS images, weights ``c ≥ 0, Σc = 1``
    chosen by the held-out residual of the blind images' combination. The Gram matrix gives that
    residual exactly; the chosen weights beat every single image and a random search over the
    simplex; a given weight is refused before the fit; no hold-out falls back as ``auto`` does."""
    from mridip.lam import _HeldOut
    from mridip.methods import BLEND_METHODS, STACK_BELOW, _blind_cs, _simplex_weights

    path = tmp_path / "small.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=24, frames=4, coils=3, spokes=9)))
    cine = load(path)
    ks = cine.kspace
    zf = mridip.reconstruct(ks, "zf", cine.maps).image
    tv = mridip.reconstruct(ks, "tv", cine.maps, lam="auto", **PARTNER).image
    g = 0.5 * (zf + tv)
    seen, calls = _stand_in_fit(monkeypatch, g)
    rec = mridip.reconstruct(ks, "lrdip", cine.maps, blend="stack", blend_band="all")
    record = rec.config["blend"]
    c = record["weights"]
    assert list(c) == ["dip", *BLEND_METHODS]
    assert min(c.values()) >= 0 and sum(c.values()) == pytest.approx(1.0)
    assert record["weight"] == pytest.approx(1 - c["dip"])
    full = {"dip": g}
    blind = {"dip": g}
    fit_w, held_w = seen["split"]
    for m in BLEND_METHODS:
        cs = mridip.reconstruct(ks, m, cine.maps, lam="auto", **PARTNER)
        full[m] = cs.image
        lam = record["tried"][m]["lam"]
        assert lam == pytest.approx(cs.config["lam"])
        blind[m] = _blind_cs(ks, cine.maps, m, fit_w, lam, cs.config.get("iters"), 0)
    want = sum(c[m] * full[m] for m in full)
    assert torch.allclose(rec.image, want, atol=1e-5)
    held = _HeldOut(ks, cine.maps, held_w * ks.dcf)
    gram = held.gram(list(blind.values()))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):  # the quadratic is exact for weights summing to one
        w = torch.rand(4, generator=gen, dtype=torch.float64) * 2 - 0.5
        w /= w.sum()
        mix = sum(float(wi) * x for wi, x in zip(w, blind.values(), strict=True))
        assert float(w @ gram @ w) == pytest.approx(held(mix), rel=1e-4)
    chosen = sum(c[m] * blind[m] for m in blind)
    score = held(chosen)
    assert score == pytest.approx(record["heldout_blend"], rel=1e-4)
    assert all(score <= held(x) * (1 + 1e-6) for x in blind.values())
    trials = torch.distributions.Dirichlet(torch.ones(4)).sample((200,)).double()
    assert score <= float(torch.einsum("ni,ij,nj->n", trials, gram, trials).min()) * (1 + 1e-6)
    # the solver alone: a known minimum, and a single best image when mixing cannot help
    m = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]], dtype=torch.float64)
    w = _simplex_weights(m)
    grid = [(a / 100, b / 100) for a in range(101) for b in range(101 - a)]
    brute = min(
        float(v @ m @ v)
        for v in (torch.tensor([a, b, 1 - a - b], dtype=torch.float64) for a, b in grid)
    )
    assert float(w @ m @ w) <= brute + 1e-9 and (w > 0).all()
    assert _simplex_weights(
        torch.tensor([[1.0, 1.0], [1.0, 4.0]], dtype=torch.float64)
    ).tolist() == [
        1.0,
        0.0,
    ]
    n = len(calls)
    with pytest.raises(ConfigError, match="blend stack"):
        mridip.reconstruct(ks, "lrdip", cine.maps, blend="stack", blend_weight=0.3)
    assert len(calls) == n  # refused before the fit
    none = mridip.reconstruct(ks, "lrdip", cine.maps, blend="stack", holdout=0).config["blend"]
    assert none["method"] == "wavelet" and none["weight_rule"] == "even (no hold-out)"
    # blend auto stacks when its best single blend keeps (almost) nothing of the DIP image:
    # a generator that explains nothing; the same fit with blend stack gives the same image
    g = torch.zeros_like(g)
    _stand_in_fit(monkeypatch, g)  # the fit now returns the zeros
    auto = mridip.reconstruct(ks, "lrdip", cine.maps, blend="auto", blend_band="measured")
    record = auto.config["blend"]
    assert record["method"] == "stack" and "stacked" in record["weight_rule"]
    single = record["single"]
    assert single["method"] in BLEND_METHODS and 1 - single["weight"] < STACK_BELOW
    assert record["heldout_blend"] <= single["heldout_blend"] * (1 + 1e-6)
    stack = mridip.reconstruct(ks, "lrdip", cine.maps, blend="stack")
    assert torch.allclose(auto.image, stack.image, atol=1e-6)
    assert record["band"] == "all"  # even when asked, a DIP image with no weight is not kept
    assert record["weights"] == pytest.approx(stack.config["blend"]["weights"])
    # a given weight is kept as given: no stacking
    fixed = mridip.reconstruct(ks, "lrdip", cine.maps, blend="auto", blend_weight=1.0)
    assert fixed.config["blend"]["method"] in BLEND_METHODS


def test_blend_partners_choose_lam_by_single_samples_on_radial_data(tmp_path, monkeypatch):
    """A blend's CS partner chooses λ holding out single samples of radial data (the rule the
    blends were measured with, ``methods._partner_holdout_unit``), while ``lps`` alone holds
    out whole spokes; a caller's reconstruction is reused as a partner only when it was
    chosen the partners' way (``tv`` alone is). Cartesian partners hold out lines, as the
    methods do."""
    from mridip import lam, methods

    path = tmp_path / "small.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=24, frames=4, coils=3, spokes=9)))
    scan = load(path)
    ks, maps = scan.kspace, scan.maps
    units = []
    real = lam.choose_lam

    def spy(*a, **k):
        choice = real(*a, **k)
        units.append(choice.holdout_unit)
        return choice

    monkeypatch.setattr(methods, "choose_lam", spy)
    alone = mridip.reconstruct(ks, "lps", maps)
    assert units == ["readout"] and alone.config["lam_choice"]["holdout_unit"] == "readout"
    cs = methods._cs_partner(ks, maps, "lps", 0, None)
    assert units[-1] == "sample" and cs.info["lam_choice"]["holdout_unit"] == "sample"
    assert not cs.reused
    # the method's own image is not what the blend would compute: solved again, not reused
    assert methods._partner({"lps": alone}, "lps", ks, 0) is None
    lam_choice = {**alone.config["lam_choice"], "holdout_unit": "sample"}
    sampled = dataclasses.replace(alone, config={**alone.config, "lam_choice": lam_choice})
    assert methods._partner({"lps": sampled}, "lps", ks, 0) is sampled
    asked = mridip.reconstruct(ks, "lps", maps, lam_holdout_unit="sample")  # from Python
    assert asked.config["lam_choice"]["holdout_unit"] == "sample"
    assert methods._partner({"lps": asked}, "lps", ks, 0) is asked
    tv = mridip.reconstruct(ks, "tv", maps, iters=5)
    assert tv.config["lam_choice"]["holdout_unit"] == "sample"  # tv: radial samples anyway
    cart_path = tmp_path / "cart.h5"
    cart_cfg = SimulationConfig(
        trajectory="cartesian", matrix=24, frames=4, coils=3, acceleration=3
    )
    write_simulation(cart_path, simulate(cart_cfg))
    cart = load(cart_path)
    assert methods._partner_holdout_unit(cart.kspace) == "readout"
    assert methods._partner_holdout_unit(ks) == "sample"
