"""From raw readouts to a :class:`~mridip.kspace.DynamicKSpace`.

The steps, in order (``docs/loader.md`` lists every warning and refusal):

1. pick the slice (``idx.slice``) and the first contrast/set when those vary;
2. flip reversed readouts (``ACQ_IS_REVERSE``);
3. drop duplicate writes (the same readout, bit for bit, stored twice);
4. prewhiten with the noise scans (:func:`noise_whitening`), and conjugate the data of
   vendors whose orientation assumes a forward FFT (:func:`vendor_conjugates`: Siemens);
5. sort readouts into frames by ``idx.phase`` or ``idx.repetition`` (or both), or bin a
   non-Cartesian stream by ``spokes_per_frame`` (without either: one static frame); drop an
   incomplete trailing frame;
6. Cartesian (by the header's trajectory type, whether or not a trajectory is stored): place
   samples by ``center_sample`` and lines by the ``k1`` centre (checked against the signal
   peak), average repeated lines and ``idx.average``, remove readout oversampling
   (:func:`remove_readout_oversampling`);
7. non-Cartesian: normalise the stored trajectory to radians per voxel (or compute golden-
   angle spokes when none is stored) and compute the density compensation.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mridip import sampling
from mridip.errors import KSpaceError, RawDataError
from mridip.geometry import geometry_from_readouts
from mridip.io.raw import RawHeader, RawScan, has_flag, read_raw, warn
from mridip.io.raw_writer import TICK_S
from mridip.kspace import DynamicKSpace

NON_CARTESIAN = ("radial", "goldenangle", "spiral", "other")
TIME_DIMS = ("phase", "repetition", "contrast", "set")


class NeedsBinning(RawDataError):
    """A stream needs ``spokes_per_frame`` (kept for callers that catch it; a stream without
    frame labels is now loaded as one static frame, with a warning)."""


#: ``systemVendor`` values (lower case) whose k-space is conjugated by default. Siemens'
#: image orientation (the ``read_dir``/``phase_dir`` a converter copies) assumes a forward FFT
#: from k-space to image; mridip, like mrpro and Gadgetron's tools, uses the inverse FFT, so
#: the data are conjugated (mrpro does the same since its PR #833, for the same reason).
CONJUGATED_VENDORS = ("siemens",)


def vendor_conjugates(vendor: str | None) -> bool:
    """Whether the k-space of a file from this ``systemVendor`` is conjugated by default.

    Parameters
    ----------
    vendor
        ``acquisitionSystemInformation/systemVendor`` as stored (any case), or None.

    Returns
    -------
    bool
        True for the vendors of :data:`CONJUGATED_VENDORS` (Siemens); the ``conjugate``
        option of :func:`load` overrides it either way.
    """
    return vendor is not None and vendor.strip().lower() in CONJUGATED_VENDORS


@dataclass
class LoadedScan:
    """One slice ready to reconstruct.

    Attributes
    ----------
    kspace
        Prewhitened k-space of the slice.
    maps
        Reference coil maps ``(C, Ny, Nx)`` stored in the file (``mridip simulate``, or an
        importer's maps), passed through the same prewhitening as the data, or None.
    reference
        True image series ``(T, Ny, Nx)`` stored in the file, or None.
    raw
        The raw scan it came from (None for the ``.mat`` importers).
    """

    kspace: DynamicKSpace
    maps: torch.Tensor | None
    reference: np.ndarray | None
    raw: RawScan | None


def load(
    path: str | os.PathLike[str],
    *,
    group: str | None = None,
    slice_index: int = 0,
    spokes_per_frame: int | None = None,
    time_dim: str | None = None,
    conjugate: bool | None = None,
) -> LoadedScan:
    """Read an ISMRMRD raw file and pre-process one slice (see :func:`to_kspace`).

    Raises
    ------
    RawDataError
        For every file that cannot be read or reconstructed, with the reason.
    """
    raw = read_raw(path, group=group)
    return prepare(
        raw,
        slice_index=slice_index,
        spokes_per_frame=spokes_per_frame,
        time_dim=time_dim,
        conjugate=conjugate,
    )


def prepare(
    raw: RawScan,
    *,
    slice_index: int = 0,
    spokes_per_frame: int | None = None,
    time_dim: str | None = None,
    conjugate: bool | None = None,
) -> LoadedScan:
    """Pre-process one slice of a scan already read (:func:`to_kspace`), with the file's
    reference series and reference maps (whitened like the data) when it stores them."""
    kspace, whitening = to_kspace(
        raw,
        slice_index=slice_index,
        spokes_per_frame=spokes_per_frame,
        time_dim=time_dim,
        conjugate=conjugate,
    )
    maps = None
    ref_maps = raw.extras.get("reference_maps")
    if ref_maps is not None and np.ndim(ref_maps) == 3:
        m = torch.as_tensor(np.asarray(ref_maps), dtype=torch.complex64)
        if tuple(m.shape[-2:]) == kspace.matrix and m.shape[0] == kspace.n_coils:
            maps = torch.einsum("cd,dyx->cyx", whitening, m)
    reference = raw.extras.get("reference")
    return LoadedScan(kspace, maps, None if reference is None else np.asarray(reference), raw)


# -- noise -----------------------------------------------------------------------------------------
def noise_whitening(
    noise: np.ndarray, dwell_ratio: float = 1.0, bandwidth: float = 1.0
) -> np.ndarray:
    """Prewhitening matrix ``W = √(r·b) · L⁻¹`` from noise samples, where ``Ψ = L Lᴴ``.

    ``Ψ`` is the unbiased sample covariance of the noise, ``L`` its Cholesky factor and
    ``L⁻¹`` is obtained with ``solve_triangular``. ``r`` is the acquisition-to-noise dwell-
    time ratio (noise power grows with the receiver bandwidth, so noise sampled at a longer
    dwell time holds less of it) and ``b`` the relative noise bandwidth of the receiver
    filter. Applied to the noise itself with ``r = b = 1``, ``W`` gives an identity
    covariance; the loader passes the file's ``r`` and ``b``, the convention of mrpro's
    ``prewhiten_kspace`` (Gadgetron and ismrmrd-python-tools scale by a further ``√2``).

    Parameters
    ----------
    noise
        ``(C, M)`` complex noise samples.
    dwell_ratio, bandwidth
        ``r`` and ``b`` above.

    Returns
    -------
    np.ndarray
        ``(C, C)`` complex64, lower triangular; whitened data is ``W @ data``.

    Raises
    ------
    RawDataError
        When there are fewer than ``2·C`` noise samples, or the covariance is not positive
        definite (a dead or duplicated channel).
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
    if not np.all(np.isfinite(chol)) or np.min(np.abs(np.diag(chol))) <= 1e-12 * np.max(
        np.abs(np.diag(chol))
    ):
        raise RawDataError("noise covariance is singular (dead or duplicated channel?)")
    w = solve_triangular(chol, np.eye(c), lower=True)
    return (w * math.sqrt(dwell_ratio * bandwidth)).astype(np.complex64)


def _whitening_for(raw: RawScan, n_coils: int, dwell_us: float, notes: list[str]) -> np.ndarray:
    eye = np.eye(n_coils, dtype=np.complex64)
    if raw.noise is None:
        return eye
    if raw.noise.shape[0] != n_coils:
        warn(
            notes,
            f"noise scans have {raw.noise.shape[0]} channels, data {n_coils}; data not prewhitened",
            stacklevel=4,
        )
        return eye
    noise_dwell = raw.noise_sample_time_us or 0.0
    ratio = dwell_us / noise_dwell if dwell_us > 0 and noise_dwell > 0 else 1.0
    try:
        return noise_whitening(raw.noise, ratio, raw.header.noise_bandwidth)
    except RawDataError as exc:
        warn(notes, f"noise scans unusable ({exc}); data not prewhitened", stacklevel=4)
        return eye


# -- readout-level steps ---------------------------------------------------------------------------
def reverse_readouts(data: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """Flip, in place, the samples (last axis) of the readouts flagged ``ACQ_IS_REVERSE``.

    ``data`` is ``(N, ..., S)``, ``reverse`` a boolean ``(N,)``. ``center_sample`` keeps its
    value: like Gadgetron, mrpro and ismrmrd-python-tools, the loader reads it as the centre's
    index in the flipped (k-ordered) readout.
    """
    if reverse.any():
        data[reverse] = data[reverse][..., ::-1]
    return data


def _drop_duplicate_writes(
    data: np.ndarray, head: dict[str, np.ndarray], notes: list[str]
) -> np.ndarray:
    """Boolean ``(N,)`` of the readouts to keep: one of each set written twice bit for bit.

    A fingerprint of 32 samples per readout finds the candidates; only those are compared in
    full, so the cost is one pass over the data, not a sort of it.
    """
    n = data.shape[0]
    flat = data.reshape(n, -1)
    picks = np.unique(np.linspace(0, flat.shape[1] - 1, 32).astype(np.int64))
    fp = np.ascontiguousarray(flat[:, picks])
    fp_void = fp.view(np.dtype((np.void, fp.shape[1] * fp.itemsize))).ravel()
    _, fp_id, fp_count = np.unique(fp_void, return_inverse=True, return_counts=True)
    cand = np.flatnonzero(fp_count[fp_id.ravel()] > 1)
    keep = np.ones(n, bool)
    if not len(cand):
        return keep
    rows = np.ascontiguousarray(flat[cand])
    as_void = rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).ravel()
    _, data_id = np.unique(as_void, return_inverse=True)
    fields = ("kspace_encode_step_1", "phase", "repetition", "average", "set")
    keys = np.stack([data_id.ravel()] + [head[k][cand] for k in fields], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    keep[cand] = False
    keep[cand[first]] = True
    if not keep.all():
        warn(
            notes,
            f"dropped {int((~keep).sum())} duplicate readouts (the same readout written twice)",
            stacklevel=4,
        )
    return keep


def _frame_labels(
    head: dict[str, np.ndarray], time_dim: str | None, notes: list[str]
) -> tuple[np.ndarray, str | None]:
    def varies(name: str) -> bool:
        return len(np.unique(head[name])) > 1

    n = len(head["phase"])
    if time_dim is not None:
        if time_dim not in TIME_DIMS:
            raise RawDataError(
                f"time dimension must be one of {', '.join(TIME_DIMS)}, not {time_dim!r}"
            )
        for other in ("phase", "repetition"):
            if other != time_dim and varies(other):
                warn(
                    notes,
                    f"{other} varies too but time is in {time_dim}: readouts of "
                    f"different {other} are averaged",
                    stacklevel=4,
                )
        return head[time_dim], time_dim
    varying = [k for k in ("phase", "repetition") if varies(k)]
    if not varying:
        return np.zeros(n, np.int64), None
    if len(varying) == 1:
        return head[varying[0]], varying[0]
    n_phase = int(head["phase"].max()) + 1
    warn(
        notes,
        "both phase and repetition vary: every (repetition, phase) pair is a frame "
        "(--time-dim picks one)",
        stacklevel=4,
    )
    return head["repetition"] * n_phase + head["phase"], "repetition+phase"


def _frame_times(
    head: dict[str, np.ndarray], frame_of: np.ndarray, t: int, meta: dict[str, Any]
) -> torch.Tensor:
    """Mean time stamp of each frame's readouts, relative to the first frame.

    Acquisition time stamps when they increase from frame to frame (real-time series),
    otherwise the physiology (trigger) time stamps (gated cine, whose phases interleave in
    acquisition time), otherwise the frame index.
    """
    counts = np.maximum(np.bincount(frame_of, minlength=t), 1)
    for name in ("acquisition_time_stamp", "physiology_time_stamp"):
        s = np.asarray(head[name], np.float64)
        s = s if s.ndim == 1 else s[:, 0]
        if not np.any(s):
            continue
        ft = np.bincount(frame_of, weights=s, minlength=t) / counts * TICK_S
        ft = ft - ft[0]
        if t == 1 or np.all(np.diff(ft) >= 0):
            meta["frame_times_from"] = name
            return torch.from_numpy(ft)
    meta["frame_times_from"] = "frame index: no increasing time stamps"
    return torch.arange(t, dtype=torch.float64)


def _incomplete_last(counts: np.ndarray, fraction: float) -> bool:
    """The last frame holds fewer readouts than every other frame and under ``fraction`` of
    their median: a scan stopped early (a Cartesian frame missing a few lines is kept)."""
    if len(counts) < 2:
        return False
    rest = counts[:-1]
    return bool(counts[-1] < rest.min() and counts[-1] < fraction * np.median(rest))


# -- the whole slice ----------------------------------------------------------------------------
def to_kspace(
    raw: RawScan,
    *,
    slice_index: int = 0,
    spokes_per_frame: int | None = None,
    time_dim: str | None = None,
    conjugate: bool | None = None,
) -> tuple[DynamicKSpace, torch.Tensor]:
    """Pre-process one slice of a raw scan.

    Parameters
    ----------
    raw
        From :func:`mridip.io.read_raw`.
    slice_index
        Which ``idx.slice`` to take.
    spokes_per_frame
        Bin the non-Cartesian readouts, in acquisition order, into frames of this many
        (overrides labels when given; a stream without labels is otherwise one static frame).
    time_dim
        Encoding counter that holds time (``phase``, ``repetition``, ``contrast``, ``set``);
        detected when None (``phase`` or ``repetition``, whichever varies).
    conjugate
        Complex-conjugate the k-space (which mirrors the image through its centre, in both
        axes). None follows the vendor rule of :func:`vendor_conjugates`: conjugate data whose
        ``systemVendor`` is Siemens.

    Returns
    -------
    kspace, whitening
        The slice's k-space and the ``(C, C)`` prewhitening matrix applied (identity without
        noise scans), to apply to coil maps measured elsewhere.

    Raises
    ------
    RawDataError
        No readouts of the slice, 3-D encoding, lines outside the encoded matrix, frames of
        differing sizes, unknown trajectory units, an empty frame ...
    """
    notes = list(raw.notes)
    dropped = dict(raw.dropped)
    head0 = raw.head
    slices = np.unique(head0["slice"])
    if slice_index not in slices:
        raise RawDataError(f"slice {slice_index} not in the file (slices: {slices.tolist()})")
    sel = head0["slice"] == slice_index
    for name in ("contrast", "set"):
        if name == time_dim:
            continue
        values = np.unique(head0[name][sel])
        if len(values) > 1:
            other = sel & (head0[name] != values[0])
            dropped[f"other-{name}"] = int(other.sum())
            warn(
                notes,
                f"the slice holds {len(values)} values of idx.{name}; using {values[0]} "
                f"and ignoring {int(other.sum())} readouts (--time-dim {name} makes it time)",
                stacklevel=3,
            )
            sel &= ~other
    head = {k: v[sel] for k, v in head0.items()}
    if len(np.unique(head["kspace_encode_step_2"])) > 1:
        raise RawDataError(
            "3-D encoded readouts (kspace_encode_step_2 varies); mridip reconstructs 2-D slices"
        )
    whole = bool(sel.all())  # one slice: no copy of the data (reversal copies below)
    data = raw.data if whole else raw.data[sel]
    traj = None if raw.traj is None else (raw.traj if whole else raw.traj[sel])
    rev = has_flag(head["flags"], "reverse")
    if rev.any():
        if whole:
            data = data.copy()
            traj = None if traj is None else traj.copy()
        reverse_readouts(data, rev)
        if traj is not None:
            traj[rev] = traj[rev][:, ::-1]
    keep = _drop_duplicate_writes(data, head, notes)
    if not keep.all():
        dropped["duplicate"] = int((~keep).sum())
        data, head = data[keep], {k: v[keep] for k, v in head.items()}
        traj = None if traj is None else traj[keep]
    c = data.shape[1]
    dwell = float(np.median(head["sample_time_us"]))
    whitening = _whitening_for(raw, c, dwell, notes)
    if raw.noise is not None and not np.allclose(whitening, np.eye(c)):
        data = np.matmul(whitening, data)
    conj_from = "--conjugate" if conjugate is not None else "vendor rule"
    if conjugate is None:
        conjugate = vendor_conjugates(raw.header.vendor)
    if conjugate:
        data = np.conjugate(data)  # a new array: raw.data stays as read
        # conj(W·y) = conj(W)·conj(y): the whitening the signal went through is conj(W)
        whitening = whitening.conj()
    labels, dim_name = _frame_labels(head, time_dim, notes)
    pos = head["position"]
    geometry = {
        "position": np.asarray(pos, np.float64).mean(axis=0).tolist(),
        **{
            k: np.asarray(head[k][0], np.float64).tolist()
            for k in ("read_dir", "phase_dir", "slice_dir")
        },
    }
    meta: dict[str, Any] = {
        "path": raw.path,
        "group": raw.group,
        "slice": slice_index,
        "n_slices": len(slices),
        "time_dim": dim_name,
        "geometry": geometry,
        "noise_scans": raw.dropped.get("noise", 0),
        "prewhitened": bool(raw.noise is not None and not np.allclose(whitening, np.eye(c))),
        "whitening": whitening,
        "header_acceleration": raw.header.acceleration,
        "conjugated": f"{bool(conjugate)} ({conj_from})",
    }
    kind = raw.header.trajectory
    try:
        # The header's trajectory type decides: a Cartesian scan that also stores its
        # trajectory (mrpro writes k in ±N/2 per axis, the readout oversampled) is placed by
        # its counters like any other, never gridded as if it were non-Cartesian.
        if kind == "cartesian" and traj is not None:
            meta["stored_trajectory"] = "not used: lines placed by their encoding counters"
        if kind in NON_CARTESIAN or (traj is not None and kind != "cartesian"):
            ks = _noncartesian(
                data,
                head,
                traj,
                labels,
                dim_name,
                spokes_per_frame,
                raw.header,
                notes,
                dropped,
                meta,
            )
        else:
            ks = _cartesian(data, head, labels, raw.header, notes, dropped, meta)
    except KSpaceError as exc:  # the data model's checks speak for the file here
        raise RawDataError(f"{raw.path}: {exc}") from None
    fov = ks.fov_mm or (raw.header.recon_fov_mm[1], raw.header.recon_fov_mm[0])
    ks = ks.with_geometry(
        geometry_from_readouts(
            head,
            matrix=ks.matrix,
            fov_mm=fov,
            slice_thickness_mm=raw.header.recon_fov_mm[2] or raw.header.encoded_fov_mm[2],
            xml=raw.xml,
            frame_times_from=ks.meta.get("frame_times_from"),
            time_dim=ks.meta.get("time_dim"),
        )
    )
    return ks, torch.from_numpy(whitening)


# -- Cartesian ---------------------------------------------------------------------------------
def _centre_line(
    e1: np.ndarray, energy: np.ndarray, header: RawHeader, notes: list[str]
) -> tuple[int, str]:
    """The ``k1`` index of the k-space centre: the header's, unless the signal says otherwise.

    The signal overrides the header only when its peak line is more than ``max(2, 5 %)`` of
    the lines away and carries at least :data:`_PEAK_DOMINANCE` times the energy of the
    header's line (k-space of an image peaks sharply at its centre; noise-like data does not).
    """
    enc_y = header.encoded_matrix[1]
    counts = np.bincount(e1)
    mean_energy = np.bincount(e1, weights=energy) / np.maximum(counts, 1)
    peak = int(np.argmax(mean_energy))
    tol = max(2, round(0.05 * enc_y))
    lim = header.limits.get("kspace_encoding_step_1")
    stated = None if lim is None or lim.center is None else int(lim.center)
    guess = enc_y // 2 if stated is None else stated
    at_guess = mean_energy[guess] if guess < len(mean_energy) else 0.0
    wrong = abs(peak - guess) > tol and mean_energy[peak] >= _PEAK_DOMINANCE * at_guess
    if stated is None:
        if wrong:
            warn(
                notes,
                f"the header gives no centre line for phase encoding and the signal "
                f"peaks at line {peak}, not {guess}; using {peak}",
                stacklevel=5,
            )
            return peak, "signal peak"
        warn(
            notes,
            f"the header gives no centre line for phase encoding; using line {guess} "
            f"(half the encoded matrix; the signal peaks at line {peak})",
            stacklevel=5,
        )
        return guess, "encoded matrix / 2"
    if wrong:
        warn(
            notes,
            f"the header puts the k-space centre at line {stated} but the signal "
            f"peaks at line {peak}; using {peak}",
            stacklevel=5,
        )
        return peak, "signal peak"
    return stated, "header"


#: How much more energy the signal's peak line must carry than the header's centre line for
#: the loader to call the header wrong.
_PEAK_DOMINANCE = 4.0


def _cartesian(
    data: np.ndarray,
    head: dict[str, np.ndarray],
    labels: np.ndarray,
    header: RawHeader,
    notes: list[str],
    dropped: dict[str, int],
    meta: dict[str, Any],
) -> DynamicKSpace:
    n, c, s = data.shape
    enc_x, enc_y = header.encoded_matrix[0], header.encoded_matrix[1]
    nro = enc_x
    if s > enc_x:
        warn(
            notes,
            f"readouts hold {s} samples but the encoded matrix only {enc_x}; the "
            "readout grid follows the data",
            stacklevel=4,
        )
        nro = s
    cs = head["center_sample"].astype(np.int64)
    if not np.any(cs):  # unset: a symmetric echo
        cs = np.full(n, s // 2, np.int64)
    e1 = head["kspace_encode_step_1"]
    v = data.reshape(n, -1).view(np.float32) if data.flags.c_contiguous else None
    energy = np.einsum("ij,ij->i", v, v) if v is not None else (np.abs(data) ** 2).sum((1, 2))
    centre, centre_from = _centre_line(e1, energy, header, notes)
    ny = enc_y
    rows = e1 - centre + ny // 2
    if rows.min() < 0 or rows.max() >= ny:
        raise RawDataError(
            f"phase-encoding lines {int(e1.min())}…{int(e1.max())} about centre line {centre} "
            f"fall outside the encoded matrix of {ny} lines"
        )
    # frames, and the incomplete trailing one
    uniq, frame_of = np.unique(labels, return_inverse=True)
    t = len(uniq)
    counts = np.bincount(frame_of, minlength=t)
    if _incomplete_last(counts, 0.5):
        warn(
            notes,
            f"dropped the last frame: {counts[-1]} readouts against "
            f"{int(np.median(counts[:-1]))} in the others (scan stopped early?)",
            stacklevel=4,
        )
        dropped["incomplete-frame"] = int(counts[-1])
        keep = frame_of != t - 1
        data, rows, cs, frame_of, t = data[keep], rows[keep], cs[keep], frame_of[keep], t - 1
        head = {k: v[keep] for k, v in head.items()}
        n = data.shape[0]
    # samples onto the readout grid by center_sample (asymmetric echo: the rest stays empty)
    start = nro // 2 - cs  # grid column of each readout's first sample
    key = frame_of * ny + rows
    avg_key = np.stack([key, head["average"]], axis=1)
    repeats = n - len(np.unique(avg_key, axis=0))
    if repeats:
        warn(
            notes, f"{repeats} repeated lines (same frame, line and average) averaged", stacklevel=4
        )
    k = np.zeros((t, c, ny, nro), np.complex64)
    mask = np.zeros((t, ny, nro), bool)
    s0 = int(start[0])
    lo, hi = max(0, s0), min(nro, s0 + s)
    if np.all(start == s0) and len(np.unique(key)) == n and hi > lo:
        # the usual file: one readout per (frame, line), one echo position — a single scatter
        k[frame_of, :, rows, lo:hi] = data[:, :, lo - s0 : hi - s0]
        mask[frame_of, rows, lo:hi] = True
    else:
        grid = np.zeros((n, c, nro), np.complex64)
        hit = np.zeros((n, nro), np.float32)
        for s0 in np.unique(start):
            r = np.flatnonzero(start == s0)
            lo, hi = max(0, int(s0)), min(nro, int(s0) + s)
            if hi > lo:
                grid[r, :, lo:hi] = data[r, :, lo - int(s0) : hi - int(s0)]
                hit[r, lo:hi] = 1.0
        # sum repeated (frame, line) pairs — averages and repeats — and divide by the hits
        order = np.argsort(key, kind="stable")
        key_sorted = key[order]
        starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
        sums = np.add.reduceat(grid[order], starts, axis=0)
        hits = np.add.reduceat(hit[order], starts, axis=0)
        fu, ru = key_sorted[starts] // ny, key_sorted[starts] % ny
        k[fu, :, ru, :] = sums / np.maximum(hits, 1)[:, None, :]
        mask[fu, ru, :] = hits > 0
    # readout oversampling: crop the image to the recon FOV along x
    fe_x, fr_x = header.encoded_fov_mm[0], header.recon_fov_mm[0]
    rx = header.recon_matrix[0]
    if fe_x > 0 and fr_x > 0:
        nx = int(round(nro * fr_x / fe_x)) if fe_x > fr_x * 1.01 else nro
    else:
        nx = min(rx, nro)
    voxel_x = (fe_x / enc_x) if fe_x > 0 else (fr_x / rx if fr_x > 0 else 1.0)
    fe_y, fr_y = header.encoded_fov_mm[1], header.recon_fov_mm[1]
    if fe_y > 0 and fr_y > 0 and fe_y > fr_y * 1.01:
        warn(
            notes,
            f"phase oversampling: the image covers the encoded FOV of {fe_y:g} mm in "
            f"{ny} rows (the header's recon FOV is {fr_y:g} mm)",
            stacklevel=4,
        )
    sampled_rows = np.flatnonzero(mask.any(axis=(0, 2)))
    meta = dict(
        meta,
        trajectory="cartesian",
        readout_samples=s,
        readout_oversampling=nro / nx,
        k1_centre=centre,
        k1_centre_from=centre_from,
        partial_fourier=float((sampled_rows.max() - sampled_rows.min() + 1) / ny),
        echo_asymmetry=float(s / nro),
        recon_matrix_header=(header.recon_matrix[1], header.recon_matrix[0]),
        notes=notes,
        dropped=dropped,
    )
    k_t, mask_t = torch.from_numpy(k), torch.from_numpy(mask)
    if nx < nro:
        k_t, mask_t = _crop_readout(k_t, mask_t, nx)
    return DynamicKSpace(
        data=k_t,
        matrix=(ny, nx),
        mask=mask_t,
        frame_times=_frame_times(head, frame_of, t, meta),
        fov_mm=(fe_y if fe_y > 0 else fr_y, nx * voxel_x) if min(fe_y, fr_y) > 0 else None,
        meta=meta,
    )


def _crop_readout(
    k: torch.Tensor, mask: torch.Tensor, nx: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(…, Nro)`` centred k-space and ``(T, Ny, Nro)`` mask → the same with ``nx`` columns."""
    nro = k.shape[-1]
    if nro % 2 == 0 and nx % 2 == 0:
        # For even sizes the centring shifts cancel: pixel p of the centred image is
        # (−1)^p · ifft(k)[p mod Nro], and the centred FFT of a crop of nx pixels is
        # fft((−1)^q · crop[q]) — the signs meet and cancel, so no full-size shift is needed.
        h = nx // 2
        img = torch.fft.ifft(k, dim=-1, norm="ortho")
        out = torch.fft.fft(torch.cat([img[..., :h], img[..., nro - h :]], -1), norm="ortho")
    else:
        x = torch.fft.ifftshift(k, dim=-1)
        img = torch.fft.fftshift(torch.fft.ifft(x, dim=-1, norm="ortho"), dim=-1)
        x0 = nro // 2 - nx // 2
        img = torch.fft.ifftshift(img[..., x0 : x0 + nx], dim=-1)
        out = torch.fft.fftshift(torch.fft.fft(img, dim=-1, norm="ortho"), dim=-1)
    # cropped column j sits at the k-space position of encoded column nro//2 + (j − nx//2)·nro/nx
    pos = nro // 2 + (torch.arange(nx, dtype=torch.float64) - nx // 2) * (nro / nx)
    lo = pos.floor().long().clamp(0, nro - 1)
    hi = pos.ceil().long().clamp(0, nro - 1)
    m = mask[..., lo] & mask[..., hi]
    if not bool((m.all(-1) | ~m.any(-1)).all()):  # partial lines (asymmetric echo): zero the rest
        out = out * m[:, None].to(out.dtype)
    return out.to(torch.complex64), m


def remove_readout_oversampling(kspace: DynamicKSpace, nx: int) -> DynamicKSpace:
    """Crop the readout field of view: inverse FFT along x, keep the central ``nx`` columns of
    the image, FFT back.

    The result reconstructs to the image of the full readout, cropped: the image values are
    unchanged (orthonormal FFTs; ``tests/test_loader.py`` checks the relative difference
    against reconstructing at the full readout and cropping). The mask keeps the columns
    whose k-space position was sampled (all of them for a full echo); data outside it are
    zeroed.

    Parameters
    ----------
    kspace
        Cartesian k-space ``(T, C, Ny, Nro)``.
    nx
        Columns to keep, ``≤ Nro``.

    Returns
    -------
    DynamicKSpace
        ``(T, C, Ny, nx)`` with matrix ``(Ny, nx)`` and ``fov_mm`` scaled to match.
    """
    if not kspace.is_cartesian or kspace.mask is None:
        raise RawDataError("readout oversampling is removed from Cartesian data only")
    nro = kspace.matrix[1]
    if not 2 <= nx <= nro:
        raise RawDataError(f"cannot crop a readout of {nro} samples to {nx}")
    if nx == nro:
        return kspace
    k, mask = _crop_readout(kspace.data, kspace.mask, nx)
    fov = None
    if kspace.fov_mm is not None:
        fov = (kspace.fov_mm[0], kspace.fov_mm[1] * nx / nro)
    meta = dict(kspace.meta, readout_oversampling=nro / nx)
    return dataclasses.replace(
        kspace,
        data=k,
        mask=mask,
        matrix=(kspace.matrix[0], nx),
        fov_mm=fov,
        meta=meta,
    )


# -- non-Cartesian -----------------------------------------------------------------------------
def _normalise_traj(traj: np.ndarray, header: RawHeader) -> tuple[np.ndarray, str]:
    """Stored trajectory → radians per recon voxel (the format leaves the units open)."""
    kmax = float(np.abs(traj).max())
    rx = header.recon_matrix[0]
    if 0.45 <= kmax <= 0.505:
        return traj * (2 * math.pi), "cycles per voxel (±0.5)"
    if 0.9 <= kmax <= 1.01:
        return traj * math.pi, "normalised to ±1"
    if 2.8 <= kmax <= math.pi * 1.01:
        return traj, "radians per voxel (±π)"
    for n in dict.fromkeys((rx, header.encoded_matrix[0])):  # cycles per FOV, ±N/2 at the edge
        if n > 2 and 0.45 * n <= kmax <= 0.505 * n:
            return traj * (2 * math.pi / n), f"cycles per FOV (±N/2, N = {n})"
    raise RawDataError(
        f"cannot tell the units of the stored trajectory (|k| up to {kmax:.4g}); expected "
        f"±0.5, ±1, ±π or ±{rx}/2"
    )


def _golden_angle_spokes(
    head: dict[str, np.ndarray], s: int, header: RawHeader, notes: list[str]
) -> np.ndarray:
    """``(N, S, 2)`` (k_x, k_y) in rad/voxel for radial readouts stored without a trajectory."""
    n = len(head["kspace_encode_step_1"])
    e1 = head["kspace_encode_step_1"]
    if len(np.unique(e1)) == n:
        counter, source = e1.astype(np.float64), "kspace_encode_step_1"
    else:
        order = np.argsort(head["scan_counter"], kind="stable")
        counter = np.empty(n, np.float64)
        counter[order] = np.arange(n)
        source = "acquisition order"
    cs = head["center_sample"].astype(np.float64)
    if not np.any(cs):
        cs = np.full(n, s // 2, np.float64)
    rx = header.recon_matrix[0]
    fe_x, fr_x = header.encoded_fov_mm[0], header.recon_fov_mm[0]
    fov_ratio = fe_x / fr_x if fe_x > 0 and fr_x > 0 else s / rx
    step = 2 * math.pi / (rx * fov_ratio)  # one sample, in radians per recon voxel
    kr = (np.arange(s)[None, :] - cs[:, None]) * step  # (N, S)
    angle = np.remainder(counter * sampling.GOLDEN_ANGLE, 2 * math.pi)[:, None]
    warn(
        notes,
        "no trajectory stored: spokes taken as golden-angle radial (angle = "
        f"{math.degrees(sampling.GOLDEN_ANGLE):.3f}° × spoke counter from {source})",
        stacklevel=5,
    )
    return np.stack([kr * np.cos(angle), kr * np.sin(angle)], axis=-1)


def _noncartesian(
    data: np.ndarray,
    head: dict[str, np.ndarray],
    traj: np.ndarray | None,
    labels: np.ndarray,
    dim_name: str | None,
    spokes_per_frame: int | None,
    header: RawHeader,
    notes: list[str],
    dropped: dict[str, int],
    meta: dict[str, Any],
) -> DynamicKSpace:
    kind = header.trajectory
    n, c, s = data.shape
    if traj is None:
        if kind not in ("radial", "goldenangle"):
            raise RawDataError(
                f"{kind} readouts without a stored trajectory cannot be reconstructed; convert "
                "the file with its trajectory"
            )
        k_rad = _golden_angle_spokes(head, s, header, notes)
        units = "computed (golden angle)"
    else:
        if traj.shape[-1] < 2:
            raise RawDataError(f"the stored trajectory has {traj.shape[-1]} dimension(s), not 2")
        k_rad, units = _normalise_traj(traj[..., :2].astype(np.float64), header)
    counter = head["scan_counter"]
    if spokes_per_frame is not None:
        if spokes_per_frame < 1:
            raise RawDataError(f"--spokes-per-frame must be ≥ 1, got {spokes_per_frame}")
        if dim_name is not None:
            warn(
                notes,
                f"frame labels ({dim_name}) ignored: --spokes-per-frame re-bins the "
                "readouts in acquisition order",
                stacklevel=4,
            )
        order = np.argsort(counter, kind="stable")
        t = n // spokes_per_frame
        if t == 0:
            raise RawDataError(f"{n} readouts cannot fill one frame of {spokes_per_frame}")
        if t * spokes_per_frame < n:
            rest = n - t * spokes_per_frame
            dropped["incomplete-frame"] = rest
            warn(notes, f"dropped {rest} readouts of an incomplete last frame", stacklevel=4)
        order = order[: t * spokes_per_frame]
        frame_of = np.repeat(np.arange(t), spokes_per_frame)
        dim_name = None
    elif dim_name is None:
        # one static image (a single repetition, a simulation): nothing says where frames
        # begin, so all readouts make one frame, and the warning says how to bin a stream
        warn(
            notes,
            f"the {n} readouts carry no frame labels (phase and repetition are constant): "
            "reconstructed as one static frame; give --spokes-per-frame S to bin them, in "
            "acquisition order, into frames of S readouts",
            stacklevel=4,
        )
        order = np.argsort(counter, kind="stable")
        frame_of = np.zeros(n, np.int64)
        t, spokes_per_frame = 1, n
        meta["static_frame"] = True
    else:
        order = np.lexsort((counter, labels))
        uniq, frame_of = np.unique(labels[order], return_inverse=True)
        counts = np.bincount(frame_of)
        t = len(uniq)
        if _incomplete_last(counts, 1.0):
            per = int(np.median(counts[:-1]))
            warn(
                notes,
                f"dropped the last frame: {counts[-1]} of {per} readouts (scan stopped early?)",
                stacklevel=4,
            )
            dropped["incomplete-frame"] = int(counts[-1])
            keep = frame_of != t - 1
            order, frame_of, t = order[keep], frame_of[keep], t - 1
            counts = counts[:-1]
        if len(set(counts.tolist())) > 1:
            raise RawDataError(
                f"frames hold differing numbers of readouts ({sorted(set(counts.tolist()))}); "
                "give --spokes-per-frame to bin the stream instead"
            )
        spokes_per_frame = len(order) // t
    assert spokes_per_frame is not None
    y = data[order].reshape(t, spokes_per_frame, c, s).transpose(0, 2, 1, 3).reshape(t, c, -1)
    tr = k_rad[order].reshape(t, spokes_per_frame * s, 2)
    tr = np.stack([tr[..., 1], tr[..., 0]], axis=1)  # rows (k_y, k_x)
    tr = np.clip(tr, -math.pi, math.pi)
    traj_t = torch.from_numpy(tr.astype(np.float32))
    ry, rx = header.recon_matrix[1], header.recon_matrix[0]
    matrix = (ry, rx)
    if kind in ("radial", "goldenangle"):
        dcf = sampling.radial_ramp_dcf(traj_t, matrix)
    else:
        dcf = sampling.pipe_menon_dcf(traj_t, matrix)
    head_o = {k: v[order] for k, v in head.items()}
    meta = dict(
        meta,
        trajectory=kind,
        readout_samples=s,
        spokes_per_frame=spokes_per_frame,
        trajectory_units=units,
        time_dim=dim_name,
        notes=notes,
        dropped=dropped,
    )
    fov = (header.recon_fov_mm[1], header.recon_fov_mm[0])
    return DynamicKSpace(
        data=torch.from_numpy(np.ascontiguousarray(y)),
        matrix=matrix,
        traj=traj_t,
        dcf=dcf,
        frame_times=_frame_times(head_o, frame_of, t, meta),
        fov_mm=fov if min(fov) > 0 else None,
        meta=meta,
    )
