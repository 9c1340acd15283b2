"""Sparsifying transforms of image series: finite differences, orthonormal wavelets, temporal FFT.

The priors' linear parts; their proximal maps are in :mod:`mridip.solvers.prox`.
"""

from __future__ import annotations

import math

import torch

from mridip.errors import ConfigError


def finite_difference(x: torch.Tensor, dim: int, circular: bool = False) -> torch.Tensor:
    """Forward difference ``x[i+1] − x[i]`` along ``dim``, same shape as ``x``.

    ``circular``: the last entry is ``x[0] − x[-1]`` (periodic, BART's convention); otherwise it
    is zero, so a ramp in time is not penalised across the ends of a perfusion series.
    """
    d = torch.roll(x, -1, dims=dim) - x
    if not circular:
        d.narrow(dim, x.shape[dim] - 1, 1).zero_()
    return d


def finite_difference_adjoint(z: torch.Tensor, dim: int, circular: bool = False) -> torch.Tensor:
    """Adjoint of :func:`finite_difference` (a negative backward difference), same shape."""
    if not circular:
        z = z.clone()
        z.narrow(dim, z.shape[dim] - 1, 1).zero_()
    return torch.roll(z, 1, dims=dim) - z


def temporal_fft(x: torch.Tensor) -> torch.Tensor:
    """Unitary FFT along the frame axis (0) of ``(T, …)``; a static background lands in one bin."""
    return torch.fft.fft(x, dim=0, norm="ortho")


def temporal_ifft(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`temporal_fft`, same shape."""
    return torch.fft.ifft(x, dim=0, norm="ortho")


def _wavelet_filters(name: str) -> list[float]:
    """Low-pass analysis filter of an orthonormal wavelet."""
    if name == "haar":
        return [1 / math.sqrt(2), 1 / math.sqrt(2)]
    if name == "db2":  # Daubechies, two vanishing moments (4 taps)
        r3, d = math.sqrt(3), 4 * math.sqrt(2)
        return [(1 + r3) / d, (3 + r3) / d, (3 - r3) / d, (1 - r3) / d]
    raise ConfigError(f"unknown wavelet {name!r}; available: haar, db2")


class Wavelet2D:
    """Orthonormal periodic 2-D discrete wavelet transform over the last two axes, in torch.

    Coefficients are stored in place (the approximation of the coarsest level in the top-left
    corner), so the transform maps ``(…, Ny, Nx)`` to the same shape and is its own adjoint's
    inverse: ``inverse(forward(x)) == x`` and ``‖forward(x)‖ == ‖x‖``. Complex inputs are
    transformed as real and imaginary parts. Each level needs even sizes: ``Ny`` and ``Nx``
    must be multiples of ``2**levels``.

    Parameters
    ----------
    levels
        Decomposition levels.
    name
        ``"db2"`` (Daubechies 4 taps) or ``"haar"``.

    Raises
    ------
    ConfigError
        Fewer than one level, an unknown wavelet, or (on use) sizes that are not multiples of
        ``2**levels``.
    """

    def __init__(self, levels: int = 3, name: str = "db2") -> None:
        if levels < 1:
            raise ConfigError(f"wavelet levels must be ≥ 1, got {levels}")
        self.levels = levels
        self.name = name
        h = _wavelet_filters(name)
        n = len(h)
        g = [(-1) ** k * h[n - 1 - k] for k in range(n)]
        self._bank = torch.tensor([h, g], dtype=torch.float64)[:, None, :]  # (2, 1, n)

    def _filters(self, like: torch.Tensor) -> torch.Tensor:
        return self._bank.to(device=like.device, dtype=like.dtype)

    def _analysis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """One level along ``dim`` of a real tensor: ``[approximation, detail]`` halves."""
        x = x.movedim(dim, -1)
        shape, n = x.shape, x.shape[-1]
        w = self._filters(x)
        flat = x.reshape(-1, 1, n)
        flat = torch.cat([flat, flat[..., : w.shape[-1] - 1]], dim=-1)  # periodic extension
        out = torch.nn.functional.conv1d(flat, w, stride=2)  # (B, 2, n/2)
        return out.reshape(*shape[:-1], n).movedim(-1, dim)

    def _synthesis(self, c: torch.Tensor, dim: int) -> torch.Tensor:
        c = c.movedim(dim, -1)
        shape, n = c.shape, c.shape[-1]
        w = self._filters(c)
        flat = c.reshape(-1, 2, n // 2)
        y = torch.nn.functional.conv_transpose1d(flat, w, stride=2)[:, 0]  # (B, n - 2 + taps)
        x = y[..., :n].clone()
        tail = y.shape[-1] - n
        if tail > 0:
            x[..., :tail] += y[..., n:]
        return x.reshape(shape).movedim(-1, dim)

    def _check(self, x: torch.Tensor) -> None:
        m = 2**self.levels
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ConfigError(
                f"{self.levels} wavelet levels need sizes that are multiples of {m}, "
                f"got {tuple(x.shape[-2:])}"
            )

    def _as_real(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if x.is_complex():
            return torch.view_as_real(x).movedim(-1, 0).contiguous(), True
        return x, False

    def _as_input(self, r: torch.Tensor, was_complex: bool) -> torch.Tensor:
        return torch.view_as_complex(r.movedim(0, -1).contiguous()) if was_complex else r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Wavelet coefficients of ``x`` ``(…, Ny, Nx)``, same shape."""
        self._check(x)
        r, cplx = self._as_real(x)
        r = r.clone()
        ny, nx = r.shape[-2:]
        for lev in range(self.levels):
            a, b = ny >> lev, nx >> lev
            block = r[..., :a, :b]
            block = self._analysis(self._analysis(block, -1), -2)
            r[..., :a, :b] = block
        return self._as_input(r, cplx)

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        """Image ``(…, Ny, Nx)`` from coefficients (also the adjoint of :meth:`forward`)."""
        self._check(c)
        r, cplx = self._as_real(c)
        r = r.clone()
        ny, nx = r.shape[-2:]
        for lev in reversed(range(self.levels)):
            a, b = ny >> lev, nx >> lev
            block = r[..., :a, :b]
            block = self._synthesis(self._synthesis(block, -2), -1)
            r[..., :a, :b] = block
        return self._as_input(r, cplx)
