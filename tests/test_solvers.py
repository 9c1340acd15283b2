"""The shared solvers (mridip.solvers): each against a dense or closed-form reference."""

from __future__ import annotations

import pytest
import torch

from mridip.errors import ConfigError
from mridip.solvers import (
    L1Term,
    Wavelet2D,
    admm_l1,
    conjugate_gradient,
    data_scale,
    finite_difference,
    finite_difference_adjoint,
    largest_singular_value,
    mean_eigenvalue,
    operator_gains,
    pogm,
    singular_value_threshold,
    soft_threshold,
    wavelet_soft_threshold,
)


def _complex(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(
        torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    )


# -- conjugate gradients -----------------------------------------------------------------------
def test_conjugate_gradient_solves_per_frame():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 6 * torch.eye(6, dtype=torch.float64)  # one system per frame
    b = torch.randn(3, 6, generator=g, dtype=torch.float64)
    x, hist = conjugate_gradient(lambda v: (spd @ v[..., None])[..., 0], b, iters=12, tol=1e-12)
    assert torch.allclose(x, torch.linalg.solve(spd, b), atol=1e-8)
    assert hist[-1] < 1e-10 and hist[0] > hist[-1]


def test_conjugate_gradient_solves_one_coupled_system():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(12, 12, generator=g, dtype=torch.float64)
    spd = a @ a.T + 12 * torch.eye(12, dtype=torch.float64)  # couples the "frames" (rows of 3)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64)

    def normal(v):
        return (spd @ v.reshape(12)).reshape(4, 3)

    x, hist = conjugate_gradient(normal, b, iters=30, tol=1e-12, batched=False)
    assert torch.allclose(x.reshape(12), torch.linalg.solve(spd, b.reshape(12)), atol=1e-8)
    # per-frame step sizes cannot solve a coupled system: the batched variant is not the same
    y, _ = conjugate_gradient(normal, b, iters=30, tol=1e-12, batched=True)
    assert not torch.allclose(y, x, atol=1e-3)


def test_conjugate_gradient_warm_start_and_tolerance():
    d = torch.linspace(1.0, 4.0, 8, dtype=torch.float64)
    b = torch.ones(2, 8, dtype=torch.float64)
    exact = b / d
    x, hist = conjugate_gradient(lambda v: d * v, b, x0=exact, iters=5, tol=1e-9)
    assert len(hist) == 1 and torch.allclose(x, exact)  # the start already solves it


# -- ADMM --------------------------------------------------------------------------------------
def test_admm_l1_reaches_the_closed_form_solution():
    """``min ½ Σ a_i|x_i − y_i|² + w‖x‖₁`` with diagonal ``a``: ``x = soft(y, w/a)``."""
    y = _complex(3, 8, 8, seed=7)
    a = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    w = 0.8

    def identity(v):
        return v

    x, hist = admm_l1(lambda v: a * v, a * y, [L1Term(identity, identity, w)], rho=1.0, iters=200)
    expect = soft_threshold(y, w / a)
    assert torch.allclose(x, expect, atol=1e-6)
    assert hist["primal_residual"][-1] < 1e-6 < hist["primal_residual"][0]
    assert len(hist["relative_change"]) == 200


def test_admm_l1_tv_of_a_step_has_the_closed_form_solution():
    """1-D TV denoising of a step of n + n samples: each side moves by λ/n towards the other."""
    y = torch.cat([torch.zeros(10), torch.ones(10)]).to(torch.float64)
    lam = 0.2
    term = L1Term(lambda v: finite_difference(v, 0), lambda z: finite_difference_adjoint(z, 0), lam)
    x, _ = admm_l1(lambda v: v, y, [term], rho=1.0, iters=300, cg_iters=4, relaxation=1.6)
    expect = torch.cat([torch.full((10,), lam / 10), torch.full((10,), 1 - lam / 10)])
    assert torch.allclose(x, expect.to(torch.float64), atol=1e-6)


# -- eigenvalues and scale ---------------------------------------------------------------------
def test_mean_eigenvalue_over_the_support():
    g = torch.Generator().manual_seed(3)
    diag = 1 + 2 * torch.rand(4, 16, 16, generator=g)
    support = torch.zeros(16, 16)
    support[:, :8] = 1
    diag[..., 8:] = 50.0  # outside the support: a gain no probe inside it sees

    def normal(v):
        return diag * v

    like = torch.zeros(4, 16, 16, dtype=torch.complex64)
    inside = mean_eigenvalue(normal, like, support=support)
    assert inside == pytest.approx(2.0, rel=0.1)
    assert mean_eigenvalue(normal, like) > 20
    with pytest.raises(ConfigError, match="operator is zero"):
        mean_eigenvalue(lambda v: 0 * v, like)


def test_data_scale_is_a_high_percentile():
    x = torch.arange(1, 101, dtype=torch.float32).reshape(4, 5, 5) * (1 + 1j)
    assert data_scale(x) == pytest.approx(99 * 2**0.5, rel=1e-6)
    assert data_scale(x, quantile=0.5) == pytest.approx(50 * 2**0.5, rel=1e-6)
    with pytest.raises(ConfigError, match="zero"):
        data_scale(torch.zeros(2, 4, 4))


def test_wavelet_soft_threshold_is_the_prox():
    psi = Wavelet2D(2, "db2")
    v = _complex(2, 8, 8, seed=8)
    out = wavelet_soft_threshold(v, 0.5, psi)
    assert torch.allclose(psi.forward(out), soft_threshold(psi.forward(v), 0.5), atol=1e-12)


def test_largest_singular_value_of_a_rank_one_series():
    u = _complex(1, 6, 6, seed=9)
    t = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)[:, None, None]
    x = t * u  # Casorati matrix u ⊗ t: rank one, σ₁ = ‖u‖‖t‖
    assert largest_singular_value(x) == pytest.approx(float(u.norm() * 3.0), rel=1e-10)


# -- proximal maps, transforms, POGM -----------------------------------------------------------
@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("dim", [0, 2])
def test_finite_difference_adjoint(circular, dim):
    x, z = _complex(5, 6, 7, seed=1), _complex(5, 6, 7, seed=2)
    lhs = torch.vdot(finite_difference(x, dim, circular).flatten(), z.flatten())
    rhs = torch.vdot(x.flatten(), finite_difference_adjoint(z, dim, circular).flatten())
    assert abs(complex(lhs - rhs)) < 1e-10 * float(x.norm() * z.norm())
    ramp = torch.arange(6.0)[:, None].expand(6, 3).clone()
    d = finite_difference(ramp, 0, circular)
    assert torch.all(d[:-1] == 1)
    assert float(d[-1, 0]) == (-5.0 if circular else 0.0)  # wrap-around only when periodic


@pytest.mark.parametrize("name", ["haar", "db2"])
def test_wavelet_is_orthonormal(name):
    w = Wavelet2D(levels=3, name=name)
    x, y = _complex(2, 16, 24, seed=3), _complex(2, 16, 24, seed=4)
    c = w.forward(x)
    assert c.shape == x.shape
    assert torch.allclose(w.inverse(c), x, atol=1e-10)
    assert float(c.norm()) == pytest.approx(float(x.norm()), rel=1e-10)
    lhs = torch.vdot(w.forward(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), w.inverse(y).flatten())
    assert abs(complex(lhs - rhs)) < 1e-9 * float(x.norm() * y.norm())
    # a smooth image is sparse: most of its energy sits in the coarse approximation
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    smooth = torch.exp(-(yy**2 + xx**2) * 3).to(torch.float64)
    cs = w.forward(smooth)
    assert float(cs[:4, :4].norm() ** 2) > 0.8 * float(smooth.norm() ** 2)
    with pytest.raises(ConfigError, match="multiples of 8"):
        w.forward(torch.zeros(1, 20, 24))
    with pytest.raises(ConfigError, match="unknown wavelet"):
        Wavelet2D(2, "db9")


def test_operator_gains_match_dense_eigenvalues():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    evals = torch.linspace(0.1, 5.0, 64, dtype=torch.float64)
    mat = (q * evals) @ q.T

    def normal(v):
        return (mat.to(v.dtype) @ v.reshape(64)).reshape(v.shape)

    mean, top = operator_gains(normal, torch.zeros(4, 4, 4, dtype=torch.complex128), iters=200)
    assert top == pytest.approx(5.0, rel=1e-3)
    assert mean == pytest.approx(float(evals.mean()), rel=0.2)  # one Hutchinson probe


def test_soft_threshold_and_svt():
    z = torch.tensor([3 + 4j, 0.5j, 0], dtype=torch.complex64)
    out = soft_threshold(z, 1.0)
    assert torch.allclose(out, torch.tensor([2.4 + 3.2j, 0, 0], dtype=torch.complex64))
    x = _complex(6, 5, 4, seed=5).to(torch.complex64)
    tau = 3.0
    u, s, vh = torch.linalg.svd(x.reshape(6, -1).T, full_matrices=False)
    expect = ((u * (s - tau).clamp(min=0)) @ vh).T.reshape(x.shape)
    assert torch.allclose(singular_value_threshold(x, tau), expect, atol=1e-4)


def test_pogm_solves_a_lasso_and_beats_ista():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 60, generator=g, dtype=torch.float64)
    truth = torch.zeros(60, dtype=torch.float64)
    truth[[3, 17, 41]] = torch.tensor([2.0, -1.5, 1.0], dtype=torch.float64)
    b = a @ truth + 0.01 * torch.randn(40, generator=g, dtype=torch.float64)
    lam = 0.5
    lip = float(torch.linalg.eigvalsh(a.T @ a)[-1])

    def grad(x):
        return a.T @ (a @ x - b)

    def prox(v, gamma):
        return torch.sign(v) * (v.abs() - gamma * lam).clamp(min=0)

    def objective(x):
        return float(0.5 * (a @ x - b).pow(2).sum() + lam * x.abs().sum())

    ista = torch.zeros(60, dtype=torch.float64)
    for _ in range(5000):  # the reference: ISTA run to convergence
        ista = prox(ista - grad(ista) / lip, 1 / lip)
    best = objective(ista)
    short = torch.zeros(60, dtype=torch.float64)
    for _ in range(100):
        short = prox(short - grad(short) / lip, 1 / lip)
    x = pogm(grad, prox, torch.zeros(60, dtype=torch.float64), lip, 100)
    assert objective(x) - best < 1e-4 * best
    assert objective(x) - best < 0.1 * (objective(short) - best)
