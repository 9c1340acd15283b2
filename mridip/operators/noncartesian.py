"""Non-Cartesian dynamic SENSE through torchkbnufft, frames batched along its batch axis.

The normal operator ``Aᴴ W A`` uses the Toeplitz embedding: the point-spread kernel of every
frame on the 2× grid is computed once at construction, after which ``normal`` costs two FFTs
on the 2× grid per frame and coil, and no interpolation.
"""

from __future__ import annotations

import math

import torch

from mridip.errors import KSpaceError
from mridip.operators.base import DynamicSense, Frames, _check_maps

#: Entries per unit of the Kaiser-Bessel interpolation table of the operator's NUFFTs.
TABLE_OVERSAMP = 2**14


class NonCartesianSense(DynamicSense):
    """``A x = NUFFT(S x)`` with one trajectory per frame.

    Parameters
    ----------
    maps
        Coil sensitivities ``(C, Ny, Nx)``; complex128 maps give a float64 operator.
    traj
        Trajectory ``(T, 2, K)`` in radians per voxel, rows ``(k_y, k_x)``.
    weights
        Optional non-negative data weights ``(T, 1, K)`` (density compensation, hold-out mask)
        applied by :meth:`normal` and :meth:`weighted_adjoint`.
    toeplitz
        Compute the Toeplitz kernels (needed by :meth:`normal`; set False to fall back to
        ``adjoint(W · forward(x))``).

    Shapes: image ``(T, Ny, Nx)`` ↔ k-space ``(T, C, K)``.
    """

    def __init__(
        self,
        maps: torch.Tensor,
        traj: torch.Tensor,
        weights: torch.Tensor | None = None,
        toeplitz: bool = True,
    ) -> None:
        import torchkbnufft as tkbn

        if traj.ndim != 3 or traj.shape[1] != 2:
            raise KSpaceError(f"trajectory must be (T, 2, K), got {tuple(traj.shape)}")
        self.maps = _check_maps(maps, _matrix_of(maps))
        real = torch.float64 if self.maps.dtype == torch.complex128 else torch.float32
        dev = self.maps.device
        self.traj = traj.to(device=dev, dtype=real)
        self._n_frames = int(traj.shape[0])
        ny, nx = self.matrix
        self.grid = (2 * ny, 2 * nx)
        # a fine kernel table: torchkbnufft's default (2^10 entries) is ~6e-4 from the exact
        # DFT, 2^14 is ~4e-5, so that the Toeplitz normal and the NUFFT pair agree to 1e-4
        kw = {
            "im_size": (ny, nx),
            "grid_size": self.grid,
            "table_oversamp": TABLE_OVERSAMP,
            "dtype": self.maps.dtype,
        }
        self._nufft = tkbn.KbNufft(**kw)
        self._nufft_adj = tkbn.KbNufftAdjoint(**kw)
        self._nufft.to(dev)
        self._nufft_adj.to(dev)
        # torchkbnufft's "ortho" divides by √(grid size); rescale so that A samples the
        # unitary DFT of the image (√(Ny·Nx)), as the Cartesian operator does
        self._scale = math.sqrt((self.grid[0] * self.grid[1]) / (ny * nx))
        if weights is not None:
            expected = (self._n_frames, 1, traj.shape[-1])
            if tuple(weights.shape) != expected:
                raise KSpaceError(f"weights must be {expected}, got {tuple(weights.shape)}")
            weights = weights.to(device=dev, dtype=real)
        self.weights = weights
        self.kernel: torch.Tensor | None = None
        if toeplitz:
            self.kernel = self._toeplitz_kernel()

    def _toeplitz_kernel(self) -> torch.Tensor:
        """Spectra ``(T, 2Ny, 2Nx)`` of every frame's point-spread function on the 2× grid.

        ``AᴴWA`` is a convolution with ``psf(d) = Σ_k w_k e^{i k·d} / (Ny·Nx)`` for offsets
        ``d ∈ [-N, N)``; one batched adjoint NUFFT of matrix ``2N`` evaluates it for all frames.
        """
        import torchkbnufft as tkbn

        ny, nx = self.matrix
        t, _, k = self.traj.shape
        w = torch.ones(t, 1, k, dtype=self.maps.dtype, device=self.device)
        if self.weights is not None:
            w = w * self.weights
        adj = tkbn.KbNufftAdjoint(
            im_size=(2 * ny, 2 * nx),
            grid_size=(4 * ny, 4 * nx),
            table_oversamp=TABLE_OVERSAMP,
            dtype=self.maps.dtype,
        ).to(self.device)
        psf = adj(w, self.traj)[:, 0]  # (T, 2Ny, 2Nx), offset d at index d + N
        psf = torch.fft.ifftshift(psf, dim=(-2, -1))  # offset 0 at index 0
        return torch.fft.fft2(psf) / (ny * nx)

    def _pick(self, t: torch.Tensor, frames: Frames) -> torch.Tensor:
        return t if frames is None else t[frames]

    def forward(self, x: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        self._check_image(x, frames)
        coil_images = x[:, None] * self.maps[None]
        return self._nufft(coil_images, self._pick(self.traj, frames), norm="ortho") * self._scale

    def adjoint(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        img = self.coil_images(y, frames)
        return (img * self.maps.conj()[None]).sum(dim=1)

    def coil_images(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        return self._nufft_adj(y, self._pick(self.traj, frames), norm="ortho") * self._scale

    def weighted_adjoint(self, y: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        if self.weights is not None:
            y = y * self._pick(self.weights, frames)
        return self.adjoint(y, frames)

    def normal(self, x: torch.Tensor, frames: Frames = None) -> torch.Tensor:
        """``Aᴴ W A x`` by Toeplitz embedding: zero-pad to 2×, FFT, multiply, inverse FFT, crop."""
        self._check_image(x, frames)
        if self.kernel is None:
            return self.weighted_adjoint(self.forward(x, frames), frames)
        ny, nx = self.matrix
        coil_images = x[:, None] * self.maps[None]  # (T, C, Ny, Nx)
        spec = torch.fft.fft2(coil_images, s=(2 * ny, 2 * nx))
        kernel = self._pick(self.kernel, frames)[:, None]
        spec = spec.mul_(kernel) if not spec.requires_grad else spec * kernel
        out = torch.fft.ifft2(spec)[..., :ny, :nx]
        return (out * self.maps.conj()[None]).sum(dim=1)

    def to(self, device: str | torch.device) -> NonCartesianSense:
        """The same operator on ``device`` (the kernels move, they are not recomputed)."""
        op = NonCartesianSense.__new__(NonCartesianSense)
        op.__dict__.update(self.__dict__)
        op.maps = self.maps.to(device)
        op.traj = self.traj.to(device)
        op.weights = None if self.weights is None else self.weights.to(device)
        op.kernel = None if self.kernel is None else self.kernel.to(device)
        op._nufft = self._nufft.to(device)
        op._nufft_adj = self._nufft_adj.to(device)
        return op


def _matrix_of(maps: torch.Tensor) -> tuple[int, int]:
    if maps.ndim != 3:
        raise KSpaceError(f"coil maps must be (C, Ny, Nx), got {tuple(maps.shape)}")
    return (int(maps.shape[-2]), int(maps.shape[-1]))
