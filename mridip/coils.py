"""Coil sensitivity estimation from the scan's own time-averaged data, and coil compression.

Every estimator starts from the time average of all frames: the frames of a cine or a
perfusion series sample different parts of k-space, and together they fill the k-space centre
that smooth sensitivities are made of. Cartesian frames are averaged where sampled;
non-Cartesian frames are gridded with their density compensation and averaged.

Conventions of the returned maps ``(C, Ny, Nx)`` complex64, on the device of the data:

- **direction**: at each voxel the maps are the dominant coil-signal direction (the estimators
  differ in how they find it);
- **phase**: maps are defined up to a common phase per voxel; it is chosen so that a fixed
  virtual coil (the dominant direction of the whole image) sees a real, positive sensitivity.
  The reconstructed image then carries the object's phase, smoothly;
- **magnitude**: ``Σ_c |R S_c|² = 1`` inside the object, where ``R`` takes the data's channels
  back to the receiver channels (the inverse of the noise prewhitening and of any coil
  compression, see :func:`receiver_transform`), or ``Σ_c |S_c|² = 1`` when no transform is
  known. Normalising in receiver space keeps the image intensity independent of the receiver
  noise and matches the simulated truth;
- **outside**: zero outside the object mask (:func:`object_mask`) unless ``mask=False``, in
  which case the maps continue smoothly (as the estimator made them) over the whole field of
  view. Zero maps outside keep background noise out of SENSE reconstructions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace
from mridip.operators import CartesianSense, fft2c, for_kspace, ifft2c
from mridip.solvers import conjugate_gradient

#: Estimators :func:`estimate_maps` knows.
MAP_METHODS = ("espirit", "walsh", "inati", "lowres")

#: The estimator used when none is named (the command line's ``--maps auto`` without stored
#: maps, and :func:`mridip.reconstruct` without maps); chosen on the measurements in
#: ``docs/coils.md``.
DEFAULT_METHOD = "espirit"


# -- time-averaged data -----------------------------------------------------------------------
def time_averaged_kspace(kspace: DynamicKSpace, fill_width: int | None = 24) -> torch.Tensor:
    """Centred k-space of the time-averaged data, ``(C, Ny, Nx)`` complex64.

    Cartesian data are averaged over the frames that sampled each location. Where no frame
    sampled a location inside the central ``fill_width × fill_width`` region (sparse
    variable-density masks leave such holes), the k-space is filled by a SENSE fit of the
    time-averaged image (:func:`_fill_by_sense`); measured samples are kept as they are.
    ``fill_width=None`` leaves zeros there. Non-Cartesian data are gridded frame by frame with
    their density compensation (one batched adjoint NUFFT), averaged, and transformed back to
    k-space.
    """
    if kspace.is_cartesian:
        assert kspace.mask is not None
        hits = kspace.mask.sum(0)  # (Ny, Nx)
        k_avg = (kspace.data.sum(0) / hits.clamp(min=1)).to(torch.complex64)
        if fill_width is None:
            return k_avg
        centre = _hann_window(kspace.matrix, fill_width, kspace.device) > 0
        if bool((hits[centre] > 0).all()):
            return k_avg
        return _fill_by_sense(k_avg, hits > 0, fill_width)
    ones = torch.ones(kspace.n_coils, *kspace.matrix, dtype=torch.complex64, device=kspace.device)
    op = for_kspace(kspace, ones, toeplitz=False)
    assert kspace.dcf is not None
    per_coil = op.coil_images(kspace.data * kspace.dcf)  # (T, C, Ny, Nx)
    return fft2c(per_coil.mean(0)).to(torch.complex64)


def _fill_by_sense(
    k_avg: torch.Tensor, sampled: torch.Tensor, width: int, passes: int = 3, cg_iters: int = 5
) -> torch.Tensor:
    """Fill the unsampled locations of time-averaged Cartesian k-space ``(C, Ny, Nx)``.

    Each pass estimates maps (Inati) from the low-resolution images of the current k-space,
    fits one image to the measured samples by CG-SENSE, and replaces the unsampled locations
    by that image's k-space. Holes in the k-space centre otherwise ghost into the
    low-resolution images and the maps (measured in ``docs/coils.md``).
    """
    win = _hann_window(tuple(k_avg.shape[-2:]), width, k_avg.device)  # type: ignore[arg-type]
    k = k_avg
    for _ in range(passes):
        maps = inati_maps(ifft2c(k * win))
        op = CartesianSense(maps, sampled[None])
        x, _ = conjugate_gradient(op.normal, op.adjoint(k_avg[None]), iters=cg_iters)
        k = torch.where(sampled[None], k_avg, fft2c(maps * x[0]))
    return k


def _hann_window(matrix: tuple[int, int], resolution: int, device: torch.device) -> torch.Tensor:
    """Separable Hann window of ``resolution`` samples across, centred on the k-space centre."""
    ny, nx = matrix
    win = torch.zeros(ny, nx, device=device)
    ry, rx = min(resolution, ny), min(resolution, nx)
    wy = torch.hann_window(ry + 2, periodic=False, device=device)[1:-1]
    wx = torch.hann_window(rx + 2, periodic=False, device=device)[1:-1]
    y0, x0 = ny // 2 - ry // 2, nx // 2 - rx // 2
    win[y0 : y0 + ry, x0 : x0 + rx] = wy[:, None] * wx[None, :]
    return win


def time_averaged_coil_images(kspace: DynamicKSpace, resolution: int = 24) -> torch.Tensor:
    """Low-resolution coil images of the time-averaged data, ``(C, Ny, Nx)`` complex64.

    A Hann window of ``resolution`` k-space samples across the centre of
    :func:`time_averaged_kspace` keeps only the smooth part, which is what coil sensitivities
    are made of; it also suppresses the streaks and aliasing of undersampled frames. Works for
    any trajectory.
    """
    if resolution < 2:
        raise ConfigError(f"resolution must be ≥ 2 k-space samples, got {resolution}")
    k_avg = time_averaged_kspace(kspace, fill_width=resolution)
    return ifft2c(k_avg * _hann_window(kspace.matrix, resolution, kspace.device))


# -- object mask --------------------------------------------------------------------------------
def _fill_holes(inside: torch.Tensor) -> torch.Tensor:
    """Add to ``inside`` every region that the border cannot reach (lungs inside a thorax)."""
    outside = ~inside
    ny, nx = inside.shape
    border = torch.zeros_like(inside)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    reached = (border & outside).float()[None, None]
    allowed = outside.float()[None, None]
    # geodesic dilation from the border; a check every few steps saves device syncs
    for _ in range(ny * nx):
        before = reached
        for _ in range(8):
            reached = F.max_pool2d(reached, 3, stride=1, padding=1) * allowed
        if torch.equal(reached, before):
            break
    return ~reached[0, 0].bool()


def object_mask(
    kspace: DynamicKSpace | torch.Tensor,
    threshold: float = 0.05,
    resolution: int = 24,
    fill_holes: bool = True,
) -> torch.Tensor:
    """Mask of the object from the time-averaged low-resolution data, ``(Ny, Nx)`` bool.

    A voxel is inside when the root sum of squares of the low-resolution coil images is at
    least ``threshold`` times its 99th percentile (a percentile, not the maximum, so that a
    bright spot next to a coil does not raise the bar); dark regions enclosed by the object
    (lungs, bowel gas) are filled in, because sensitivities exist there too.

    Parameters
    ----------
    kspace
        The scan, or coil images ``(C, Ny, Nx)`` made already.
    threshold
        Fraction of the 99th percentile of the root sum of squares.
    resolution
        k-space samples across of the low-resolution window (see
        :func:`time_averaged_coil_images`).
    fill_holes
        Fill regions below the threshold that do not touch the edge of the field of view.
    """
    if not 0 <= threshold < 1:
        raise ConfigError(f"mask threshold must be in [0, 1), got {threshold}")
    imgs = (
        time_averaged_coil_images(kspace, resolution)
        if isinstance(kspace, DynamicKSpace)
        else kspace
    )
    rss = _coil_norm(imgs)
    level = torch.quantile(rss.flatten().float(), 0.99)
    inside = rss >= threshold * level
    return _fill_holes(inside) if fill_holes else inside


# -- phase and magnitude conventions --------------------------------------------------------------
def _dominant_direction(imgs: torch.Tensor) -> torch.Tensor:
    """Unit vector ``(C,)``: the principal eigenvector of the image-wide coil covariance."""
    flat = imgs.reshape(imgs.shape[0], -1)
    cov = flat @ flat.conj().T
    _, vecs = torch.linalg.eigh(cov)
    v = vecs[:, -1]
    # eigh leaves the phase open (and CPU and CUDA choose differently): fix it so that the
    # largest entry is real and positive, which makes the maps' phase reproducible
    big = v[v.abs().argmax()]
    return v * (big.conj() / big.abs().clamp(min=1e-30))


def _align_phase(maps: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Rotate each voxel's coil vector so that the virtual coil ``ref`` sees a positive value."""
    proj = torch.einsum("c,cyx->yx", ref.conj(), maps)
    phase = torch.where(proj.abs() > 0, proj / proj.abs().clamp(min=1e-30), torch.ones_like(proj))
    return maps * phase.conj()[None]


def _coil_norm(x: torch.Tensor, dim: int = 0, keepdim: bool = False) -> torch.Tensor:
    """``sqrt(Σ |x|²)`` over ``dim``; complex ``vector_norm`` over a leading axis is ~10× slower."""
    return (x.real.square() + x.imag.square()).sum(dim, keepdim=keepdim).sqrt()


def _unit(maps: torch.Tensor) -> torch.Tensor:
    norm = _coil_norm(maps, keepdim=True)
    return torch.where(norm > 0, maps / norm.clamp(min=1e-30), torch.zeros_like(maps))


def receiver_transform(
    kspace: DynamicKSpace, whitening: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor | None:
    """Matrix ``R`` ``(C_receiver, C)`` that takes maps of the data's channels to receivers.

    The data's channels are ``U^H W`` applied to the receiver channels: ``W`` the noise
    prewhitening (``whitening``, else ``kspace.meta["whitening"]``), ``U`` a coil compression
    (``kspace.meta["coil_compression"]``, set by :func:`compress_coils`). Then
    ``R = W⁻¹ U``. Returns None when neither is known.
    """
    w = whitening if whitening is not None else kspace.meta.get("whitening")
    u = kspace.meta.get("coil_compression")
    if w is None and u is None:
        return None
    dev = kspace.device
    r: torch.Tensor | None = None
    if u is not None:
        r = torch.as_tensor(np.asarray(u) if not isinstance(u, torch.Tensor) else u)
        r = r.to(device=dev, dtype=torch.complex64)
    if w is not None:
        wt = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w)
        wt = wt.to(device=dev, dtype=torch.complex128)
        c0 = wt.shape[0]
        if tuple(wt.shape) != (c0, c0) or (r is None and c0 != kspace.n_coils):
            raise ConfigError(
                f"whitening matrix {tuple(wt.shape)} does not fit {kspace.n_coils} coils"
            )
        rhs = torch.eye(c0, dtype=torch.complex128, device=dev) if r is None else r.to(wt.dtype)
        r = torch.linalg.solve(wt, rhs).to(torch.complex64)
    assert r is not None
    if r.shape[1] != kspace.n_coils:
        raise ConfigError(f"coil transform {tuple(r.shape)} does not fit {kspace.n_coils} coils")
    return r


def _normalise(maps: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
    """Scale each voxel so that ``Σ_c |R S_c|² = 1`` (or ``Σ_c |S_c|² = 1`` without ``R``)."""
    if r is None:
        return _unit(maps)
    norm = _coil_norm(torch.einsum("rc,cyx->ryx", r, maps), keepdim=True)
    return torch.where(norm > 0, maps / norm.clamp(min=1e-30), torch.zeros_like(maps))


# -- estimators (unit-norm directions; conventions applied by estimate_maps) ------------------
def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window × window`` neighbourhood of the last two axes (reflected edges)."""
    lead = x.shape[:-2]
    v = torch.view_as_real(x.reshape(-1, *x.shape[-2:]))  # (B, Ny, Nx, 2)
    v = v.permute(0, 3, 1, 2).reshape(-1, 1, *x.shape[-2:])
    h = window // 2
    v = F.avg_pool2d(F.pad(v, (h, h, h, h), mode="reflect"), window, stride=1)
    v = v.reshape(-1, 2, *x.shape[-2:]).permute(0, 2, 3, 1).contiguous()
    return torch.view_as_complex(v).reshape(*lead, *x.shape[-2:])


def walsh_maps(
    images: torch.Tensor, window: int = 5, iters: int = 30, tol: float = 1e-6
) -> torch.Tensor:
    """Walsh's adaptive estimate: the principal eigenvector of the local coil covariance.

    Walsh, Gmitro, Marcellin, MRM 43:682 (2000). At each voxel the ``C × C`` covariance of the
    coil images is averaged over a ``window × window`` neighbourhood and its dominant
    eigenvector is found by power iteration, batched over all voxels. Power iteration rather
    than ``eigh``: CUDA's batched ``eigh`` failed here on 65,536 matrices of 16 × 16
    (``CUSOLVER_STATUS_INTERNAL_ERROR``), and inside the object, where one coil-signal
    direction dominates, one or two iterations suffice (``tests/test_coils.py`` compares
    with ``eigh``).

    Parameters
    ----------
    images
        Coil images ``(C, Ny, Nx)`` (low resolution, time averaged).
    window
        Odd neighbourhood size in voxels.
    iters
        Largest number of power iterations (the background, where no direction dominates,
        needs the most).
    tol
        Stop when no voxel's direction changes by more than this (``1 − |⟨v, v'⟩|``).

    Returns
    -------
    torch.Tensor
        ``(C, Ny, Nx)`` unit-norm directions, phase aligned to the dominant virtual coil.
        Memory is ``C² · Ny · Nx`` complex values: compress many coils first.
    """
    if window < 1 or window % 2 == 0:
        raise ConfigError(f"Walsh window must be a positive odd number, got {window}")
    if iters < 1:
        raise ConfigError(f"Walsh needs at least one iteration, got {iters}")
    # (Ny, Nx, C, C), contiguous: a batched matmul on the permuted view is ~3× slower on CPUs
    cov = _box(images[:, None] * images.conj()[None], window).permute(2, 3, 0, 1).contiguous()
    v = _unit(_box(images, window)).permute(1, 2, 0)[..., None]  # (Ny, Nx, C, 1)
    for i in range(iters):
        new = cov @ v
        new = new / _coil_norm(new, dim=-2, keepdim=True).clamp(min=1e-30)
        # a device sync every few steps only
        done = i % 5 == 4 and float((1 - (new.conj() * v).sum(-2).abs()).max()) < tol
        v = new
        if done:
            break
    return _align_phase(v[..., 0].permute(2, 0, 1), _dominant_direction(images))


def inati_maps(
    images: torch.Tensor, window: int = 5, iters: int = 10, tol: float = 1e-4
) -> torch.Tensor:
    """Inati's iterative estimate: a power iteration with spatial smoothing, no ``C × C`` matrices.

    Inati, Hansen, Kellman, ISMRM 2013 p. 2672 and 2014 p. 4407. Starting from the coil vector
    of each voxel, it alternates combining the coils with the current maps (``ρ = Σ_c S_c* I_c``)
    and re-estimating the maps as the normalised, locally averaged ``I_c ρ*``; each step is a
    power iteration on the local covariance of Walsh's method, with memory ``C · Ny · Nx``.

    Parameters
    ----------
    images
        Coil images ``(C, Ny, Nx)`` (low resolution, time averaged).
    window
        Odd neighbourhood size in voxels of the local averaging.
    iters
        Largest number of iterations.
    tol
        Stop when the maps change by less than this (relative norm) in one iteration.

    Returns
    -------
    torch.Tensor
        ``(C, Ny, Nx)`` unit-norm directions, phase aligned to the dominant virtual coil.
    """
    if window < 1 or window % 2 == 0:
        raise ConfigError(f"Inati window must be a positive odd number, got {window}")
    if iters < 1:
        raise ConfigError(f"Inati needs at least one iteration, got {iters}")
    ref = _dominant_direction(images)
    maps = _align_phase(_unit(_box(images, window)), ref)
    for _ in range(iters):
        rho = (maps.conj() * images).sum(0)  # coil-combined image
        new = _align_phase(_unit(_box(images * rho.conj()[None], window)), ref)
        change = torch.linalg.vector_norm(new - maps) / torch.linalg.vector_norm(new)
        maps = new
        if float(change) < tol:
            break
    return maps


def espirit_maps(
    calibration: torch.Tensor,
    calib: int = 24,
    kernel: int = 6,
    thresh: float = 0.02,
    crop: float = 0.0,
) -> torch.Tensor:
    """ESPIRiT (one set of maps) through sigpy, from a k-space centre.

    Uecker et al., MRM 71:990 (2014). :func:`estimate_maps` passes the time-averaged k-space
    (:func:`time_averaged_kspace`): for Cartesian data the average of the frames with any
    holes of the centre filled, for non-Cartesian data the k-space of the gridded average.
    sigpy runs on the CPU; the maps come back to the device of ``calibration``.

    Parameters
    ----------
    calibration
        Centred k-space ``(C, Ny, Nx)``; its central ``calib × calib`` samples are used.
    calib
        Width of the calibration region in k-space samples.
    kernel
        ESPIRiT kernel width.
    thresh
        Singular values below ``thresh`` times the largest are dropped (the null space).
    crop
        Voxels whose eigenvalue is below ``crop`` get zero maps (sigpy's own mask; 0 leaves
        masking to :func:`object_mask`).

    Returns
    -------
    torch.Tensor
        ``(C, Ny, Nx)`` unit-norm directions (zero where cropped), phase aligned to the
        dominant virtual coil.

    Raises
    ------
    ConfigError
        When the calibration region is not wider than the kernel.
    """
    from sigpy.mri.app import EspiritCalib

    width = min(calib, *calibration.shape[-2:])
    if width < kernel + 2:
        raise ConfigError(
            f"ESPIRiT needs a calibration region of at least {kernel + 2} samples across "
            f"for kernel width {kernel}, got {width}"
        )
    maps = EspiritCalib(
        calibration.detach().cpu().numpy(),
        calib_width=width,
        kernel_width=kernel,
        thresh=thresh,
        crop=crop,
        show_pbar=False,
    ).run()
    out = torch.as_tensor(np.asarray(maps), dtype=torch.complex64).to(calibration.device)
    # sigpy references the phase to coil 0, which is noisy where coil 0 is weak
    win = _hann_window(tuple(calibration.shape[-2:]), width, calibration.device)  # type: ignore[arg-type]
    return _align_phase(out, _dominant_direction(ifft2c(calibration * win)))


# -- the entry point ------------------------------------------------------------------------------
def estimate_maps(
    kspace: DynamicKSpace,
    method: str = DEFAULT_METHOD,
    *,
    resolution: int = 24,
    threshold: float = 0.05,
    mask: bool = True,
    whitening: torch.Tensor | np.ndarray | None = None,
    **options: Any,
) -> torch.Tensor:
    """Estimate coil maps from the scan's own time-averaged data.

    Parameters
    ----------
    kspace
        The scan (any trajectory), on any device; the maps are computed there (ESPIRiT runs
        on the CPU through sigpy and is moved back).
    method
        ``"espirit"`` (default, :data:`DEFAULT_METHOD`), ``"inati"``, ``"walsh"`` or
        ``"lowres"`` (low-resolution coil images divided by their root sum of squares).
    resolution
        k-space samples across of the low-resolution coil images used by ``walsh``,
        ``inati`` and ``lowres``, and of the object mask; for ``espirit`` the calibration
        width.
    threshold
        Object-mask threshold (see :func:`object_mask`).
    mask
        Zero the maps outside the object mask (default). False keeps the estimator's
        continuation over the whole field of view.
    whitening
        ``(C, C)`` prewhitening matrix that was applied to the data (default:
        ``kspace.meta["whitening"]`` when present); used to normalise in receiver space.
    **options
        Passed to the estimator: ``window`` (walsh, inati), ``iters``/``tol`` (inati),
        ``kernel``/``thresh``/``crop`` (espirit).

    Returns
    -------
    torch.Tensor
        ``(C, Ny, Nx)`` complex64 on the data's device, normalised as the module docstring
        states.

    Raises
    ------
    ConfigError
        Unknown method or option, or data that the method cannot calibrate from.
    """
    if method not in MAP_METHODS:
        raise ConfigError(
            f"unknown coil-map method {method!r}; available: {', '.join(MAP_METHODS)}"
        )
    allowed = {
        "walsh": {"window"},
        "inati": {"window", "iters", "tol"},
        "espirit": {"kernel", "thresh", "crop"},
        "lowres": set(),
    }[method]
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(f"coil-map method {method!r} takes no option(s) {sorted(unknown)}")
    if resolution < 2:
        raise ConfigError(f"resolution must be ≥ 2 k-space samples, got {resolution}")
    r = receiver_transform(kspace, whitening)
    k_avg = time_averaged_kspace(kspace, fill_width=resolution)
    imgs = ifft2c(k_avg * _hann_window(kspace.matrix, resolution, kspace.device))
    if method == "espirit":
        directions = espirit_maps(k_avg, calib=resolution, **options)
    elif method == "walsh":
        directions = walsh_maps(imgs, **options)
    elif method == "inati":
        directions = inati_maps(imgs, **options)
    else:
        directions = _align_phase(_unit(imgs), _dominant_direction(imgs))
    maps = _normalise(directions, r)
    if mask:
        inside = object_mask(imgs, threshold)
        maps = maps * inside[None]
    return maps.to(torch.complex64)


def map_agreement(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-voxel agreement of two sets of maps, insensitive to phase and scale, ``(Ny, Nx)``.

    ``|Σ_c ŝ_c* s_c| / (‖ŝ‖ ‖s‖)``: 1 where the coil vectors are parallel, 0 where either
    vanishes or they are orthogonal.
    """
    dot = (estimate.conj() * reference.to(estimate.device)).sum(0).abs()
    den = _coil_norm(estimate) * _coil_norm(reference.to(estimate.device))
    return torch.where(den > 0, dot / den.clamp(min=1e-30), torch.zeros_like(dot))


# -- coil compression ---------------------------------------------------------------------------
def compress_coils(
    kspace: DynamicKSpace, maps: torch.Tensor | None, n_virtual: int
) -> tuple[DynamicKSpace, torch.Tensor | None]:
    """Compress the coils to ``n_virtual`` virtual coils (principal components over coils).

    The ``C × C`` covariance of all samples of all frames gives the ``n_virtual`` strongest
    coil combinations ``U`` ``(C, n_virtual)`` (orthonormal columns); the data become
    ``Uᴴ y`` and the maps ``Uᴴ S``, so the forward model ``y = F S x`` holds for the virtual
    coils with the same image ``x`` (Buehrer et al., MRM 57:1131, 2007). The compressed maps
    are not renormalised: ``Σ|Uᴴ S|² ≤ Σ|S|²``, the difference being the signal the dropped
    components carried. Prewhitened data have unit noise in every channel, so the components
    are ordered by signal.

    Parameters
    ----------
    kspace
        The scan (any trajectory).
    maps
        Coil maps ``(C, Ny, Nx)`` of the same channels, or None.
    n_virtual
        Virtual coils to keep, ``1 ≤ n_virtual ≤ C``.

    Returns
    -------
    kspace, maps
        A new :class:`DynamicKSpace` with ``n_virtual`` coils and
        ``meta["coil_compression"] = U``, and the compressed maps (None when ``maps`` was
        None).

    Raises
    ------
    ConfigError
        When ``n_virtual`` is out of range or the maps do not match the data.
    """
    c = kspace.n_coils
    if not 1 <= n_virtual <= c:
        raise ConfigError(f"virtual coils must be between 1 and {c}, got {n_virtual}")
    if maps is not None and (maps.ndim != 3 or maps.shape[0] != c):
        raise ConfigError(f"coil maps {tuple(maps.shape)} do not match {c} coils of data")
    flat = kspace.data.transpose(0, 1).reshape(c, -1).to(torch.complex128)
    cov = flat @ flat.conj().T
    _, vecs = torch.linalg.eigh(0.5 * (cov + cov.conj().T))
    u = vecs[:, -n_virtual:].flip(-1).to(torch.complex64)  # strongest first
    data = torch.einsum("cv,tc...->tv...", u.conj(), kspace.data)
    previous = kspace.meta.get("coil_compression")
    total = u if previous is None else torch.as_tensor(previous).to(u) @ u
    meta = dict(kspace.meta, coil_compression=total)
    out = dataclasses.replace(kspace, data=data.contiguous(), meta=meta)
    new_maps = None
    if maps is not None:
        new_maps = torch.einsum("cv,cyx->vyx", u.conj(), maps.to(u.device, u.dtype))
    return out, new_maps


def compression_energy(kspace: DynamicKSpace) -> torch.Tensor:
    """Fraction of the signal energy kept by 1, 2, ..., C virtual coils, ``(C,)`` float.

    Helps choose ``n_virtual``: e.g. the smallest count that keeps 95 %.
    """
    c = kspace.n_coils
    flat = kspace.data.transpose(0, 1).reshape(c, -1).to(torch.complex128)
    cov = flat @ flat.conj().T
    vals = torch.linalg.eigvalsh(0.5 * (cov + cov.conj().T)).flip(-1).clamp(min=0)
    return (torch.cumsum(vals, 0) / vals.sum().clamp(min=1e-300)).to(torch.float32)
