"""Cartesian dynamic SENSE: masked, centred, orthonormal 2-D FFT per frame and coil."""

from __future__ import annotations

import torch

from mridip.errors import KSpaceError
from mridip.operators.base import DynamicSense, Frames, _check_maps


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes (k-space centre at ``N//2``)."""
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT over the last two axes."""
    k = torch.fft.ifftshift(k, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=(-2, -1))


class CartesianSense(DynamicSense):
    """``A x = M ⊙ F(S x)`` for Cartesian data.

    Parameters
    ----------
    maps
        Coil sensitivities ``(C, Ny, Nx)``, complex.
    mask
        Sampling mask ``(T, Ny, Nx)``, bool.
    weights
        Optional real data weights ``(T, Ny, Nx)`` used by :meth:`normal` (e.g. a hold-out mask).

    Shapes: image ``(T, Ny, Nx)`` ↔ k-space ``(T, C, Ny, Nx)`` (zero outside the mask).
    """

    def __init__(
        self, maps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
    ) -> None:
        self.maps = _check_maps(maps, tuple(mask.shape[-2:]))  # type: ignore[arg-type]
        if mask.ndim != 3:
            raise KSpaceError(f"mask must be (T, Ny, Nx), got {tuple(mask.shape)}")
        self.mask = mask.to(device=self.maps.device, dtype=torch.bool)
        self._n_frames = int(mask.shape[0])
        real = torch.float64 if self.maps.dtype == torch.complex128 else torch.float32
        w = self.mask.to(real)
        if weights is not None:
            if tuple(weights.shape) != tuple(mask.shape):
                raise KSpaceError(
                    f"weights must be {tuple(mask.shape)}, got {tuple(weights.shape)}"
                )
            w = w * weights.to(device=w.device, dtype=real)
        self.weights = w

    def _pick(self, t: torch.Tensor, frames: Frames) -> torch.Tensor:
        return t if frames is None else t[frames]

    def forward(self, x: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        self._check_image(x, frames)
        k = fft2c(x[:, None] * self.maps[None])
        return k * self._pick(self.mask, frames)[:, None]

    def adjoint(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        img = ifft2c(y * self._pick(self.mask, frames)[:, None])
        return (img * self.maps.conj()[None]).sum(dim=1)

    def coil_images(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        return ifft2c(y * self._pick(self.mask, frames)[:, None])

    def weighted_adjoint(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        img = ifft2c(y * self._pick(self.weights, frames)[:, None])
        return (img * self.maps.conj()[None]).sum(dim=1)

    def normal(self, x: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        self._check_image(x, frames)
        k = fft2c(x[:, None] * self.maps[None]) * self._pick(self.weights, frames)[:, None]
        return (ifft2c(k) * self.maps.conj()[None]).sum(dim=1)

    def to(self, device: str | torch.device) -> CartesianSense:
        """The same operator on ``device``."""
        op = CartesianSense(self.maps.to(device), self.mask.to(device))
        op.weights = self.weights.to(device)
        return op
