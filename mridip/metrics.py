"""Image quality against a reference: PSNR, SSIM and NRMSE on magnitudes.

The reconstruction's magnitude is first scaled by the one least-squares factor that best
matches the reference over the whole series (``a = Σ|x||r| / Σ|x|²``), so that methods are not
judged on arbitrary global intensity. PSNR uses the reference's maximum over the whole series
as the peak; SSIM uses Gaussian windows (σ = 1.5 voxels, 11×11) with data range equal to that
peak (Wang et al. 2004). An optional ROI ``(Ny, Nx)`` restricts every measure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mridip.errors import ResultError


def _magnitude(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x))
    return t.abs().to(torch.float64)


def _ssim_maps(x: torch.Tensor, r: torch.Tensor, peak: float) -> torch.Tensor:
    half = 5
    g = torch.exp(-(torch.arange(-half, half + 1, dtype=torch.float64) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    xx, rr = x[:, None], r[:, None]

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(v, (half,) * 4, mode="reflect"), win)

    mx, mr = blur(xx), blur(rr)
    sxx = blur(xx * xx) - mx * mx
    srr = blur(rr * rr) - mr * mr
    sxr = blur(xx * rr) - mx * mr
    num = (2 * mx * mr + c1) * (2 * sxr + c2)
    den = (mx * mx + mr * mr + c1) * (sxx + srr + c2)
    return (num / den)[:, 0]


def evaluate(recon: Any, reference: Any, roi: Any = None) -> dict[str, Any]:
    """PSNR (dB), SSIM and NRMSE of ``recon`` against ``reference``, per frame and mean.

    Parameters
    ----------
    recon, reference
        Image series ``(T, Ny, Nx)`` (complex or real; magnitudes are compared).
    roi
        Optional boolean ``(Ny, Nx)`` region; SSIM is averaged over it, PSNR/NRMSE use it only.

    Returns
    -------
    dict
        ``psnr``, ``ssim``, ``nrmse`` (means), ``*_frames`` (lists) and ``scale`` (the
        least-squares intensity factor applied to ``recon``).

    Raises
    ------
    ResultError
        When the shapes differ or the reference is all zero.
    """
    x, r = _magnitude(recon), _magnitude(reference)
    if x.ndim == 2:
        x, r = x[None], r[None]
    if x.shape != r.shape:
        raise ResultError(f"reconstruction is {tuple(x.shape)} but reference is {tuple(r.shape)}")
    m = (
        torch.ones(x.shape[-2:], dtype=torch.bool)
        if roi is None
        else torch.as_tensor(roi, dtype=torch.bool)
    )
    if m.shape != x.shape[-2:]:
        raise ResultError(f"ROI is {tuple(m.shape)} but images are {tuple(x.shape[-2:])}")
    peak = float(r[:, m].max())
    if peak <= 0:
        raise ResultError("reference is zero everywhere")
    den = float((x[:, m] ** 2).sum())
    scale = float((x[:, m] * r[:, m]).sum()) / den if den > 0 else 1.0
    x = x * scale
    err = (x - r)[:, m]
    mse = (err**2).mean(dim=1)
    psnr = [float(10 * math.log10(peak**2 / v)) if v > 0 else float("inf") for v in mse.tolist()]
    nrmse = (err.norm(dim=1) / r[:, m].norm(dim=1).clamp(min=1e-30)).tolist()
    ssim_map = _ssim_maps(x, r, peak)
    ssim = ssim_map[:, m].mean(dim=1).tolist()
    return {
        "psnr": float(np.mean(psnr)),
        "ssim": float(np.mean(ssim)),
        "nrmse": float(np.mean(nrmse)),
        "psnr_frames": psnr,
        "ssim_frames": ssim,
        "nrmse_frames": nrmse,
        "scale": scale,
    }
