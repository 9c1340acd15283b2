"""ADMM for a least-squares data term plus weighted ℓ1 norms of linear transforms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mridip.solvers.cg import conjugate_gradient
from mridip.solvers.prox import soft_threshold

Linear = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class L1Term:
    """One term ``weight · ‖D x‖₁`` of :func:`admm_l1`: ``D`` (``forward``) and ``Dᴴ``.

    ``forward`` maps the unknown (e.g. ``(T, Ny, Nx)``) to any shape, ``adjoint`` back.
    A ``weight`` of 0 keeps the term in the splitting without shrinking it.
    """

    forward: Linear
    adjoint: Linear
    weight: float


def admm_l1(
    normal: Linear,
    rhs: torch.Tensor,
    terms: Sequence[L1Term],
    rho: float,
    iters: int,
    cg_iters: int = 4,
    relaxation: float = 1.0,
    x0: torch.Tensor | None = None,
    on_iter: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Solve ``min_x ½‖Ax − y‖²_W + Σ_i w_i ‖D_i x‖₁`` by ADMM (Boyd et al. 2011).

    With the splitting ``z_i = D_i x`` and scaled multipliers ``u_i``: the ``x``-step solves
    ``(AᴴWA + ρ Σ D_iᴴD_i) x = AᴴWy + ρ Σ D_iᴴ(z_i − u_i)`` by ``cg_iters`` warm-started
    conjugate-gradient steps on the whole unknown as one system (the transforms couple its
    entries, e.g. the frames), the ``z``-step soft-thresholds ``α D_i x + (1 − α) z_i + u_i``
    at ``w_i/ρ`` (over-relaxation ``α``, §3.4.3).

    Parameters
    ----------
    normal
        ``x ↦ AᴴWAx`` on the unknown's shape, e.g. ``(T, Ny, Nx)``.
    rhs
        ``AᴴWy``, the unknown's shape.
    terms
        The ℓ1 terms.
    rho
        Penalty ``ρ > 0`` in the data term's units; it changes the speed, not the solution.
    iters
        ADMM iterations.
    cg_iters
        Conjugate-gradient steps per ``x``-step.
    relaxation
        Over-relaxation ``α`` in ``(0, 2)``; 1 is plain ADMM.
    x0
        Start (zeros when None).
    on_iter
        Called after each iteration ``k`` (1-based) with ``k`` and that iteration's ``x``,
        which is the result a run of ``k`` iterations returns (:mod:`mridip.lam` scores the
        iterates to choose the iteration count).

    Returns
    -------
    x, history
        The last ``x`` and, per iteration, ``primal_residual`` ``(Σ‖D_i x − z_i‖² / Σ‖D_i x‖²)^½``
        and ``relative_change`` ``‖x_k − x_{k−1}‖ / ‖x_k‖``.
    """

    def d_all(x: torch.Tensor) -> list[torch.Tensor]:
        return [t.forward(x) for t in terms]

    def d_adjoint(zs: list[torch.Tensor]) -> torch.Tensor:
        out = terms[0].adjoint(zs[0])
        for t, z in zip(terms[1:], zs[1:], strict=True):
            out = out + t.adjoint(z)
        return out

    def system(x: torch.Tensor) -> torch.Tensor:
        return normal(x) + rho * d_adjoint(d_all(x))

    x = torch.zeros_like(rhs) if x0 is None else x0
    z = [torch.zeros_like(d) for d in d_all(x)]
    u = [torch.zeros_like(zi) for zi in z]
    hist: dict[str, list[float]] = {"primal_residual": [], "relative_change": []}
    for k in range(1, iters + 1):
        target = d_adjoint([zi - ui for zi, ui in zip(z, u, strict=True)])
        x_new, _ = conjugate_gradient(
            system, rhs + rho * target, x, iters=cg_iters, tol=0.0, batched=False
        )
        change = (x_new - x).norm() / x_new.norm().clamp(min=1e-30)
        x = x_new
        dx = d_all(x)
        res_num = torch.zeros((), device=x.device)
        res_den = torch.zeros((), device=x.device)
        for i, (di, term) in enumerate(zip(dx, terms, strict=True)):
            relaxed = di if relaxation == 1 else relaxation * di + (1 - relaxation) * z[i]
            v = relaxed + u[i]
            z[i] = soft_threshold(v, term.weight / rho) if term.weight > 0 else v
            u[i] = v - z[i]
            res_num = res_num + (di - z[i]).norm() ** 2
            res_den = res_den + di.norm() ** 2
        hist["primal_residual"].append(float((res_num / res_den.clamp(min=1e-30)).sqrt()))
        hist["relative_change"].append(float(change))
        if on_iter is not None:
            on_iter(k, x)
    return x, hist
