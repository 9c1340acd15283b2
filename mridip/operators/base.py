"""The interface every dynamic SENSE operator keeps, and the adjointness check.

The factory that picks a subclass for a k-space is :func:`mridip.operators.factory.for_kspace`,
beside the subclasses, so that this base needs none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from mridip.errors import KSpaceError

Frames = torch.Tensor | None


class DynamicSense(ABC):
    """``A = P F S``: coil maps ``S``, Fourier transform ``F`` and sampling ``P``, per frame.

    Subclasses implement :meth:`forward`, :meth:`adjoint` and :meth:`normal` on image series
    ``(T, Ny, Nx)``. ``normal`` is ``Aᴴ W A`` with the operator's data weights ``W`` (ones unless
    set, e.g. density compensation or a hold-out mask); ``forward`` and ``adjoint`` are
    unweighted. Every method takes ``frames``, a long tensor of frame indices, to act on a
    subset: then ``x`` holds ``len(frames)`` frames.
    """

    maps: torch.Tensor

    @property
    def n_frames(self) -> int:
        """Number of frames ``T`` the operator was built for."""
        return self._n_frames

    @property
    def matrix(self) -> tuple[int, int]:
        """Image matrix ``(Ny, Nx)``."""
        return (int(self.maps.shape[-2]), int(self.maps.shape[-1]))

    @property
    def dtype(self) -> torch.dtype:
        """Complex dtype of images and k-space."""
        return self.maps.dtype

    @property
    def device(self) -> torch.device:
        """Device of the operator's tensors."""
        return self.maps.device

    _n_frames: int

    @abstractmethod
    def forward(self, x: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        """Image series ``(T, Ny, Nx)`` → k-space (``(T, C, Ny, Nx)`` or ``(T, C, K)``)."""

    @abstractmethod
    def adjoint(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        """k-space → coil-combined image series ``(T, Ny, Nx)`` (unweighted ``Aᴴ``)."""

    @abstractmethod
    def normal(self, x: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        """``Aᴴ W A x`` for an image series ``(T, Ny, Nx)``."""

    @abstractmethod
    def weighted_adjoint(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        """``Aᴴ W y``: the right-hand side that pairs with :meth:`normal`."""

    @abstractmethod
    def coil_images(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        """Per-coil adjoint without coil combination: k-space → ``(T, C, Ny, Nx)``."""

    def _check_image(self, x: torch.Tensor, frames: Frames) -> None:
        t = self.n_frames if frames is None else int(frames.numel())
        if tuple(x.shape) != (t, *self.matrix):
            raise KSpaceError(f"image series must be {(t, *self.matrix)}, got {tuple(x.shape)}")


def _check_maps(maps: torch.Tensor, matrix: tuple[int, int]) -> torch.Tensor:
    if maps.ndim != 3 or tuple(maps.shape[-2:]) != tuple(matrix):
        raise KSpaceError(
            f"coil maps must be (C, {matrix[0]}, {matrix[1]}), got {tuple(maps.shape)}"
        )
    if not maps.is_complex():
        maps = maps.to(torch.complex64)
    if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
        raise KSpaceError("coil maps hold NaN or Inf")
    return maps


class _NormalLoss(torch.autograd.Function):
    """``Re⟨x, N x⟩ − 2 Re⟨x, b⟩`` with the gradient ``2 (N x − b)`` of a Hermitian ``N``."""

    @staticmethod
    def forward(ctx, x, rhs, normal):  # noqa: ANN001, ANN205
        nx = normal(x.detach())
        ctx.save_for_backward(nx - rhs)
        xf = x.detach().flatten()
        return torch.vdot(xf, nx.flatten()).real - 2 * torch.vdot(xf, rhs.flatten()).real

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (residual,) = ctx.saved_tensors
        return 2 * grad * residual, None, None


def normal_loss(
    op: DynamicSense, x: torch.Tensor, rhs: torch.Tensor, frames: Frames = None
) -> torch.Tensor:
    """Data term ``‖A x − y‖²_W − ‖y‖²_W = Re⟨x, AᴴWAx⟩ − 2 Re⟨x, AᴴWy⟩`` with its gradient.

    ``rhs`` is ``op.weighted_adjoint(y)``, computed once. One application of the normal
    operator serves both value and gradient (no autograd through the FFTs), so a fitting step
    costs one :meth:`DynamicSense.normal`. ``x`` may carry autograd history (a generator's
    output); the gradient flows into it.
    """
    return _NormalLoss.apply(x, rhs, lambda v: op.normal(v, frames))


def adjointness_error(op: DynamicSense, seed: int = 0) -> float:
    """Relative mismatch ``|⟨Ax, y⟩ − ⟨x, Aᴴy⟩| / (‖Ax‖‖y‖)`` for random ``x`` and ``y``."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if op.dtype == torch.complex128 else torch.float32
    shape = (op.n_frames, *op.matrix)
    x = torch.complex(
        torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real)
    )
    x = x.to(op.device)
    ax = op.forward(x)
    yr = torch.randn(ax.shape, generator=g, dtype=real)
    yi = torch.randn(ax.shape, generator=g, dtype=real)
    y = torch.complex(yr, yi).to(op.device)
    if hasattr(op, "mask"):
        y = y * op.mask[:, None]  # k-space outside the mask is not in A's range
    lhs = torch.vdot(ax.flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    return float((lhs - rhs).abs() / (ax.norm() * y.norm()))
