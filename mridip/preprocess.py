"""From raw readouts to a :class:`~mridip.kspace.DynamicKSpace`: prewhitening, oversampling,
frame sorting or binning, trajectory units and density compensation.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from mridip import sampling
from mridip.errors import RawDataError
from mridip.io.raw import RawScan, read_raw
from mridip.io.raw_writer import TICK_S
from mridip.kspace import DynamicKSpace

NON_CARTESIAN = ("radial", "goldenangle", "spiral", "other")


@dataclass
class LoadedScan:
    """One slice ready to reconstruct.

    Attributes
    ----------
    kspace
        Prewhitened k-space of the slice.
    maps
        Reference coil maps ``(C, Ny, Nx)`` stored in the file (``mridip simulate``), passed
        through the same prewhitening as the data, or None.
    reference
        True image series ``(T, Ny, Nx)`` stored in the file, or None.
    raw
        The raw scan it came from.
    """

    kspace: DynamicKSpace
    maps: torch.Tensor | None
    reference: np.ndarray | None
    raw: RawScan


def load(
    path: str | os.PathLike[str],
    *,
    group: str | None = None,
    slice_index: int = 0,
    spokes_per_frame: int | None = None,
    time_dim: str | None = None,
) -> LoadedScan:
    """Read a raw file and pre-process one slice (see :func:`to_kspace`)."""
    raw = read_raw(path, group=group)
    kspace, whitening = to_kspace(
        raw, slice_index=slice_index, spokes_per_frame=spokes_per_frame, time_dim=time_dim
    )
    maps = None
    if "reference_maps" in raw.extras:
        m = torch.as_tensor(np.asarray(raw.extras["reference_maps"]), dtype=torch.complex64)
        if tuple(m.shape[-2:]) == kspace.matrix and m.shape[0] == kspace.n_coils:
            maps = torch.einsum("cd,dyx->cyx", whitening, m)
    reference = raw.extras.get("reference")
    return LoadedScan(kspace, maps, None if reference is None else np.asarray(reference), raw)


def noise_whitening(noise: np.ndarray, dwell_ratio: float = 1.0) -> np.ndarray:
    """Prewhitening matrix ``W = sqrt(r) · L⁻¹`` from noise samples ``(C, M)``, ``Ψ = L Lᴴ``.

    ``r`` is the acquisition-to-noise dwell-time ratio: noise variance grows with bandwidth,
    so a noise scan sampled at a longer dwell time sees less of it.

    Raises
    ------
    RawDataError
        When there are fewer noise samples than coils or the covariance is not positive definite.
    """
    from scipy.linalg import solve_triangular

    c, m = noise.shape
    if m < 2 * c:
        raise RawDataError(f"{m} noise samples are too few to estimate the covariance of {c} coils")
    noise = noise.astype(np.complex128)
    psi = noise @ noise.conj().T / (m - 1)
    try:
        chol = np.linalg.cholesky(psi)
    except np.linalg.LinAlgError:
        raise RawDataError(
            "noise covariance is not positive definite (dead or duplicated channel?)"
        ) from None
    w = solve_triangular(chol, np.eye(c), lower=True)
    return (w * math.sqrt(dwell_ratio)).astype(np.complex64)


def _frame_labels(raw: RawScan, time_dim: str | None) -> tuple[np.ndarray, str | None]:
    if time_dim is not None:
        if time_dim not in ("phase", "repetition", "contrast", "set"):
            raise RawDataError(
                f"time dimension must be phase, repetition, contrast or set, not {time_dim!r}"
            )
        return raw.head[time_dim], time_dim
    for name in ("phase", "repetition"):
        if len(np.unique(raw.head[name])) > 1:
            return raw.head[name], name
    return np.zeros(raw.data.shape[0], np.int64), None


def _normalise_traj(traj: np.ndarray, raw: RawScan) -> np.ndarray:
    """Stored trajectory → radians per voxel (the format leaves the units open)."""
    kmax = float(np.abs(traj).max())
    nx = raw.header.recon_matrix[0]
    if kmax <= 0.5 * 1.01:  # cycles per voxel
        return traj * (2 * math.pi)
    if kmax <= math.pi * 1.01 and kmax > 1.0:  # already radians
        return traj
    for n in (nx, raw.header.encoded_matrix[0]):  # cycles per FOV, ±N/2 at the edge
        if 0.45 * n <= kmax <= 0.5 * n * 1.01:
            return traj * (2 * math.pi / n)
    raise RawDataError(f"cannot tell the units of the stored trajectory (|k| up to {kmax:.4g})")


def to_kspace(
    raw: RawScan,
    *,
    slice_index: int = 0,
    spokes_per_frame: int | None = None,
    time_dim: str | None = None,
) -> tuple[DynamicKSpace, torch.Tensor]:
    """Pre-process one slice of a raw scan.

    Parameters
    ----------
    raw
        From :func:`mridip.io.read_raw`.
    slice_index
        Which ``idx.slice`` to take.
    spokes_per_frame
        Bin a non-Cartesian stream without frame labels into frames of this many readouts.
    time_dim
        Encoding counter that holds time (``phase`` or ``repetition``); detected when None.

    Returns
    -------
    kspace, whitening
        The slice's k-space and the ``(C, C)`` prewhitening matrix applied (identity without
        noise scans), to apply to coil maps measured elsewhere.

    Raises
    ------
    RawDataError
        No readouts of the slice, an empty frame, unknown trajectory units...
    """
    slices = np.unique(raw.head["slice"])
    if slice_index not in slices:
        raise RawDataError(f"slice {slice_index} not in the file (slices: {slices.tolist()})")
    sel = raw.head["slice"] == slice_index
    data = raw.data[sel]
    head = {k: v[sel] for k, v in raw.head.items()}
    c = data.shape[1]
    whitening = np.eye(c, dtype=np.complex64)
    if raw.noise is not None:
        if raw.noise.shape[0] != c:
            warnings.warn(
                f"noise scans have {raw.noise.shape[0]} channels, data {c}; not prewhitened",
                UserWarning,
                stacklevel=2,
            )
        else:
            ratio = float(head["sample_time_us"][0]) / (raw.noise_sample_time_us or 1.0)
            whitening = noise_whitening(raw.noise, ratio if ratio > 0 else 1.0)
            data = np.einsum("cd,nds->ncs", whitening, data)
    sub = RawScan(raw.header, data, None if raw.traj is None else raw.traj[sel], head)
    labels, dim_name = _frame_labels(sub, time_dim)
    times = head["acquisition_time_stamp"].astype(np.float64) * TICK_S
    geometry = {k: head[k][0].tolist() for k in ("position", "read_dir", "phase_dir", "slice_dir")}
    meta = {
        "path": raw.path,
        "group": raw.group,
        "slice": slice_index,
        "time_dim": dim_name,
        "geometry": geometry,
        "noise_scans": raw.dropped.get("noise", 0),
    }
    ry, rx = raw.header.recon_matrix[1], raw.header.recon_matrix[0]
    fov = (raw.header.recon_fov_mm[1], raw.header.recon_fov_mm[0])
    if raw.header.trajectory.lower() in NON_CARTESIAN or sub.traj is not None:
        ks = _noncartesian(sub, labels, dim_name, times, spokes_per_frame, (ry, rx), fov, meta)
    else:
        ks = _cartesian(sub, labels, times, (ry, rx), fov, meta)
    return ks, torch.from_numpy(whitening)


def _frame_times(times: np.ndarray, frame_of: np.ndarray, n_frames: int) -> torch.Tensor:
    if not np.any(times):
        return torch.arange(n_frames, dtype=torch.float64)
    sums = np.bincount(frame_of, weights=times, minlength=n_frames)
    counts = np.bincount(frame_of, minlength=n_frames)
    ft = sums / np.maximum(counts, 1)
    return torch.from_numpy(ft - ft[0])


def _noncartesian(raw, labels, dim_name, times, spokes_per_frame, matrix, fov, meta):
    if raw.traj is None:
        raise RawDataError(
            "non-Cartesian readouts without a stored trajectory are not supported yet"
        )
    traj = _normalise_traj(raw.traj[..., :2].astype(np.float64), raw)  # (N, S, 2): (kx, ky)
    n, c, s = raw.data.shape
    order = (
        np.lexsort((raw.head["scan_counter"], labels))
        if dim_name
        else np.argsort(raw.head["scan_counter"], kind="stable")
    )
    if dim_name is None:
        if spokes_per_frame is None:
            raise RawDataError("the readouts carry no frame labels; give --spokes-per-frame")
        t = n // spokes_per_frame
        if t == 0:
            raise RawDataError(f"{n} readouts cannot fill one frame of {spokes_per_frame}")
        if t * spokes_per_frame < n:
            warnings.warn(
                f"dropped {n - t * spokes_per_frame} readouts of an incomplete last frame",
                UserWarning,
                stacklevel=3,
            )
        order = order[: t * spokes_per_frame]
        frame_of = np.repeat(np.arange(t), spokes_per_frame)
    else:
        if spokes_per_frame is not None:
            warnings.warn(
                "--spokes-per-frame ignored: readouts carry frame labels", UserWarning, stacklevel=3
            )
        uniq, frame_of = np.unique(labels[order], return_inverse=True)
        counts = np.bincount(frame_of)
        t = len(uniq)
        if len(set(counts.tolist())) > 1:
            per = int(np.bincount(counts).argmax())
            bad = np.flatnonzero(counts != per)
            if len(bad) == 1 and bad[0] == t - 1 and counts[-1] < per:
                warnings.warn(
                    f"dropped incomplete last frame ({counts[-1]} of {per} readouts)",
                    UserWarning,
                    stacklevel=3,
                )
                keep = frame_of != t - 1
                order, frame_of, t = order[keep], frame_of[keep], t - 1
            else:
                raise RawDataError(
                    f"frames have differing readout counts {sorted(set(counts.tolist()))}"
                )
        spokes_per_frame = len(order) // t
    data = (
        raw.data[order].reshape(t, spokes_per_frame, c, s).transpose(0, 2, 1, 3).reshape(t, c, -1)
    )
    tr = traj[order].reshape(t, spokes_per_frame * s, 2)
    tr = np.stack([tr[..., 1], tr[..., 0]], axis=1)  # rows (k_y, k_x)
    tr = np.clip(tr, -math.pi, math.pi)
    traj_t = torch.from_numpy(tr.astype(np.float32))
    kind = raw.header.trajectory.lower()
    if kind in ("radial", "goldenangle"):
        dcf = sampling.radial_ramp_dcf(traj_t, matrix)
    else:
        dcf = sampling.pipe_menon_dcf(traj_t, matrix)
    meta = dict(meta, readout_samples=s, spokes_per_frame=spokes_per_frame, trajectory=kind)
    return DynamicKSpace(
        data=torch.from_numpy(np.ascontiguousarray(data)),
        matrix=matrix,
        traj=traj_t,
        dcf=dcf,
        frame_times=_frame_times(times[order], frame_of, t),
        fov_mm=fov,
        meta=meta,
    )


def _cartesian(raw, labels, times, matrix, fov, meta):
    n, c, s = raw.data.shape
    hdr = raw.header
    enc_x, enc_y = hdr.encoded_matrix[0], hdr.encoded_matrix[1]
    e1 = raw.head["kspace_encode_step_1"]
    lim = hdr.limits.get("kspace_encoding_step_1")
    centre = lim[2] if lim is not None else enc_y // 2
    rows = e1 - centre + enc_y // 2
    if rows.min() < 0 or rows.max() >= enc_y:
        raise RawDataError(f"phase-encoding lines fall outside the encoded matrix of {enc_y} lines")
    cs = raw.head["center_sample"].astype(np.int64)
    cs = np.where(cs == 0, s // 2, cs)
    shift = enc_x // 2 - cs
    uniq, frame_of = np.unique(labels, return_inverse=True)
    t = len(uniq)
    k = np.zeros((t, c, enc_y, enc_x), np.complex64)
    hits = np.zeros((t, enc_y), np.int64)
    cols = np.arange(s)[None, :] + shift[:, None]  # (N, S)
    valid = (cols >= 0) & (cols < enc_x)
    ni, si = np.nonzero(valid)
    # scatter-add every sample to its (frame, line, column); duplicates are averaged below
    np.add.at(k, (frame_of[ni], slice(None), rows[ni], cols[ni, si]), raw.data[ni, :, si])
    np.add.at(hits, (frame_of, rows), 1)
    dup = hits > 1
    if dup.any():
        warnings.warn(
            f"{int((hits[dup] - 1).sum())} repeated lines averaged", UserWarning, stacklevel=3
        )
    k = k / np.maximum(hits, 1)[:, None, :, None]
    mask = np.repeat((hits > 0)[:, :, None], enc_x, axis=2)
    ry, rx = matrix
    kt = torch.from_numpy(k)
    mt = torch.from_numpy(mask)
    if (enc_y, enc_x) != (ry, rx):
        kt, mt = _crop_fov(kt, mt, (ry, rx))
    return DynamicKSpace(
        data=kt,
        matrix=(ry, rx),
        mask=mt,
        frame_times=_frame_times(times, frame_of, t),
        fov_mm=fov,
        meta=dict(meta, readout_samples=s, trajectory="cartesian"),
    )


def _crop_fov(k: torch.Tensor, mask: torch.Tensor, matrix: tuple[int, int]):
    """Remove readout oversampling: inverse FFT, crop the image along x to ``matrix``, FFT back.

    Image values are unchanged: the result reconstructs to the full-readout image, cropped.
    """
    from mridip.operators import fft2c, ifft2c

    ry, rx = matrix
    ey, ex = k.shape[-2:]
    if ey != ry:
        raise RawDataError(
            f"phase-encoding oversampling ({ey} encoded vs {ry} recon lines) is not supported"
        )
    if ex < rx:
        raise RawDataError(f"encoded readout of {ex} samples is shorter than the recon matrix {rx}")
    x0 = (ex - rx) // 2
    img = ifft2c(k)[..., x0 : x0 + rx]
    m2 = mask[..., x0 : x0 + rx]
    return fft2c(img) * m2[:, None], m2
