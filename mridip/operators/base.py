"""The interface every dynamic SENSE operator keeps, and the adjointness check."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from mridip.errors import KSpaceError

if TYPE_CHECKING:
    from mridip.kspace import DynamicKSpace

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


def for_kspace(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    *,
    density_weighted: bool = False,
    weights: torch.Tensor | None = None,
    toeplitz: bool = True,
) -> DynamicSense:
    """Build the operator that matches ``kspace``.

    Parameters
    ----------
    kspace
        The data; its mask or trajectory and density compensation define ``A``.
    maps
        Coil sensitivities ``(C, Ny, Nx)`` on the same device as ``kspace``.
    density_weighted
        For non-Cartesian data, use the density compensation as the data weights ``W`` of
        :meth:`DynamicSense.normal` (faster convergence, not the noise-optimal least squares).
    weights
        Explicit data weights (``(T, 1, K)`` or ``(T, Ny, Nx)``), multiplied with the above.
    toeplitz
        Compute the Toeplitz kernels of a non-Cartesian operator (needed for a fast
        :meth:`DynamicSense.normal`; skip for adjoint-only use).

    Raises
    ------
    KSpaceError
        When the maps do not match the data (coils, matrix).
    """
    from mridip.operators.cartesian import CartesianSense
    from mridip.operators.noncartesian import NonCartesianSense

    maps = _check_maps(maps, kspace.matrix).to(kspace.device)
    if maps.shape[0] != kspace.n_coils:
        raise KSpaceError(f"{maps.shape[0]} coil maps for {kspace.n_coils} coils of data")
    if kspace.is_cartesian:
        assert kspace.mask is not None
        return CartesianSense(maps, kspace.mask, weights=weights)
    assert kspace.traj is not None and kspace.dcf is not None
    w = kspace.dcf if density_weighted else None
    if weights is not None:
        w = weights if w is None else w * weights
    return NonCartesianSense(maps, kspace.traj, weights=w, toeplitz=toeplitz)


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
