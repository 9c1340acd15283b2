"""Sampling patterns for retrospective studies: spiral, Poisson-disc and VISTA-like masks."""

import math

import pytest
import torch

from mridip import phantoms, sampling
from mridip.errors import ConfigError
from mridip.metrics import evaluate
from mridip.operators import NonCartesianSense


def test_spiral_shape_range_and_rotation():
    n = 32
    traj, angles = sampling.spiral_trajectory(n, 3, 4, turns=2, density=1.5)
    arm = sampling.spiral_interleave(n, 2, 1.5)
    assert traj.shape == (4, 2, 3 * arm.shape[1]) and angles.shape == (4, 3)
    assert float(traj.abs().max()) < math.pi
    # samples along an interleave are 2π/(2N) apart, as on an oversampled spoke
    step = torch.linalg.vector_norm(arm.diff(dim=1), dim=0)
    assert float(step.max()) == pytest.approx(2 * math.pi / (2 * n), rel=0.02)
    # interleaves spread evenly within a frame; frames rotated by the golden angle
    assert float(angles[0, 1] - angles[0, 0]) == pytest.approx(2 * math.pi / 3)
    assert float(angles[1, 0] - angles[0, 0]) == pytest.approx(sampling.SPIRAL_GOLDEN_ANGLE)
    assert not torch.allclose(traj[0], traj[1])
    same, _ = sampling.spiral_trajectory(n, 3, 2, rotation="none")
    assert torch.equal(same[0], same[1])

    # variable density: an Archimedean spiral has a quarter of its samples inside half the
    # radius (arc length grows as |k|²); density 1.5 has clearly more there
    def inner(a):
        return float((torch.linalg.vector_norm(a, dim=0) < math.pi / 2).double().mean())

    assert inner(sampling.spiral_interleave(n, 2, 1.0)) == pytest.approx(0.27, abs=0.02)
    assert inner(arm) > 0.32
    with pytest.raises(ConfigError, match="rotation"):
        sampling.spiral_trajectory(n, 3, 2, rotation="sideways")


@pytest.mark.parametrize("density", [1.0, 1.5])
def test_spiral_dcf_gives_unbiased_zero_filled(density):
    n = 32
    full = sampling.spiral_nyquist_interleaves(n, turns=2, density=density)
    traj, _ = sampling.spiral_trajectory(n, full, 1, turns=2, density=density)
    dcf = sampling.spiral_dcf(traj, (n, n), full)
    assert dcf.shape == (1, 1, traj.shape[-1]) and bool((dcf > 0).all())
    img = phantoms.cine_phantom((n, n), 1).image
    op = NonCartesianSense(torch.ones(1, n, n, dtype=torch.complex64), traj, toeplitz=False)
    y = op.forward(img)
    q = evaluate(op.adjoint(y * dcf), img)
    assert q["scale"] == pytest.approx(1.0, abs=0.1)
    assert q["psnr"] > 28
    # unit weights over-count the dense centre: much worse, so the weights matter
    assert evaluate(op.adjoint(y), img)["psnr"] < q["psnr"] - 5


def test_poisson_disc_mask():
    m = sampling.poisson_disc_mask((32, 32), 3, acceleration=4, seed=1)
    assert m.shape == (3, 32, 32) and m.dtype == torch.bool
    r = m[0].numel() / m.sum(dim=(1, 2)).double()
    assert torch.all((r > 3.4) & (r < 4.6))
    assert m[:, 14:18, 14:18].all()  # calibration centre
    assert not torch.equal(m[0], m[1])
    assert torch.equal(m, sampling.poisson_disc_mask((32, 32), 3, acceleration=4, seed=1))
    with pytest.raises(ConfigError):
        sampling.poisson_disc_mask((32, 32), 3, acceleration=1)


def test_vista_mask_fills_ky_t_evenly():
    m = sampling.vista_mask((32, 24), 8, acceleration=4, center_lines=2)
    lines = m[:, :, 0]
    assert torch.all(m == lines[:, :, None])
    assert lines.sum(1).tolist() == [8] * 8
    assert lines[:, 15:17].all()
    assert len({tuple(f.nonzero().flatten().tolist()) for f in lines}) > 4
    # over the frames every line but a few at the far edge is visited
    assert int(lines.any(0).sum()) >= 26
    # denser at the centre than at the edge
    assert lines[:, 8:24].sum() > 2 * lines[:, list(range(8)) + list(range(24, 32))].sum()
