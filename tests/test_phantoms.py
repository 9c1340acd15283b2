import pytest
import torch

from mridip import phantoms
from mridip.errors import ConfigError
from mridip.simulate import SimulationConfig


def test_cine_is_periodic_and_beats():
    p = phantoms.cine_phantom((48, 48), 8)
    assert p.image.shape == (8, 48, 48) and p.image.dtype == torch.complex64
    mag = p.image.abs()
    assert float(mag.max()) == 1.0
    change = (mag[4] - mag[0]).abs().sum() / mag[0].sum()
    assert change > 0.02  # systole differs from diastole
    # a function of the cardiac phase only: frame k of 8 is frame 2k of 16, and frame 16 of
    # a 16-frame cycle would be frame 0 again
    fine = phantoms.cine_phantom((48, 48), 16).image.abs()
    assert torch.allclose(mag[3], fine[6], atol=1e-6)
    assert not torch.allclose(fine[1], fine[0], atol=1e-3)
    assert p.frame_times.tolist() == [i / 8 for i in range(8)]


def test_background_phase_present():
    p = phantoms.cine_phantom((32, 32), 2)
    ang = p.image[0].angle()[p.image[0].abs() > 0.2]
    assert float(ang.std()) > 0.1
    flat = phantoms.cine_phantom((32, 32), 2, phase_strength=0.0)
    assert float(flat.image.imag.abs().max()) < 1e-6


def test_perfusion_uptake_order():
    p = phantoms.perfusion_phantom((64, 64), 16)
    mag = p.image.abs()
    # regions at the centres of the ventricles (coordinates from the phantom's layout)
    rv = mag[:, 31, 24]
    lv = mag[:, 30, 35]
    assert int(rv.argmax()) < int(lv.argmax())
    assert float(lv.max()) > 2 * float(lv[0])


def test_coil_maps_normalised_and_smooth():
    m = phantoms.coil_maps((40, 40), 6)
    assert m.shape == (6, 40, 40)
    assert torch.allclose((m.abs() ** 2).sum(0), torch.ones(40, 40), atol=1e-5)
    grad = (m[:, 1:] - m[:, :-1]).abs().max()
    assert float(grad) < 0.2


def test_from_images_resamples_in_kspace_and_keeps_the_frames():
    from mridip.errors import ConfigError
    from mridip.operators.cartesian import fft2c

    # smooth, positive, band-limited frames that differ
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    t = torch.arange(3.0).view(3, 1, 1)
    small = 2 + torch.cos(2 * torch.pi * (2 * x + t) / 24) * torch.sin(2 * torch.pi * 3 * y / 24)
    small = small.to(torch.float64)
    ph = phantoms.from_images(small, (48, 48))
    assert ph.image.shape == (3, 48, 48) and ph.image.dtype == torch.complex64
    assert torch.allclose(ph.frame_times, torch.tensor([0.0, 0.04, 0.08], dtype=torch.float64))
    assert abs(float(ph.image.abs().max()) - 1.0) < 1e-6
    # zero padding in k-space: no energy outside the images' band
    k_mag = fft2c(ph.image.abs().to(torch.complex128)).abs()
    outside = k_mag.clone()
    outside[:, 12:36, 12:36] = 0
    assert float(outside.pow(2).sum() / k_mag.pow(2).sum()) < 1e-10
    # back down to 24²: the input's magnitude, scaled to a peak of 1
    down = phantoms.from_images(ph.image.abs(), (24, 24)).image.abs().double()
    want = small / small.max()
    assert float((down - want).abs().max()) < 1e-3
    # frames differ as the images do
    assert not torch.allclose(ph.image[0], ph.image[1])
    with pytest.raises(ConfigError):
        phantoms.from_images(torch.zeros(2, 8, 8), (16, 16))
    with pytest.raises(ConfigError):
        phantoms.from_images(torch.ones(8, 8), (16, 16))


def test_simulate_scans_given_images():
    from mridip.errors import ConfigError
    from mridip.simulate import SimulationConfig, simulate

    y, x = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    t = torch.arange(4.0).view(4, 1, 1)
    imgs = 2 + torch.cos(2 * torch.pi * (x + 2 * t) / 40) * torch.sin(2 * torch.pi * 2 * y / 40)
    imgs = imgs * (torch.sin(torch.pi * x / 40) * torch.sin(torch.pi * y / 40)) ** 2  # dark edges
    cfg = SimulationConfig(matrix=20, frames=4, coils=2, spokes=5, noise=0.0)
    sim = simulate(cfg, images=imgs)
    want = phantoms.from_images(imgs, (20, 20)).image.abs()
    got = sim.truth.abs()
    assert float((got / got.max() - want).norm() / want.norm()) < 0.02
    assert sim.acquisitions.data.shape[0] == 4 * 5  # spokes of every frame
    with pytest.raises(ConfigError):
        simulate(cfg, images=imgs[:3])


def test_texture_is_static_tissue_only_and_reproducible():
    """``texture`` multiplies the static tissue around the heart by a smooth random field: the
    textured and plain phantoms differ there, agree on the heart's blood pool, the difference
    is the same in every frame, and the seed fixes it."""
    plain = phantoms.cine_phantom((64, 64), 4).image.abs()
    tex = phantoms.cine_phantom((64, 64), 4, texture=0.4).image.abs()
    again = phantoms.cine_phantom((64, 64), 4, texture=0.4).image.abs()
    other = phantoms.cine_phantom((64, 64), 4, texture=0.4, seed=1).image.abs()
    assert torch.equal(tex, again) and not torch.allclose(tex, other)
    diff = tex - plain
    assert diff.abs().max() > 0.1
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[10:53, 12:54] = False  # the heart and its moving edges
    assert torch.allclose(diff[0][outside], diff[2][outside], atol=1e-6)  # static elsewhere
    # the heart is not textured: in the left ventricle's blood pool the two differ by the
    # normalisation to the peak only
    ratio = tex[0, 29:32, 35:38] / plain[0, 29:32, 35:38]
    assert float(ratio.std()) < 1e-5
    field = phantoms.tissue_texture((64, 64))
    assert abs(float(field.mean())) < 1e-9 and float(field.std()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="texture"):
        SimulationConfig(kind="perfusion", texture=0.2).check()


def test_breathing_moves_the_whole_thorax_and_its_texture():
    """``breathing`` shifts everything, texture included, head-foot by ``breathing ·
    sin(2π t / resp_period)`` of the FOV: each frame's texture is frame 0's moved by that many
    voxels (a whole-voxel shift is exact), the left–right profile does not move, and 0 gives
    the breath-held phantom back."""
    n, frames = 64, 8
    still = phantoms.cine_phantom((n, n), frames, texture=0.3)
    held = phantoms.cine_phantom((n, n), frames, texture=0.3, breathing=0.0)
    assert torch.equal(still.image, held.image)
    drift = torch.tensor([0.0, 0.25, 0.5, 1.0])  # normalised units: 2 = the FOV, 0.25 = 8 voxels
    field = phantoms.tissue_texture((n, n), seed=3, shift=drift)
    assert field.shape == (4, n, n)
    assert torch.allclose(field[0], phantoms.tissue_texture((n, n), seed=3), atol=1e-9)
    for k, voxels in ((1, 8), (2, 16), (3, 32)):
        assert torch.allclose(field[k], torch.roll(field[0], voxels, dims=0), atol=1e-9)
    moving = phantoms.cine_phantom(
        (n, n), frames, rr_interval=1.0, texture=0.3, breathing=0.125, resp_period=2.0, seed=3
    ).image.abs()
    # frame 4 of 8 at t = 0.5 s is a quarter breath: 1/8 of the FOV, 8 voxels at 64²; the
    # body's outline (its first row with signal) moves down by as much, one way
    rows = (moving > 0.05).any(dim=2)
    top = [int(torch.nonzero(r).min()) for r in rows]
    assert top[4] - top[0] == pytest.approx(8, abs=1)
    assert all(b >= a for a, b in zip(top[:4], top[1:5], strict=True))
    cols = (moving > 0.05).any(dim=1)  # left–right extent: unchanged
    assert torch.equal(cols[0], cols[4])
    with pytest.raises(ConfigError, match="breathing"):
        SimulationConfig(kind="perfusion", breathing=0.05).check()
    with pytest.raises(ConfigError, match="breathing"):
        SimulationConfig(breathing=0.5).check()
