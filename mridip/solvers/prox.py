"""Proximal maps: ``prox_{t g}(v) = argmin_x t·g(x) + ½‖x − v‖²`` for the priors of the methods."""

from __future__ import annotations

import torch

from mridip.solvers.transforms import Wavelet2D


def soft_threshold(z: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Complex soft thresholding ``sgn(z) · max(|z| − t, 0)``: the prox of ``t‖·‖₁``.

    Parameters
    ----------
    z
        Any shape, real or complex.
    t
        Threshold ``≥ 0``, a number or a tensor broadcastable to ``z``.

    Returns
    -------
    torch.Tensor
        Shape and dtype of ``z``.
    """
    mag = z.abs()
    return z * ((mag - t).clamp(min=0) / mag.clamp(min=1e-30))


def wavelet_soft_threshold(v: torch.Tensor, t: float, wavelet: Wavelet2D) -> torch.Tensor:
    """Prox of ``t‖Ψ·‖₁`` for an orthonormal wavelet transform ``Ψ``: ``Ψᴴ soft(Ψ v, t)``.

    Exact because ``Ψ`` is orthonormal. ``v`` is ``(…, Ny, Nx)`` with sizes that are multiples
    of ``2**wavelet.levels``; the result has its shape.
    """
    return wavelet.inverse(soft_threshold(wavelet.forward(v), t))


def _casorati_gram(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Mᵀ`` ``(T, Ny·Nx)`` for the Casorati matrix ``M`` of ``x``, and ``MᴴM`` in double."""
    m = x.reshape(x.shape[0], -1)  # rows = frames: M = mᵀ
    return m, (m.conj() @ m.T).to(torch.complex128)


def casorati_singular_values(x: torch.Tensor) -> torch.Tensor:
    """Singular values of the Casorati matrix ``(Ny·Nx, T)`` of ``x`` ``(T, Ny, Nx)``.

    Returns ``(T,)`` float64, ascending (from the ``T × T`` Gram matrix).
    """
    return torch.linalg.eigvalsh(_casorati_gram(x)[1]).clamp(min=0).sqrt()


def largest_singular_value(x: torch.Tensor) -> float:
    """Largest singular value of the Casorati matrix of ``x`` ``(T, Ny, Nx)``."""
    return float(casorati_singular_values(x)[-1])


def singular_value_threshold(x: torch.Tensor, tau: float) -> torch.Tensor:
    """Prox of ``τ‖·‖_*`` on the Casorati matrix ``(Ny·Nx, T)`` of ``x`` ``(T, Ny, Nx)``.

    Through the ``T × T`` Gram matrix (in double precision): ``M V diag(max(1 − τ/σ, 0)) Vᴴ``
    equals ``U diag(max(σ − τ, 0)) Vᴴ`` and costs two products with the tall matrix. Returns
    ``x``'s shape and dtype.
    """
    m, gram = _casorati_gram(x)
    evals, v = torch.linalg.eigh(gram)
    sig = evals.clamp(min=0).sqrt()
    shrink = (1 - tau / sig.clamp(min=1e-30)).clamp(min=0)
    proj = (v * shrink) @ v.conj().T  # V diag(f) Vᴴ
    return (proj.T.to(x.dtype) @ m).reshape(x.shape)
