"""Sampling patterns and density compensation.

Conventions (DESIGN §3): trajectories are ``(T, 2, K)`` float32 in radians per voxel in
``[-π, π)``, row 0 = k_y, row 1 = k_x; Cartesian masks are ``(T, Ny, Nx)`` bool with phase
encoding along ``y`` (axis -2) and the readout along ``x`` (axis -1). Angles are in radians.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from mridip.errors import ConfigError

if TYPE_CHECKING:
    from mridip.kspace import DynamicKSpace

#: Golden angle for full spokes (diameters): π/φ ≈ 111.246° (Winkelmann et al. 2007), radians.
GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0


def golden_angle_stream(n_spokes: int, first: int = 0) -> torch.Tensor:
    """Angles of a continuous golden-angle stream of full spokes, ``(n_spokes,)`` radians.

    Spoke ``n`` (counting from ``first``) has angle ``n · π/φ`` modulo ``2π``.
    """
    n = torch.arange(first, first + n_spokes, dtype=torch.float64)
    return torch.remainder(n * GOLDEN_ANGLE, 2 * math.pi)


def bin_stream(
    angles: torch.Tensor, spokes_per_frame: int, drop_incomplete: bool = True
) -> torch.Tensor:
    """Bin a continuous stream of spoke angles into frames of consecutive spokes.

    Parameters
    ----------
    angles
        ``(n_spokes,)`` spoke angles in acquisition order.
    spokes_per_frame
        Spokes that make up one frame.
    drop_incomplete
        Drop a trailing partial frame (otherwise raise).

    Returns
    -------
    torch.Tensor
        ``(T, spokes_per_frame)`` angles with ``T = n_spokes // spokes_per_frame``.
    """
    if spokes_per_frame < 1:
        raise ConfigError(f"spokes per frame must be ≥ 1, got {spokes_per_frame}")
    n = angles.shape[0]
    t = n // spokes_per_frame
    if t == 0:
        raise ConfigError(f"{n} spokes cannot fill one frame of {spokes_per_frame} spokes")
    if t * spokes_per_frame != n and not drop_incomplete:
        raise ConfigError(f"{n} spokes do not divide into frames of {spokes_per_frame}")
    return angles[: t * spokes_per_frame].reshape(t, spokes_per_frame)


def radial_trajectory(angles: torch.Tensor, base_resolution: int, oversampling: int = 2):
    """Radial trajectory of full spokes at the given angles.

    Parameters
    ----------
    angles
        ``(T, S)`` spoke angles in radians, measured from the k_x axis towards k_y.
    base_resolution
        Image matrix along the readout ``N``; a spoke has ``oversampling · N`` samples.
    oversampling
        Readout oversampling factor (2 on scanners): samples are ``π/(os·N/2)`` apart and
        span ``[-π, π)``, which doubles the field of view along the spoke.

    Returns
    -------
    torch.Tensor
        ``(T, 2, S · os · N)`` float32 trajectory, rows ``(k_y, k_x)``, spoke by spoke.
    """
    if angles.ndim != 2:
        raise ConfigError(f"angles must be (T, S), got {tuple(angles.shape)}")
    n_ro = oversampling * base_resolution
    kr = (torch.arange(n_ro, dtype=torch.float64) - n_ro // 2) * (2 * math.pi / n_ro)
    a = angles.to(torch.float64)[..., None]  # (T, S, 1)
    ky = kr * torch.sin(a)
    kx = kr * torch.cos(a)
    t, s = angles.shape
    traj = torch.stack([ky.reshape(t, s * n_ro), kx.reshape(t, s * n_ro)], dim=1)
    return traj.to(torch.float32)


def golden_angle_radial(
    base_resolution: int, spokes_per_frame: int, n_frames: int, oversampling: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Golden-angle radial trajectory: one continuous stream binned into frames.

    Returns
    -------
    traj, angles
        ``(T, 2, S·os·N)`` trajectory and ``(T, S)`` angles in radians.
    """
    stream = golden_angle_stream(spokes_per_frame * n_frames)
    angles = bin_stream(stream, spokes_per_frame)
    return radial_trajectory(angles, base_resolution, oversampling), angles


def uniform_radial(
    base_resolution: int,
    spokes_per_frame: int,
    n_frames: int,
    oversampling: int = 2,
    interleave: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly spaced spokes over ``[0, π)``, rotated from frame to frame when ``interleave``.

    With ``interleave`` frame ``t`` is rotated by ``t · π / (S · T)`` so that the union of all
    frames is uniform too.
    """
    s = spokes_per_frame
    base = torch.arange(s, dtype=torch.float64) * (math.pi / s)
    shift = torch.arange(n_frames, dtype=torch.float64) * (math.pi / (s * n_frames))
    if not interleave:
        shift = torch.zeros_like(shift)
    angles = base[None, :] + shift[:, None]
    return radial_trajectory(angles, base_resolution, oversampling), angles


def variable_density_mask(
    matrix: tuple[int, int],
    n_frames: int,
    acceleration: float,
    center_lines: int | None = None,
    power: float = 2.0,
    seed: int = 0,
) -> torch.Tensor:
    """Variable-density random Cartesian masks, different phase-encoding lines in every frame.

    Parameters
    ----------
    matrix
        ``(Ny, Nx)``; lines are chosen along ``y`` and sampled across all of ``x``.
    n_frames
        Number of frames ``T``.
    acceleration
        ``Ny / lines per frame`` (the fully sampled centre counts).
    center_lines
        Fully sampled lines at the centre of every frame (default ``max(4, Ny // 16)``...,
        at most half the lines of a frame).
    power
        Sampling density falls as ``(1 - |k|/k_max)^power`` outside the centre.
    seed
        Seed of the random choice (reproducible).

    Returns
    -------
    torch.Tensor
        ``(T, Ny, Nx)`` bool mask.
    """
    ny, nx = matrix
    if acceleration < 1:
        raise ConfigError(f"acceleration must be ≥ 1, got {acceleration}")
    n_lines = max(1, int(round(ny / acceleration)))
    if center_lines is None:
        center_lines = max(2, min(ny // 16 + 2, n_lines // 2))
    center_lines = min(center_lines, n_lines)
    c0 = ny // 2 - center_lines // 2
    centre = np.arange(c0, c0 + center_lines)
    rest = np.setdiff1d(np.arange(ny), centre)
    k = np.abs(rest - ny // 2) / (ny / 2)
    p = np.clip(1.0 - k, 1e-3, None) ** power
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    mask = np.zeros((n_frames, ny, nx), dtype=bool)
    n_rand = n_lines - center_lines
    for t in range(n_frames):  # set-up only, not a hot path
        picked = rng.choice(rest, size=n_rand, replace=False, p=p) if n_rand > 0 else rest[:0]
        mask[t, centre, :] = True
        mask[t, picked, :] = True
    return torch.from_numpy(mask)


def radial_ramp_dcf(traj: torch.Tensor, matrix: tuple[int, int]) -> torch.Tensor:
    """Analytic ramp (|k|) density compensation for radial spokes through the centre.

    The centre sample, where ``|k| = 0``, gets a quarter of the first ring's weight (the area
    it represents). The result is scaled by :func:`normalize_dcf`.

    Returns
    -------
    torch.Tensor
        ``(T, 1, K)`` float32.
    """
    k = torch.linalg.vector_norm(traj.to(torch.float64), dim=1, keepdim=True)
    nonzero = k[k > 1e-9]
    dk = float(nonzero.min()) if nonzero.numel() else 1.0
    w = torch.clamp(k, min=dk / 4)
    return normalize_dcf(traj, w.to(torch.float32), matrix)


def pipe_menon_dcf(traj: torch.Tensor, matrix: tuple[int, int], iterations: int = 10):
    """Iterative density compensation (Pipe & Menon 1999) through torchkbnufft, any trajectory.

    Returns
    -------
    torch.Tensor
        ``(T, 1, K)`` float32, scaled by :func:`normalize_dcf`.
    """
    import torchkbnufft as tkbn

    w = tkbn.calc_density_compensation_function(
        ktraj=traj, im_size=tuple(matrix), num_iterations=iterations
    ).real
    return normalize_dcf(traj, w.reshape(traj.shape[0], 1, -1).to(torch.float32), matrix)


def normalize_dcf(traj: torch.Tensor, dcf: torch.Tensor, matrix: tuple[int, int]):
    """Scale each frame's density compensation so that smooth images keep their intensity.

    The gain of ``Aᴴ W A`` (orthonormal NUFFT) on a Gaussian blob of width ``σ = 2`` voxels is
    ``4πσ²/(Ny·Nx) · Σ_k w_k exp(-σ²|k|²)``; each frame's weights are divided by it, so the
    density-compensated adjoint of fully sampled data is unbiased at low frequencies (a fully
    sampled Cartesian grid with unit weights has gain 1).
    """
    ny, nx = matrix
    sigma = 2.0
    k2 = (traj.to(torch.float64) ** 2).sum(dim=1, keepdim=True)  # (T, 1, K)
    gain = (
        4 * math.pi * sigma**2 / (ny * nx) * (dcf.to(torch.float64) * torch.exp(-(sigma**2) * k2))
    )
    gain = gain.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return (dcf.to(torch.float64) / gain).to(torch.float32)


def holdout_weights(
    kspace: DynamicKSpace, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Split the measured samples at random into fitted and held-out ones, as 0/1 weights.

    The DIP's stopping rule (:class:`mridip.recon.Reconstructor`) and the choice of
    regularisation weights by cross-validation (:mod:`mridip.lam`) both fit to one part of the
    samples and judge the fit by how well it predicts the other.

    Parameters
    ----------
    kspace
        The data; its mask (Cartesian) or its sample count (non-Cartesian) is split.
    fraction
        Expected fraction held out, in ``[0, 1)``; 0 returns None (nothing held out).
    generator
        Source of the random choice (on the CPU, so a seed gives the same split on any device).

    Returns
    -------
    (fit, held) or None
        Weights of the operator's shape (:func:`mridip.operators.for_kspace`'s ``weights``):
        ``(T, Ny, Nx)`` for Cartesian data (held-out samples are measured ones only),
        ``(T, 1, K)`` otherwise (shared by the coils), float32 on the data's device, with
        ``fit + held = 1``.
    """
    if fraction <= 0:
        return None
    if kspace.is_cartesian:
        assert kspace.mask is not None
        u = torch.rand(kspace.mask.shape, generator=generator).to(kspace.device)
        held = (u < fraction) & kspace.mask
    else:
        t, _, k = kspace.data.shape
        u = torch.rand((t, 1, k), generator=generator).to(kspace.device)
        held = u < fraction
    held_f = held.to(torch.float32)
    return 1.0 - held_f, held_f
