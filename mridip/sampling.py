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


#: Golden angle between spiral interleaves that each cover all directions: 2π(1 − 1/φ) ≈ 137.5°.
SPIRAL_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def spiral_nyquist_interleaves(base_resolution: int, turns: float = 2.0, density: float = 1.5):
    """Interleaves that sample the edge of k-space at Nyquist for :func:`spiral_interleave`.

    A spiral of ``turns`` turns reaching ``|k| = π`` as ``r ∝ τ^density`` has, at the edge, a
    ring spacing of ``density · π / turns`` per interleave; ``n`` rotated copies bring it down
    to the Nyquist spacing ``2π / N`` when ``n = density · N / (2 · turns)``, rounded up.
    """
    return max(1, math.ceil(density * base_resolution / (2.0 * turns) - 1e-9))


def spiral_interleave(
    base_resolution: int, turns: float = 2.0, density: float = 1.5, oversampling: int = 2
) -> torch.Tensor:
    """One variable-density spiral-out interleave, ``(2, K)`` float64 radians per voxel.

    The radius grows as ``|k| = k_max · τ^density`` while the angle grows linearly over
    ``turns`` turns (``density = 1`` is an Archimedean spiral; larger values sample the centre
    more densely than the edge). Samples are equally spaced along the curve, ``2π / (os·N)``
    apart, as on a radial spoke with readout oversampling ``os``; ``k_max = π (1 − 1/N)``
    keeps every sample inside ``[-π, π)``. Rows ``(k_y, k_x)``; the interleave starts at the
    centre heading along ``+k_x``.
    """
    if base_resolution < 2 or turns <= 0 or density <= 0 or oversampling < 1:
        raise ConfigError(
            f"spiral needs N ≥ 2, turns > 0, density > 0, oversampling ≥ 1; got N="
            f"{base_resolution}, turns={turns}, density={density}, oversampling={oversampling}"
        )
    kmax = math.pi * (1.0 - 1.0 / base_resolution)
    tau = np.linspace(0.0, 1.0, 4096 * max(1, math.ceil(turns)))
    r = kmax * tau**density
    theta = 2 * math.pi * turns * tau
    ky, kx = r * np.sin(theta), r * np.cos(theta)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(ky), np.diff(kx)))])
    step = 2 * math.pi / (oversampling * base_resolution)
    s = np.arange(0.0, arc[-1], step)
    return torch.from_numpy(np.stack([np.interp(s, arc, ky), np.interp(s, arc, kx)]))


def spiral_trajectory(
    base_resolution: int,
    interleaves_per_frame: int,
    n_frames: int,
    turns: float = 2.0,
    density: float = 1.5,
    rotation: str = "golden",
    oversampling: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-density spiral interleaves, evenly spread in each frame and rotated over frames.

    Frame ``t`` holds ``I`` copies of :func:`spiral_interleave` at angles ``2πj/I + t·δ``: with
    ``rotation="golden"`` ``δ`` is :data:`SPIRAL_GOLDEN_ANGLE` (any run of frames covers
    directions evenly), with ``"uniform"`` ``δ = 2π/(I·T)`` (the ``T`` frames together hold
    ``I·T`` evenly spaced interleaves), with ``"none"`` every frame is the same.

    Parameters
    ----------
    base_resolution
        Image matrix ``N``.
    interleaves_per_frame
        ``I``; :func:`spiral_nyquist_interleaves` over ``I`` is the acceleration at the edge.
    n_frames
        ``T``.
    turns, density, oversampling
        Shape of each interleave (:func:`spiral_interleave`).
    rotation
        ``"golden"``, ``"uniform"`` or ``"none"``.

    Returns
    -------
    traj, angles
        ``(T, 2, I·K)`` float32 trajectory, interleave after interleave, rows ``(k_y, k_x)``,
        and ``(T, I)`` rotation angles in radians.

    Raises
    ------
    ConfigError
        Bad counts or an unknown rotation.
    """
    if interleaves_per_frame < 1 or n_frames < 1:
        raise ConfigError(
            f"spiral needs ≥ 1 interleave and frame, got {interleaves_per_frame}, {n_frames}"
        )
    step = {
        "golden": SPIRAL_GOLDEN_ANGLE,
        "uniform": 2 * math.pi / (interleaves_per_frame * n_frames),
        "none": 0.0,
    }
    if rotation not in step:
        raise ConfigError(f"spiral rotation must be golden, uniform or none, not {rotation!r}")
    arm = spiral_interleave(base_resolution, turns, density, oversampling)  # (2, K)
    i = interleaves_per_frame
    base = torch.arange(i, dtype=torch.float64) * (2 * math.pi / i)
    shift = torch.arange(n_frames, dtype=torch.float64) * step[rotation]
    angles = torch.remainder(base[None, :] + shift[:, None], 2 * math.pi)  # (T, I)
    c, s = torch.cos(angles)[..., None], torch.sin(angles)[..., None]  # (T, I, 1)
    ky = s * arm[1] + c * arm[0]  # rotate (k_x, k_y) by the angle
    kx = c * arm[1] - s * arm[0]
    traj = torch.stack([ky.reshape(n_frames, -1), kx.reshape(n_frames, -1)], dim=1)
    return traj.to(torch.float32), angles


def spiral_dcf(traj: torch.Tensor, matrix: tuple[int, int], interleaves: int) -> torch.Tensor:
    """Analytic density compensation of :func:`spiral_trajectory`, ``(T, 1, I·K)`` float32.

    Neighbouring interleaves of a frame are rotated copies, so the area of k-space one sample
    stands for is the annulus sector ``(2π/I) · |k| · Δ|k|``, with ``Δ|k|`` the radial
    advance per sample (central differences along the interleave). The centre sample gets the
    disc of half a step's radius, shared by the interleaves. Scaled by :func:`normalize_dcf`.
    """
    t, _, n = traj.shape
    if n % interleaves:
        raise ConfigError(f"{n} samples per frame do not split into {interleaves} interleaves")
    k = torch.linalg.vector_norm(traj.to(torch.float64), dim=1).reshape(t, interleaves, -1)
    dk = torch.gradient(k, dim=-1)[0].abs()
    w = torch.maximum(k * dk, dk**2 / 8)
    return normalize_dcf(traj, w.reshape(t, 1, n).to(torch.float32), matrix)


def poisson_disc_mask(
    matrix: tuple[int, int],
    n_frames: int,
    acceleration: float,
    calib: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Variable-density Poisson-disc masks over ``(k_y, k_x)``, a new pattern in every frame.

    Points rather than lines (as in GIP's Cartesian experiments): sigpy's Poisson-disc sampler
    (Bridson's algorithm, density falling as ``1/(1 + s|k|)``, corners cropped) with a fully
    sampled ``calib × calib`` centre (default ``max(4, N/8)``), seeded ``seed + t`` in frame
    ``t``. sigpy meets ``acceleration`` to within 10 %.

    Returns
    -------
    torch.Tensor
        ``(T, Ny, Nx)`` bool mask.

    Raises
    ------
    ConfigError
        ``acceleration ≤ 1`` or a centre larger than the matrix.
    """
    from sigpy.mri import poisson

    ny, nx = matrix
    if acceleration <= 1:
        raise ConfigError(f"Poisson-disc acceleration must be > 1, got {acceleration}")
    c = max(4, min(ny, nx) // 8) if calib is None else int(calib)
    if not 0 <= c <= min(ny, nx):
        raise ConfigError(f"calibration centre {c} does not fit the {ny}×{nx} matrix")
    masks = [  # set-up only, not a hot path
        np.abs(poisson((ny, nx), acceleration, calib=(c, c), seed=seed + t)) > 0
        for t in range(n_frames)
    ]
    return torch.from_numpy(np.stack(masks))


def vista_mask(
    matrix: tuple[int, int],
    n_frames: int,
    acceleration: float,
    center_lines: int = 0,
    power: float = 1.0,
) -> torch.Tensor:
    """VISTA-like Cartesian masks: variable-density lines spread evenly over ``k_y`` and time.

    In the spirit of VISTA (Ahmad et al., MRM 2015), not its optimiser: frame ``t`` takes the
    lines at the quantiles ``(j + {t/φ})/n`` (``j = 0..n-1``, ``{·}`` the fractional part,
    ``φ`` the golden ratio) of a density ``(1 − |k|/k_max)^power + 0.1``, so lines never
    bunch within a frame, every frame is shifted against the last and the ``k_y``–``t`` plane
    fills without holes; a collision takes the nearest free line. Deterministic.
    ``center_lines`` are added to every frame (and count towards the acceleration).

    Returns
    -------
    torch.Tensor
        ``(T, Ny, Nx)`` bool mask with ``round(Ny / acceleration)`` lines per frame.
    """
    ny, nx = matrix
    if acceleration < 1:
        raise ConfigError(f"acceleration must be ≥ 1, got {acceleration}")
    n_lines = max(1, int(round(ny / acceleration)))
    center_lines = min(max(0, center_lines), n_lines)
    c0 = ny // 2 - center_lines // 2
    centre = list(range(c0, c0 + center_lines))
    ky = np.arange(ny)
    density = np.clip(1.0 - np.abs(ky - ny // 2) / (ny / 2), 0.0, None) ** power + 0.1
    density[centre] = 0.0
    cdf = np.concatenate([[0.0], np.cumsum(density)])
    cdf /= cdf[-1]
    n_rand = n_lines - center_lines
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    mask = np.zeros((n_frames, ny, nx), dtype=bool)
    for t in range(n_frames):  # set-up only
        taken = set(centre)
        q = (np.arange(n_rand) + (t * golden) % 1.0) / max(n_rand, 1)
        for line in np.searchsorted(cdf, q, side="right") - 1:
            free = [k for k in np.argsort(np.abs(ky - line), kind="stable") if k not in taken]
            taken.add(int(free[0]))
        mask[t, sorted(taken), :] = True
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


#: Half-width (in k-space locations) of the box over which :func:`cartesian_density_weights`
#: averages the sampling density.
DENSITY_HALF_WIDTH = 2


def cartesian_density_weights(mask: torch.Tensor, half: int = DENSITY_HALF_WIDTH) -> torch.Tensor:
    """Density compensation of a Cartesian mask: ``1 / p``, ``(1, Ny, Nx)`` float32.

    ``p`` is the fraction of frames that measure each k-space location, averaged over the
    ``(2·half + 1) × (2·half + 1)`` box around it (a frame measures a line or not; the box turns
    the frames' patterns into a local density), and at least ``1 / T``. On a variable-density
    pattern the fully sampled centre gets about 1 and a peripheral line measured in one frame of
    eight about 8: weighted by them, a residual over held-out lines measures the error evenly
    over k-space (Parseval), as the radial data's density compensation does, rather than being
    dominated by the few centre lines that hold most of the signal's energy."""
    if mask.ndim != 3:
        raise ConfigError(f"a Cartesian mask must be (T, Ny, Nx), got {tuple(mask.shape)}")
    p = mask.to(torch.float32).mean(0)[None, None]  # (1, 1, Ny, Nx)
    k = 2 * half + 1
    p = torch.nn.functional.pad(p, (half, half, half, half), mode="replicate")
    p = torch.nn.functional.avg_pool2d(p, k, stride=1)[0]
    return 1.0 / p.clamp_min(1.0 / mask.shape[0])


#: Units of :func:`holdout_weights`' split.
HOLDOUT_UNITS = ("sample", "readout")


def readouts_divisible(kspace: DynamicKSpace) -> bool:
    """Whether whole readouts can be held out (:func:`holdout_weights` with ``unit="readout"``):
    always for Cartesian data (rows), for non-Cartesian data when ``meta["readout_samples"]``
    is known and divides the sample count per frame (otherwise the split falls back to single
    samples)."""
    if kspace.is_cartesian:
        return True
    ro = int(kspace.meta.get("readout_samples") or 0)
    return ro > 0 and kspace.data.shape[-1] % ro == 0


def holdout_weights(
    kspace: DynamicKSpace,
    fraction: float,
    generator: torch.Generator,
    unit: str = "sample",
    spare_centre: bool = False,
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
    unit
        ``"sample"``: each sample is held out on its own. ``"readout"``: whole readouts (radial
        spokes, Cartesian lines) are, so that a held-out sample has no fitted neighbour on its
        own readout: with 2× readout oversampling a lone held-out sample is nearly predicted by
        the two beside it, whatever the image between the readouts. Non-Cartesian data whose
        sample count per frame is not a multiple of ``meta["readout_samples"]`` fall back to
        samples.
    spare_centre
        Cartesian data: never hold out a location that every frame measures (a
        variable-density pattern's centre lines). Held out in one frame, such a line asks the
        method to predict that frame's brightest data from the other frames, and its residual
        outweighs every other held-out line's (:func:`mridip.lam.choose_lam`). A mask that
        is the same in every frame is split as without it.

    Returns
    -------
    (fit, held) or None
        Weights of the operator's shape (:func:`mridip.operators.for_kspace`'s ``weights``):
        ``(T, Ny, Nx)`` for Cartesian data (held-out samples are measured ones only),
        ``(T, 1, K)`` otherwise (shared by the coils), float32 on the data's device, with
        ``fit + held = 1``.
    """
    if unit not in HOLDOUT_UNITS:
        raise ConfigError(f"holdout unit must be one of {', '.join(HOLDOUT_UNITS)}, not {unit!r}")
    if fraction <= 0:
        return None
    if kspace.is_cartesian:
        assert kspace.mask is not None
        t, ny, nx = kspace.mask.shape
        shape = (t, ny, 1) if unit == "readout" else (t, ny, nx)  # rows are readouts
        u = torch.rand(shape, generator=generator).to(kspace.device).expand(t, ny, nx)
        measured = kspace.mask
        if spare_centre:
            spared = measured & ~kspace.mask.all(dim=0)[None]
            if bool(spared.any()):  # a mask the same in every frame has no centre to spare
                measured = spared
    else:
        t, _, k = kspace.data.shape
        if unit == "readout" and readouts_divisible(kspace):
            ro = int(kspace.meta["readout_samples"])
            u = torch.rand((t, 1, k // ro), generator=generator).repeat_interleave(ro, dim=-1)
        else:
            u = torch.rand((t, 1, k), generator=generator)
        u = u.to(kspace.device)
        measured = torch.ones_like(u, dtype=torch.bool)
    held = (u < fraction) & measured
    if not bool(held.any()):
        # a small scan can draw nothing (24 lines at 15%: about 2% of seeds); the unit with the
        # smallest draw is held out then, so that the held-out residual is defined
        first = u.masked_fill(~measured, math.inf).min()
        held = (u == first) & measured
    held_f = held.to(torch.float32)
    return 1.0 - held_f, held_f
