"""Conjugate gradients for Hermitian positive (semi-)definite systems, batched over frames."""

from __future__ import annotations

from collections.abc import Callable

import torch


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    iters: int = 10,
    tol: float = 1e-6,
    batched: bool = True,
) -> tuple[torch.Tensor, list[float]]:
    """Solve ``N x = b`` for a Hermitian positive (semi-)definite ``N`` by conjugate gradients.

    With ``batched`` (the default) the leading axis holds independent systems, e.g. the frames
    of CG-SENSE: step sizes are ``(B,)`` tensors, so one call of ``normal`` serves every system
    per iteration. Without it the whole tensor is one system, as when a prior couples the
    frames (the ``x``-step of TV-ADMM).

    Parameters
    ----------
    normal
        ``x ↦ N x`` on tensors of ``rhs``'s shape.
    rhs
        ``b``, real or complex: ``(B, ...)`` with at least two axes when ``batched`` (e.g. an
        image series ``(T, Ny, Nx)``), any shape otherwise.
    x0
        Start, shape of ``rhs`` (zeros when None).
    iters
        Upper bound of iterations (one ``normal`` each).
    tol
        Stop when the relative residual ``‖b − N x‖ / ‖b‖`` of every system is below it
        (0: run all ``iters``).
    batched
        Independent systems along the leading axis.

    Returns
    -------
    x, history
        Solution, shape of ``rhs``, and the largest relative residual over the systems after
        each iteration.
    """
    dims = tuple(range(1 if batched else 0, rhs.ndim))
    ones = [1] * (rhs.ndim - 1)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.conj() * b).sum(dim=dims).real

    def expand(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, *ones) if batched else v

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
