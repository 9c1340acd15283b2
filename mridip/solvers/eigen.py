"""Eigenvalue estimates of Hermitian positive semi-definite operators (power method)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mridip.errors import ConfigError


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real inner product ``Re⟨a, b⟩`` of whole tensors (a 0-d tensor, no host sync)."""
    return torch.vdot(a.flatten(), b.flatten()).real


def _probe(like: torch.Tensor, seed: int, support: torch.Tensor | None) -> torch.Tensor:
    """A seeded complex Gaussian vector of ``like``'s shape, zero outside ``support``, unit norm."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if like.dtype == torch.complex128 else torch.float32
    v = torch.complex(
        torch.randn(like.shape, generator=g, dtype=real),
        torch.randn(like.shape, generator=g, dtype=real),
    ).to(like.device)
    if support is not None:
        v = v * support
    return v / v.norm()


def operator_gains(
    normal: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Tensor,
    iters: int = 15,
    seed: int = 0,
    support: torch.Tensor | None = None,
) -> tuple[float, float]:
    """Mean and largest eigenvalue of a Hermitian positive semi-definite operator.

    The mean, ``tr(N)/n``, is Hutchinson's estimate from the random start vector (exact in
    expectation, within about ``1/√n`` for one probe); the largest comes from power iteration,
    which approaches it from below, so callers that need an upper bound (step sizes) add a
    margin.

    Parameters
    ----------
    normal
        The operator, e.g. ``op.normal``: image series ``(T, Ny, Nx)`` → same shape.
    like
        A tensor of the operator's input shape, dtype and device, e.g. ``(T, Ny, Nx)``.
    iters
        Power iterations (one ``normal`` each).
    seed
        Seed of the random start vector.
    support
        Optional 0/1 tensor broadcastable to ``like`` (e.g. the coil maps' support ``(Ny, Nx)``):
        the start vector is zero outside it, so the mean is taken over the support only.

    Returns
    -------
    mean, largest
        In the operator's units (``AᴴWA``: squared coil-map gain times the data weights).

    Raises
    ------
    ConfigError
        When the operator is zero (e.g. all-zero coil maps).
    """
    v = _probe(like, seed, support)
    mean = torch.zeros((), device=like.device)
    lam = torch.zeros((), device=like.device)
    for i in range(max(1, iters)):
        w = normal(v)
        lam = _dot(v, w)
        if i == 0:
            mean = lam
        v = w / w.norm().clamp(min=1e-30)
    mean_value, max_value = float(mean), float(lam)
    if not max_value > 0:
        raise ConfigError("the forward operator is zero: check the coil maps and the sampling")
    return mean_value, max_value


def max_eigenvalue(
    normal: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Tensor,
    iters: int = 15,
    seed: int = 0,
) -> float:
    """Largest eigenvalue of a Hermitian positive semi-definite operator (power iteration).

    Shapes and errors as :func:`operator_gains`.
    """
    return operator_gains(normal, like, iters, seed)[1]


def mean_eigenvalue(
    normal: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Tensor,
    seed: int = 0,
    support: torch.Tensor | None = None,
) -> float:
    """Mean eigenvalue ``tr(N)/n`` from one random probe (one ``normal``).

    Shapes, ``support`` and errors as :func:`operator_gains`.
    """
    return operator_gains(normal, like, 1, seed, support)[0]
