import torch

from mridip import phantoms


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
