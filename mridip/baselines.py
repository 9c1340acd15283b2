"""Classical reconstructions on the same data and operators as the DIP methods.

Every function takes a :class:`~mridip.kspace.DynamicKSpace` and coil maps ``(C, Ny, Nx)``
and returns an image series ``(T, Ny, Nx)`` complex64 on the data's device, with a history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace
from mridip.operators import DynamicSense, for_kspace


@dataclass
class BaselineResult:
    """Image series and per-iteration history of a baseline."""

    image: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)


def _coil_energy(maps: torch.Tensor) -> torch.Tensor:
    e = (maps.abs() ** 2).sum(0)
    return torch.where(e > 1e-6 * e.max(), e, torch.ones_like(e))


def zero_filled(kspace: DynamicKSpace, maps: torch.Tensor) -> BaselineResult:
    """Density-compensated adjoint, combined with the coil maps: ``Σ_c S_c* (Aᴴ_c D y_c) / Σ|S|²``.

    Cartesian data are zero-filled (no compensation); non-Cartesian data use ``kspace.dcf``.
    """
    op = for_kspace(kspace, maps, toeplitz=False)
    y = kspace.data if kspace.dcf is None else kspace.data * kspace.dcf
    x = op.adjoint(y) / _coil_energy(op.maps)
    return BaselineResult(x.to(torch.complex64))


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    iters: int = 10,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, list[float]]:
    """Solve ``N x = b`` for a Hermitian positive (semi-)definite ``N``, frame by frame.

    Frames are independent systems solved together: step sizes are ``(T,)`` tensors, so one
    call of ``normal`` serves all frames per iteration.

    Returns
    -------
    x, history
        Solution ``(T, ...)`` and the relative residual norm after each iteration.
    """
    dims = tuple(range(1, rhs.ndim))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.conj() * b).sum(dim=dims).real

    def expand(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, *([1] * (rhs.ndim - 1)))

    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = dot(r, r)
    b_norm = dot(rhs, rhs).sqrt().clamp(min=1e-30)
    history: list[float] = []
    for _ in range(iters):
        ap = normal(p)
        alpha = rr / dot(p, ap).clamp(min=1e-30)
        x = x + expand(alpha) * p
        r = r - expand(alpha) * ap
        rr_new = dot(r, r)
        res = float((rr_new.sqrt() / b_norm).max())
        history.append(res)
        if res < tol:
            break
        p = r + expand(rr_new / rr.clamp(min=1e-30)) * p
        rr = rr_new
    return x, history


def cg_sense(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    iters: int = 10,
    lam: float = 0.0,
    density_weighted: bool = True,
    operator: DynamicSense | None = None,
) -> BaselineResult:
    """CG-SENSE: conjugate gradients on ``(Aᴴ W A + λ I) x = Aᴴ W y``, every frame at once.

    Parameters
    ----------
    kspace, maps
        Data and coil sensitivities ``(C, Ny, Nx)``.
    iters
        CG iterations; with few samples per frame the iteration count regularises (early
        stopping), so keep it moderate.
    lam
        Tikhonov weight, relative: ``AᴴWA`` of unit-normalised maps and density compensation
        has eigenvalues of order one.
    density_weighted
        Non-Cartesian only: ``W`` = density compensation (faster, well-conditioned) or ones
        (the plain least-squares problem).
    operator
        A prebuilt operator for ``kspace`` (its weights are used as they are).
    """
    if iters < 1:
        raise ConfigError(f"CG-SENSE needs at least one iteration, got {iters}")
    if lam < 0:
        raise ConfigError(f"lam must be ≥ 0, got {lam}")
    op = operator or for_kspace(kspace, maps, density_weighted=density_weighted)
    rhs = op.weighted_adjoint(kspace.data)

    def normal(x: torch.Tensor) -> torch.Tensor:
        out = op.normal(x)
        return out + lam * x if lam > 0 else out

    x, res = conjugate_gradient(normal, rhs, iters=iters)
    return BaselineResult(x.to(torch.complex64), {"relative_residual": res})
