"""Coil sensitivity estimation from the scan's own time-averaged data.

Convention: maps ``(C, Ny, Nx)`` complex64 with ``Σ_c |S_c|² = 1`` inside the object and zero
outside it (voxels whose low-resolution signal is below ``threshold`` of the maximum).
"""

from __future__ import annotations

import torch

from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace
from mridip.operators import for_kspace


def time_averaged_coil_images(kspace: DynamicKSpace, resolution: int = 24) -> torch.Tensor:
    """Low-resolution coil images of the time-averaged data, ``(C, Ny, Nx)`` complex.

    Cartesian frames are averaged where sampled; non-Cartesian frames are gridded with their
    density compensation and averaged. A Hann window of ``resolution`` k-space samples across
    keeps only the smooth part, which is what coil sensitivities are made of.
    """
    from mridip.operators import fft2c, ifft2c

    ny, nx = kspace.matrix
    ones = torch.ones(kspace.n_coils, ny, nx, dtype=torch.complex64, device=kspace.device)
    if kspace.is_cartesian:
        assert kspace.mask is not None
        hits = kspace.mask.sum(0).clamp(min=1)  # (Ny, Nx)
        k_avg = kspace.data.sum(0) / hits
    else:
        op = for_kspace(kspace, ones, toeplitz=False)
        assert kspace.dcf is not None
        per_coil = op.coil_images(kspace.data * kspace.dcf)  # (T, C, Ny, Nx)
        k_avg = fft2c(per_coil.mean(0))
    wy = torch.hann_window(resolution + 2, periodic=False, device=kspace.device)[1:-1]
    win = torch.zeros(ny, nx, device=kspace.device)
    r = min(resolution, ny, nx)
    wy = wy[:r]
    y0, x0 = ny // 2 - r // 2, nx // 2 - r // 2
    win[y0 : y0 + r, x0 : x0 + r] = wy[:, None] * wy[None, :]
    return ifft2c(k_avg * win)


def estimate_maps(
    kspace: DynamicKSpace, method: str = "lowres", resolution: int = 24, threshold: float = 0.05
) -> torch.Tensor:
    """Estimate coil maps from the data.

    Parameters
    ----------
    kspace
        The scan (any trajectory).
    method
        ``"lowres"``: low-resolution coil images of the time-averaged data divided by their
        root sum of squares.
    resolution
        k-space samples across of the low-resolution window.
    threshold
        Voxels whose root-sum-of-squares is below this fraction of its maximum are outside the
        object: maps are zero there.

    Returns
    -------
    torch.Tensor
        ``(C, Ny, Nx)`` complex64 on the data's device.
    """
    if method != "lowres":
        raise ConfigError(f"unknown coil-map method {method!r}; available: lowres")
    imgs = time_averaged_coil_images(kspace, resolution)
    rss = torch.sqrt((imgs.abs() ** 2).sum(0))
    inside = rss > threshold * rss.max()
    maps = torch.where(inside, imgs / rss.clamp(min=1e-12), torch.zeros_like(imgs))
    return maps.to(torch.complex64)
