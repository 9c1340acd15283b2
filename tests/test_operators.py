import pytest
import torch

from mridip import phantoms, sampling
from mridip.kspace import DynamicKSpace
from mridip.operators import (
    CartesianSense,
    NonCartesianSense,
    adjointness_error,
    for_kspace,
    normal_loss,
)

N, T, C = 24, 3, 4
DTYPES = [torch.complex128, torch.complex64]
TOL = {torch.complex128: 1e-12, torch.complex64: 1e-5}


def _maps(dtype):
    return phantoms.coil_maps((N, N), C).to(dtype)


def _radial_op(dtype, weighted=False):
    traj, _ = sampling.golden_angle_radial(N, 7, T)
    w = sampling.radial_ramp_dcf(traj, (N, N)) if weighted else None
    return NonCartesianSense(_maps(dtype), traj, weights=w)


def _cart_op(dtype):
    mask = sampling.variable_density_mask((N, N), T, 3, seed=2)
    return CartesianSense(_maps(dtype), mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cartesian_adjoint(dtype):
    assert adjointness_error(_cart_op(dtype)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_noncartesian_adjoint(dtype):
    assert adjointness_error(_radial_op(dtype)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_toeplitz_normal_matches_forward_adjoint(dtype, weighted):
    op = _radial_op(dtype, weighted)
    x = torch.randn(T, N, N, dtype=dtype)
    ref = op.weighted_adjoint(op.forward(x))
    err = float((op.normal(x) - ref).norm() / ref.norm())
    assert err < 1e-4


def test_toeplitz_normal_matches_exact_dft():
    """Independent of torchkbnufft: the normal operator against a dense DFT matrix."""
    n = 16
    traj, _ = sampling.golden_angle_radial(n, 5, 1)
    op = NonCartesianSense(torch.ones(1, n, n, dtype=torch.complex128), traj)
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    r = torch.stack([yy.flatten(), xx.flatten()]).double()
    e = torch.exp(-1j * (traj[0].double().T @ r)) / n  # unitary-DFT rows
    x = torch.randn(1, n, n, dtype=torch.complex128)
    exact = (e.conj().T @ (e @ x.reshape(-1))).reshape(1, n, n)
    assert float((op.normal(x) - exact).norm() / exact.norm()) < 1e-4


def test_cartesian_full_sampling_is_identity():
    maps = _maps(torch.complex128)  # Σ|S|² = 1
    op = CartesianSense(maps, torch.ones(T, N, N, dtype=torch.bool))
    x = torch.randn(T, N, N, dtype=torch.complex128)
    assert torch.allclose(op.normal(x), x, atol=1e-12)
    assert torch.allclose(op.adjoint(op.forward(x)), x, atol=1e-12)


@pytest.mark.parametrize("make", [_cart_op, _radial_op])
def test_frame_subset_matches_full(make):
    op = make(torch.complex128)
    x = torch.randn(T, N, N, dtype=torch.complex128)
    frames = torch.tensor([2, 0])
    full = op.normal(x)[frames]
    sub = op.normal(x[frames], frames=frames)
    assert torch.allclose(sub, full, atol=1e-10)


@pytest.mark.parametrize("make", [_cart_op, _radial_op])
def test_normal_loss_gradient_matches_autograd(make):
    op = make(torch.complex128)
    truth = phantoms.cine_phantom((N, N), T).image.to(torch.complex128)
    y = op.forward(truth)
    w = (
        op.weights[:, None]
        if isinstance(op, CartesianSense)
        else (op.weights if op.weights is not None else 1.0)
    )
    rhs = op.weighted_adjoint(y)
    x0 = torch.randn(T, N, N, dtype=torch.complex128)
    x1 = x0.clone().requires_grad_(True)
    loss1 = normal_loss(op, x1, rhs)
    loss1.backward()
    x2 = x0.clone().requires_grad_(True)
    loss2 = ((op.forward(x2) - y).abs() ** 2 * w).sum()
    loss2.backward()
    const = float((y.abs() ** 2 * w).sum())
    assert float(loss1.detach()) + const == pytest.approx(float(loss2.detach()), rel=1e-4)
    assert float((x1.grad - x2.grad).norm() / x2.grad.norm()) < 1e-4


def test_for_kspace_checks_maps():
    traj, _ = sampling.golden_angle_radial(N, 5, T)
    ks = DynamicKSpace(torch.zeros(T, C, traj.shape[-1], dtype=torch.complex64), (N, N), traj=traj)
    with pytest.raises(Exception, match="coil maps"):
        for_kspace(ks, torch.ones(C + 1, N, N, dtype=torch.complex64))
    with pytest.raises(Exception, match="coil maps must be"):
        for_kspace(ks, torch.ones(C, N, N + 1, dtype=torch.complex64))
    op = for_kspace(ks, torch.ones(C, N, N, dtype=torch.complex64), density_weighted=True)
    assert torch.equal(op.weights, ks.dcf)


def test_torchkbnufft_survives_torch_geometric_imported_first():
    """torch_geometric patches torch.index_select, which breaks torchkbnufft's TorchScript
    compilation; mridip's import order (and its fallback) must keep the NUFFT working."""
    import subprocess
    import sys

    code = (
        "import torch_geometric, mridip, torch, torchkbnufft as t;"
        "op = t.KbNufftAdjoint(im_size=(8, 8));"
        "print(op(torch.ones(1, 1, 10, dtype=torch.complex64), torch.rand(2, 10)).shape)"
    )
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-500:]
    assert "torch.Size([1, 1, 8, 8])" in r.stdout
