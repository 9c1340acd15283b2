import math

import pytest
import torch

from mridip import phantoms, sampling
from mridip.errors import ConfigError
from mridip.metrics import evaluate
from mridip.operators import NonCartesianSense


def test_golden_angle_value_in_radians():
    assert math.degrees(sampling.GOLDEN_ANGLE) == pytest.approx(111.246, abs=1e-3)
    a = sampling.golden_angle_stream(3)
    assert a[1] - a[0] == pytest.approx(sampling.GOLDEN_ANGLE)


def test_stream_is_continuous_across_frames():
    traj, angles = sampling.golden_angle_radial(16, 5, 3)
    assert angles.shape == (3, 5)
    # frame 1 starts where frame 0 stopped: spoke 5 of the stream
    expected = math.remainder(5 * sampling.GOLDEN_ANGLE, 2 * math.pi) % (2 * math.pi)
    assert float(angles[1, 0]) == pytest.approx(expected, abs=1e-9)
    assert not torch.allclose(angles[0], angles[1])


def test_radial_trajectory_range_and_oversampling():
    traj, angles = sampling.golden_angle_radial(32, 4, 2, oversampling=2)
    assert traj.shape == (2, 2, 4 * 64)
    assert float(traj.abs().max()) <= math.pi + 1e-6
    spoke = traj[0, :, :64]
    radius = torch.linalg.vector_norm(spoke, dim=0)
    steps = (radius[1:] - radius[:-1]).abs()
    # 2N samples across [-π, π): spacing π/N, half the Nyquist spacing 2π/N
    assert float(steps[steps > 1e-6].median()) == pytest.approx(math.pi / 32, rel=1e-4)
    # row 0 is k_y, row 1 is k_x: angle measured from k_x
    a = float(angles[0, 0])
    end = spoke[:, 0]
    assert math.atan2(-float(end[0]), -float(end[1])) % math.pi == pytest.approx(
        a % math.pi, abs=1e-5
    )


def test_uniform_radial_interleaves():
    _, angles = sampling.uniform_radial(16, 4, 3)
    allang = torch.sort(angles.flatten() % math.pi).values
    assert torch.allclose(
        allang[1:] - allang[:-1], torch.full((11,), math.pi / 12, dtype=allang.dtype)
    )


def test_bin_stream_drops_incomplete():
    b = sampling.bin_stream(torch.arange(11.0), 4)
    assert b.shape == (2, 4)
    with pytest.raises(Exception, match="divide"):
        sampling.bin_stream(torch.arange(11.0), 4, drop_incomplete=False)


def test_variable_density_mask():
    m = sampling.variable_density_mask((64, 48), 6, acceleration=4, seed=3)
    assert m.shape == (6, 64, 48)
    lines = m[:, :, 0]
    assert torch.all(m == lines[:, :, None])  # whole readout lines
    assert lines.sum(1).tolist() == [16] * 6
    assert lines[:, 30:34].all()  # fully sampled centre
    assert len({tuple(f.nonzero().flatten().tolist()) for f in lines}) == 6  # differs per frame
    again = sampling.variable_density_mask((64, 48), 6, acceleration=4, seed=3)
    assert torch.equal(m, again)


def test_holdout_never_draws_nothing():
    """A small scan can draw no held-out unit at all (24 measured lines at 15%: this seed);
    then the unit with the smallest draw is held out, a whole line, so that a held-out
    residual is defined (non-Cartesian units alike). A split that drew something is kept."""
    from mridip.kspace import DynamicKSpace

    mask = sampling.variable_density_mask((24, 24), 4, acceleration=4, seed=0)
    cart = DynamicKSpace(
        data=torch.ones(4, 3, 24, 24, dtype=torch.complex64) * mask[:, None],
        matrix=(24, 24),
        mask=mask,
    )
    drawn = torch.rand((4, 24, 1), generator=torch.Generator().manual_seed(1))
    assert not bool(((drawn < 0.15) & mask[:, :, :1]).any())  # this seed draws nothing
    fit_w, held_w = sampling.holdout_weights(
        cart, 0.15, torch.Generator().manual_seed(1), "readout"
    )
    lines = held_w.amax(dim=2)  # (T, Ny)
    assert int(lines.sum()) == 1 and torch.equal(held_w, lines[:, :, None] * mask)
    t, y = (int(i) for i in lines.nonzero()[0])
    assert bool(mask[t, y].all())  # a measured line, the smallest draw among them
    assert float(drawn[t, y, 0]) == float(drawn.masked_fill(~mask[:, :, :1], 2).min())
    assert torch.equal(fit_w + held_w, torch.ones_like(held_w))
    # a split that drew something is not touched
    _, many = sampling.holdout_weights(cart, 0.4, torch.Generator().manual_seed(1), "readout")
    expect = (torch.rand((4, 24, 1), generator=torch.Generator().manual_seed(1)) < 0.4) & mask
    assert torch.equal(many.bool(), expect)


def test_holdout_can_spare_the_lines_every_frame_measures():
    """``spare_centre``: a variable-density pattern's centre lines (measured in every frame)
    are never held out, the other lines as before; a mask that is the same in every frame is
    split as without it (else nothing could be held out)."""
    from mridip.kspace import DynamicKSpace

    mask = sampling.variable_density_mask((32, 32), 8, acceleration=4, seed=2)
    always = mask.all(dim=0)[:, 0]  # (Ny,) the centre lines
    assert 0 < int(always.sum()) < int(mask[0, :, 0].sum())
    data = torch.ones(8, 2, 32, 32, dtype=torch.complex64) * mask[:, None]
    scan = DynamicKSpace(data=data, matrix=(32, 32), mask=mask)
    gen = torch.Generator
    _, plain = sampling.holdout_weights(scan, 0.4, gen().manual_seed(0), "readout")
    _, spared = sampling.holdout_weights(scan, 0.4, gen().manual_seed(0), "readout", True)
    assert plain[:, always].any()  # without it some centre line is held out (this seed)
    assert not spared[:, always].any()
    assert torch.equal(spared[:, ~always], plain[:, ~always])  # the rest: the same draw
    same = mask[:1].expand(8, -1, -1)  # one pattern for every frame: all of it "always"
    fixed = DynamicKSpace(data=data * same[:, None], matrix=(32, 32), mask=same.clone())
    _, a = sampling.holdout_weights(fixed, 0.4, gen().manual_seed(0), "readout")
    _, b = sampling.holdout_weights(fixed, 0.4, gen().manual_seed(0), "readout", True)
    assert torch.equal(a, b) and a.any()


def test_cartesian_density_weights_are_the_inverse_sampling_density():
    """Exactly 1/p without the box: a line every frame measures gets 1, one measured in one
    frame of four gets 4, a line no frame measures the cap T; with the box, a variable-density
    pattern's centre gets about 1 and its periphery several times more."""
    mask = torch.zeros(4, 8, 6, dtype=torch.bool)
    mask[:, 3:5] = True  # the centre, every frame
    mask[0, 0] = mask[1, 1] = mask[2, 6] = mask[3, 7] = True  # one frame each
    w = sampling.cartesian_density_weights(mask, half=0)
    assert w.shape == (1, 8, 6) and w.dtype == torch.float32
    assert torch.all(w[0, 3:5] == 1) and torch.all(w[0, [0, 1, 6, 7]] == 4)
    assert torch.all(w[0, 2] == 4) and torch.all(w[0, 5] == 4)  # never measured: at most T
    vd = sampling.variable_density_mask((64, 48), 8, acceleration=8, seed=1)
    w = sampling.cartesian_density_weights(vd)[0, :, 0]
    centre = float(w[31:33].max())  # the box reaches past the 4 fully sampled lines
    assert 1 <= centre < 1.5
    assert float(w[:8].mean()) > 4 * centre and float(w[-8:].mean()) > 4 * centre
    with pytest.raises(ConfigError, match="Cartesian mask"):
        sampling.cartesian_density_weights(vd[0])


@pytest.mark.parametrize("kind", ["ramp", "pipe"])
def test_dcf_gives_unbiased_zero_filled(kind):
    n = 32
    traj, _ = sampling.golden_angle_radial(n, 48, 1)
    dcf = (
        sampling.radial_ramp_dcf(traj, (n, n))
        if kind == "ramp"
        else sampling.pipe_menon_dcf(traj, (n, n))
    )
    assert dcf.shape == (1, 1, traj.shape[-1]) and bool((dcf >= 0).all())
    img = phantoms.cine_phantom((n, n), 1).image
    maps = torch.ones(1, n, n, dtype=torch.complex64)
    op = NonCartesianSense(maps, traj, toeplitz=False)
    x = op.adjoint(op.forward(img) * dcf)
    q = evaluate(x, img)
    assert q["scale"] == pytest.approx(1.0, abs=0.1)
    assert q["psnr"] > 28


def test_ramp_is_proportional_to_radius():
    traj, _ = sampling.golden_angle_radial(16, 3, 1)
    dcf = sampling.radial_ramp_dcf(traj, (16, 16))[0, 0]
    r = torch.linalg.vector_norm(traj[0], dim=0)
    far = r > 0.5
    ratio = dcf[far] / r[far]
    assert float(ratio.std() / ratio.mean()) < 1e-5
