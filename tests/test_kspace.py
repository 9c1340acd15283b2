import math

import pytest
import torch

from mridip import sampling
from mridip.errors import KSpaceError
from mridip.kspace import DynamicKSpace


def _radial(t=3, c=2, n=16, s=5):
    traj, _ = sampling.golden_angle_radial(n, s, t)
    k = traj.shape[-1]
    data = torch.randn(t, c, k, dtype=torch.complex64)
    return data, traj


def _cart(t=3, c=2, n=16):
    mask = sampling.variable_density_mask((n, n), t, 4, seed=1)
    data = torch.randn(t, c, n, n, dtype=torch.complex64) * mask[:, None]
    return data, mask


def test_valid_noncartesian_defaults():
    data, traj = _radial()
    ks = DynamicKSpace(data, (16, 16), traj=traj)
    assert not ks.is_cartesian
    assert ks.n_frames == 3 and ks.n_coils == 2
    assert ks.dcf is not None and ks.dcf.shape == (3, 1, traj.shape[-1])
    assert torch.equal(ks.frame_times, torch.arange(3, dtype=torch.float64))
    # 5 spokes of a 16-matrix: R = (π/2 · 16) / 5
    assert ks.acceleration == pytest.approx(math.pi / 2 * 16 / 5, rel=1e-6)


def test_valid_cartesian_and_select_frames():
    data, mask = _cart()
    ks = DynamicKSpace(data, (16, 16), mask=mask, frame_times=torch.tensor([0.0, 0.1, 0.2]))
    assert ks.is_cartesian
    sub = ks.select_frames([0, 2])
    assert sub.n_frames == 2
    assert torch.equal(sub.data[1], data[2])
    assert sub.frame_times.tolist() == pytest.approx([0.0, 0.2])
    assert ks.acceleration == pytest.approx(mask.numel() / mask.sum().item())


def test_to_device_keeps_everything():
    data, traj = _radial()
    ks = DynamicKSpace(data, (16, 16), traj=traj).to("cpu")
    assert ks.traj.device.type == "cpu" and ks.dcf.device.type == "cpu"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d, tr: (d.real, tr), "complex"),
        (lambda d, tr: (d.clone().index_fill_(0, torch.tensor([1]), float("nan")), tr), "NaN"),
        (lambda d, tr: (d, tr * 4), "normalise"),
        (lambda d, tr: (d, tr[:, :, :-1]), "trajectory must be"),
        (lambda d, tr: (d[:, :, None], tr), "must be (T, C, K)"),
    ],
)
def test_noncartesian_invariants(mutate, message):
    data, traj = _radial()
    d, tr = mutate(data, traj)
    with pytest.raises(KSpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DynamicKSpace(d, (16, 16), traj=tr)


def test_cartesian_invariants():
    data, mask = _cart()
    with pytest.raises(KSpaceError, match="no sampled"):
        m = mask.clone()
        m[1] = False
        DynamicKSpace(data, (16, 16), mask=m)
    with pytest.raises(KSpaceError, match="matrix"):
        DynamicKSpace(data, (16, 12), mask=mask)
    with pytest.raises(KSpaceError, match="exactly one"):
        DynamicKSpace(data, (16, 16))
    with pytest.raises(KSpaceError, match="non-decreasing"):
        DynamicKSpace(data, (16, 16), mask=mask, frame_times=torch.tensor([0.0, 0.2, 0.1]))
    with pytest.raises(KSpaceError, match="dcf"):
        DynamicKSpace(data, (16, 16), mask=mask, dcf=torch.ones(3, 1, 5))


def test_negative_dcf_rejected():
    data, traj = _radial()
    dcf = -torch.ones(3, 1, traj.shape[-1])
    with pytest.raises(KSpaceError, match="non-negative"):
        DynamicKSpace(data, (16, 16), traj=traj, dcf=dcf)
