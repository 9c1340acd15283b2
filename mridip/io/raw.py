"""Reading ISMRMRD raw files: read-only, header normalised, acquisitions read in bulk.

What happens to a file here (the full list, with every warning, is in ``docs/loader.md``):

1. it is opened with h5py in ``'r'`` mode (the ``ismrmrd`` package's openers write) and the
   group holding ``data`` is chosen (the last one unless ``group`` is given);
2. the XML header is parsed with the ``ismrmrd`` package, or with a tolerant ElementTree
   reading when the package's strict parser rejects it, into a :class:`RawHeader`;
3. the whole acquisition table is read in one call, the per-readout header fields become
   arrays and the flags are decoded as bit masks (no Python loop over readouts);
4. readouts are partitioned: noise scans (kept for prewhitening), calibration-only,
   navigator, phase-correction, dummy, feedback and phase-stabilisation readouts (dropped)
   and imaging readouts (calibration-and-imaging lines included);
5. sanity filters drop, with a warning, readouts of a minority channel count, a minority
   readout length (after ``discard_pre/post``), another encoding space, NaN/Inf samples,
   samples of absurd magnitude (above :data:`ABSURD_MAGNITUDE`) or all-zero data; the
   discard samples are cut off.

Physics (prewhitening, reversed lines, oversampling, frames) lives in :mod:`mridip.preprocess`.
"""

from __future__ import annotations

import os
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from mridip.errors import RawDataError


class RawDataWarning(UserWarning):
    """Something in a raw file was dropped, guessed or repaired; the message says what."""


#: ISMRMRD acquisition flag bits (1-based bit numbers of the format, as ``ismrmrd.ACQ_*``).
FLAGS = {
    "noise": 19,
    "parallel_calibration": 20,
    "parallel_calibration_and_imaging": 21,
    "reverse": 22,
    "navigation": 23,
    "phasecorr": 24,
    "last_in_measurement": 25,
    "hpfeedback": 26,
    "dummyscan": 27,
    "rtfeedback": 28,
    "surfacecoilcorrection": 29,
    "phase_stabilization_reference": 30,
    "phase_stabilization": 31,
    "compression1": 53,
    "compression2": 54,
    "compression3": 55,
    "compression4": 56,
}

#: Readouts that take no part in the image, by flag, with the word a warning uses for them.
#: (Calibration-only readouts, flag 20 without 21, are handled beside these.)
_NOT_IMAGING = (
    ("navigation", "navigator"),
    ("phasecorr", "phase-correction"),
    ("dummyscan", "dummy"),
    ("hpfeedback", "feedback"),
    ("rtfeedback", "feedback"),
    ("surfacecoilcorrection", "surface-coil-correction"),
    ("phase_stabilization_reference", "phase-stabilisation"),
    ("phase_stabilization", "phase-stabilisation"),
)

IDX_FIELDS = (
    "kspace_encode_step_1",
    "kspace_encode_step_2",
    "average",
    "slice",
    "contrast",
    "phase",
    "repetition",
    "set",
    "segment",
)

_HEAD_FIELDS = (
    "flags",
    "scan_counter",
    "acquisition_time_stamp",
    "physiology_time_stamp",
    "number_of_samples",
    "active_channels",
    "discard_pre",
    "discard_post",
    "center_sample",
    "encoding_space_ref",
    "trajectory_dimensions",
    "sample_time_us",
    "position",
    "read_dir",
    "phase_dir",
    "slice_dir",
)

_LIMIT_NAMES = (
    "kspace_encoding_step_0",
    "kspace_encoding_step_1",
    "kspace_encoding_step_2",
    "average",
    "slice",
    "contrast",
    "phase",
    "repetition",
    "set",
    "segment",
)

#: Relative receiver noise bandwidth when the header does not give one (Siemens' usual value).
DEFAULT_NOISE_BANDWIDTH = 0.793

#: Largest sample magnitude taken as a measurement. A 32-bit ADC gives at most 2³¹ ≈ 2e9; beyond
#: 1e12 a sample is a broken simulation or conversion, and its square summed over a scan would
#: overflow float32 (whose largest value is 3.4e38) in every later step.
ABSURD_MAGNITUDE = 1e12


class Limit(NamedTuple):
    """One encoding limit of the header; ``center`` is None when the header omits it."""

    minimum: int
    maximum: int
    center: int | None


@dataclass(frozen=True)
class RawHeader:
    """The header fields a reconstruction needs, normalised.

    Matrices and fields of view are ``(x, y, z)`` as in the format (readout first); FOVs in
    millimetres (0 when the header omits them). ``limits`` holds only the limits the header
    gives; any of them may be missing.

    Attributes
    ----------
    encoded_matrix, recon_matrix, encoded_fov_mm, recon_fov_mm
        Encoded and reconstruction space of the chosen encoding.
    trajectory
        ``cartesian``, ``radial``, ``goldenangle``, ``spiral``, ``epi``, ``other`` (lower case).
    limits
        Encoding limits by ISMRMRD name (``kspace_encoding_step_1``, ``phase`` ...).
    receiver_channels
        ``acquisitionSystemInformation/receiverChannels`` or None.
    noise_bandwidth
        Relative receiver noise bandwidth (default 0.793 when absent).
    tr_ms
        First repetition time, or None.
    vendor
        ``systemVendor`` or None.
    acceleration
        Parallel-imaging acceleration ``(k1, k2)`` the header declares, or None.
    encoding
        Index of the ``<encoding>`` these fields come from.
    parsed_with
        ``ismrmrd`` (strict schema parser) or ``etree`` (tolerant fallback).
    """

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    trajectory: str
    limits: dict[str, Limit] = field(default_factory=dict)
    receiver_channels: int | None = None
    noise_bandwidth: float = DEFAULT_NOISE_BANDWIDTH
    tr_ms: float | None = None
    vendor: str | None = None
    acceleration: tuple[int, int] | None = None
    encoding: int = 0
    parsed_with: str = "ismrmrd"


@dataclass
class RawScan:
    """Everything read from one ISMRMRD group, before pre-processing.

    Attributes
    ----------
    header
        Normalised header of the encoding the imaging readouts refer to.
    data
        ``(N, C, S)`` complex64 samples of the ``N`` imaging readouts, discard samples removed,
        in acquisition order along the readout (reversed lines are *not* flipped yet).
    traj
        ``(N, S, D)`` float32 stored trajectory (same samples), or None.
    head
        Per-readout header fields as arrays ``(N,)``: ``flags`` (uint64), ``scan_counter``,
        ``acquisition_time_stamp``, ``number_of_samples`` (as stored), ``active_channels``,
        ``discard_pre``, ``discard_post``, ``center_sample`` (as stored: an index into the
        trimmed readout, which is how Gadgetron and mrpro read it), ``encoding_space_ref``,
        ``trajectory_dimensions``, ``sample_time_us``, the encoding counters of
        :data:`IDX_FIELDS`, and ``(N, 3)`` ``physiology_time_stamp``, ``position``,
        ``read_dir``, ``phase_dir``, ``slice_dir``.
    noise
        ``(C, M)`` complex64 samples of the noise scans (same channel count as the data), or
        None.
    noise_sample_time_us
        Dwell time of the noise scans.
    extras
        Top-level datasets stored beside the group by ``mridip simulate`` (``reference``,
        ``reference_maps``), as arrays.
    path, group, groups
        Where the scan came from; ``groups`` lists every ISMRMRD group of the file.
    dropped
        Readouts set aside, by reason (``noise`` counts the noise scans, which are used).
    notes
        One line per warning the reader gave, for ``mridip info``.
    xml
        The ISMRMRD XML header as stored (for the scanner geometry and patient fields).
    """

    header: RawHeader
    data: np.ndarray
    traj: np.ndarray | None
    head: dict[str, np.ndarray]
    noise: np.ndarray | None = None
    noise_sample_time_us: float | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    path: str = ""
    group: str = ""
    groups: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    xml: str = ""

    def flag(self, name: str) -> np.ndarray:
        """Boolean ``(N,)``: readouts with the named flag set (see :data:`FLAGS`)."""
        return has_flag(self.head["flags"], name)


def has_flag(flags: np.ndarray, name: str) -> np.ndarray:
    """Boolean mask of the readouts whose ``flags`` have the named bit (see :data:`FLAGS`)."""
    return (np.asarray(flags, np.uint64) & np.uint64(1 << (FLAGS[name] - 1))) != 0


def warn(notes: list[str], message: str, stacklevel: int = 3) -> None:
    """Issue a :class:`RawDataWarning` and keep its text in ``notes``."""
    notes.append(message)
    warnings.warn(message, RawDataWarning, stacklevel=stacklevel)


# -- opening ------------------------------------------------------------------------------------
def _open_h5(path: str | os.PathLike[str]) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise RawDataError(f"no such file: {p}")
    if p.is_dir():
        raise RawDataError(f"{p} is a folder, not a raw data file")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise RawDataError(f"{p} is not an HDF5 file ({exc.__class__.__name__})") from None


def find_groups(f: h5py.File) -> list[str]:
    """Names of the groups that hold an ISMRMRD ``data`` table, in natural order.

    HDF5 lists names alphabetically (the ISMRMRD library does not record creation order), so
    numbers are compared as numbers: ``dataset_2`` comes before ``dataset_10``, and a multi-
    measurement conversion's imaging scan, written last, sorts last.
    """
    out: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and isinstance(obj.get("data"), h5py.Dataset):
            out.append(name)

    f.visititems(visit)

    def natural(name: str) -> list[Any]:
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]

    return sorted(out, key=natural)


def _read_xml(g: h5py.Group, where: str) -> str:
    if "xml" not in g:
        raise RawDataError(f"{where} has no ISMRMRD header ('xml')")
    xml = g["xml"][()]
    if isinstance(xml, np.ndarray):
        if xml.size == 0:
            raise RawDataError(f"the ISMRMRD header of {where} is empty")
        xml = xml.flat[0]
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", errors="replace")
    return str(xml)


def _read_table(ds: h5py.Dataset, where: str) -> np.ndarray:
    names = ds.dtype.names or ()
    if "head" not in names or "data" not in names:
        raise RawDataError(f"'data' of {where} is not an ISMRMRD acquisition table")
    try:
        rows = ds[()]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RawDataError(f"cannot read the acquisitions of {where}: {exc}") from None
    if rows.size == 0:
        raise RawDataError(f"{where} has no acquisitions")
    return np.atleast_1d(rows)


def _head_arrays(head: np.ndarray) -> dict[str, np.ndarray]:
    names = head.dtype.names or ()
    missing = [k for k in ("flags", "number_of_samples", "active_channels") if k not in names]
    if missing or "idx" not in names:
        raise RawDataError(f"acquisition headers lack {', '.join(missing or ['idx'])}")
    n = head.shape[0]
    flat: dict[str, np.ndarray] = {}
    for k in _HEAD_FIELDS:
        if k in names:
            flat[k] = np.asarray(head[k])
        elif k in ("position", "read_dir", "phase_dir", "slice_dir", "physiology_time_stamp"):
            flat[k] = np.zeros((n, 3), np.float32)
        else:
            flat[k] = np.zeros(n, np.float32 if k == "sample_time_us" else np.int64)
    flat["flags"] = flat["flags"].astype(np.uint64)
    for k in ("number_of_samples", "active_channels", "discard_pre", "discard_post"):
        flat[k] = flat[k].astype(np.int64)
    flat["center_sample"] = flat["center_sample"].astype(np.int64)
    idx = head["idx"]
    for k in IDX_FIELDS:
        flat[k] = (
            np.asarray(idx[k]).astype(np.int64)
            if k in (idx.dtype.names or ())
            else np.zeros(n, np.int64)
        )
    return flat


# -- bulk decoding of the variable-length sample arrays -----------------------------------------
def _lengths(objs: np.ndarray) -> np.ndarray:
    return np.fromiter((a.size for a in objs), dtype=np.int64, count=len(objs))


def _gather(
    objs: np.ndarray, idx: np.ndarray, per_sample: int, n_ch: int, ns: np.ndarray
) -> np.ndarray:
    """``(n, n_ch, max ns, per_sample)`` float32 from the vlen arrays ``objs[idx]``.

    One ``np.concatenate`` per distinct readout length, not a loop over readouts; shorter
    readouts are zero-padded at the end (the caller trims every readout to its own window).
    """
    lengths = ns[idx]
    uniq = np.unique(lengths)
    if len(uniq) == 1:
        s = int(uniq[0])
        return np.concatenate(list(objs[idx])).reshape(len(idx), n_ch, s, per_sample)
    out = np.zeros((len(idx), n_ch, int(uniq[-1]), per_sample), np.float32)
    for s in uniq:
        rows = np.flatnonzero(lengths == s)
        block = np.concatenate(list(objs[idx[rows]]))
        out[rows, :, : int(s)] = block.reshape(len(rows), n_ch, int(s), per_sample)
    return out


def _trim(arr: np.ndarray, start: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Keep ``length`` samples starting at ``start`` (one start per readout) along ``axis``."""
    if len(arr) == 0 or np.all(start == start[0]):
        s0 = int(start[0]) if len(start) else 0
        window = [slice(None)] * arr.ndim
        window[axis] = slice(s0, s0 + length)
        return arr[tuple(window)]
    cols = start[:, None] + np.arange(length)[None, :]  # (N, L)
    shape = [1] * arr.ndim
    shape[0], shape[axis] = len(arr), length
    return np.take_along_axis(arr, cols.reshape(shape), axis=axis)


def _decode_samples(
    rows: np.ndarray, idx: np.ndarray, head: dict[str, np.ndarray], n_ch: int, length: int
) -> np.ndarray:
    """``(n, C, S)`` complex64 of the readouts ``idx``, discard samples removed."""
    ns = head["number_of_samples"]
    raw = _gather(rows["data"], idx, 2, n_ch, ns)  # (n, C, S_stored, 2) float32
    cx = np.ascontiguousarray(raw).view(np.complex64)[..., 0]
    return _trim(cx, head["discard_pre"][idx], length, axis=2)


def _decode_traj(
    rows: np.ndarray, idx: np.ndarray, head: dict[str, np.ndarray], dims: int, length: int
) -> np.ndarray:
    ns = head["number_of_samples"]
    raw = _gather(rows["traj"], idx, dims, 1, ns)[:, 0]  # (n, S_stored, D)
    return _trim(raw, head["discard_pre"][idx], length, axis=1).astype(np.float32)


# -- reading --------------------------------------------------------------------------------------
def read_raw(path: str | os.PathLike[str], group: str | None = None) -> RawScan:
    """Read one ISMRMRD raw file.

    Parameters
    ----------
    path
        The ``.h5`` file (opened read-only).
    group
        The group that holds ``data`` and ``xml``; default the last such group (multi-
        measurement conversions write several, the imaging scan last).

    Returns
    -------
    RawScan
        Imaging readouts, noise scans and the normalised header. Warnings
        (:class:`RawDataWarning`) name everything dropped and why.

    Raises
    ------
    RawDataError
        Missing file, not HDF5, no ISMRMRD group, unreadable or incomplete header, compressed
        readouts, no imaging readouts left after the filters.
    """
    notes: list[str] = []
    with _open_h5(path) as f:
        groups = find_groups(f)
        if not groups:
            raise RawDataError(f"{path} holds no ISMRMRD dataset (no group with a 'data' table)")
        if group is None:
            group = groups[-1]
        elif group.strip("/") not in groups:
            raise RawDataError(
                f"group '{group}' not in {path}; ISMRMRD groups: {', '.join(groups)}"
            )
        group = group.strip("/")
        where = f"group '{group}' of {path}"
        g = f[group]
        xml = _read_xml(g, where)
        rows = _read_table(g["data"], where)
        extras = {
            k: f[k][()]
            for k in ("reference", "reference_maps")
            if k in f and isinstance(f[k], h5py.Dataset)
        }
        other_noise = None
        head = _head_arrays(rows["head"])
        if not has_flag(head["flags"], "noise").any() and len(groups) > 1:
            other_noise = _noise_elsewhere(f, groups, group)
    return _assemble(rows, head, xml, other_noise, extras, str(path), group, groups, notes)


def _noise_elsewhere(
    f: h5py.File, groups: list[str], chosen: str
) -> tuple[str, np.ndarray, dict[str, np.ndarray]] | None:
    """Noise scans from another group (multi-measurement conversions store them apart)."""
    for name in reversed(groups[: groups.index(chosen)] + groups[groups.index(chosen) + 1 :]):
        ds = f[name]["data"]
        if "head" not in (ds.dtype.names or ()):
            continue
        try:
            heads = np.atleast_1d(ds.fields("head")[()])
        except (OSError, ValueError, TypeError, KeyError):
            continue
        fl = heads["flags"].astype(np.uint64)
        idx = np.flatnonzero(has_flag(fl, "noise"))
        if len(idx):
            sub = np.atleast_1d(ds[idx.tolist()])
            return name, sub, _head_arrays(sub["head"])
    return None


def _assemble(
    rows: np.ndarray,
    head: dict[str, np.ndarray],
    xml: str,
    other_noise: tuple[str, np.ndarray, dict[str, np.ndarray]] | None,
    extras: dict[str, np.ndarray],
    path: str,
    group: str,
    groups: list[str],
    notes: list[str],
) -> RawScan:
    n_all = len(rows)
    flags = head["flags"]
    compressed = np.zeros(n_all, bool)
    for k in ("compression1", "compression2", "compression3", "compression4"):
        compressed |= has_flag(flags, k)
    if compressed.any():
        raise RawDataError(
            f"{int(compressed.sum())} readouts are stored compressed (ACQ_COMPRESSION flags); "
            "convert the file without compression"
        )
    dropped: dict[str, int] = {}
    is_noise = has_flag(flags, "noise")
    dropped["noise"] = int(is_noise.sum())
    cal_only = has_flag(flags, "parallel_calibration") & ~has_flag(
        flags, "parallel_calibration_and_imaging"
    )
    keep = ~is_noise
    reasons: list[tuple[str, int]] = []
    n = int((keep & cal_only).sum())
    if n:
        reasons.append(("calibration-only", n))
    keep &= ~cal_only
    for name, word in _NOT_IMAGING:
        m = keep & has_flag(flags, name)
        if m.any():
            reasons.append((word, int(m.sum())))
        keep &= ~m
    merged: dict[str, int] = {}
    for word, count in reasons:
        merged[word] = merged.get(word, 0) + count
    if merged:
        dropped.update(merged)
        listed = ", ".join(f"{c} {w}" for w, c in merged.items())
        warn(notes, f"dropped {sum(merged.values())} readouts that are not imaging data: {listed}")
    if not keep.any():
        what = "noise scans" if is_noise.all() else "noise, calibration or other non-imaging scans"
        raise RawDataError(f"no imaging acquisitions: all {n_all} are {what}")

    # sanity filters on the imaging readouts, each by majority with a warning
    ch, ns = head["active_channels"], head["number_of_samples"]
    eff = ns - head["discard_pre"] - head["discard_post"]

    def majority(values: np.ndarray, label: str, what: str) -> None:
        nonlocal keep
        vals = values[keep]
        uniq, counts = np.unique(vals, return_counts=True)
        if len(uniq) <= 1:
            return
        best = uniq[np.argmax(counts)]
        bad = keep & (values != best)
        others = ", ".join(f"{c}×{u}" for u, c in zip(uniq, counts, strict=True) if u != best)
        dropped[label] = dropped.get(label, 0) + int(bad.sum())
        warn(
            notes,
            f"dropped {int(bad.sum())} readouts with {what} other than the majority's {best} "
            f"({others})",
        )
        keep &= ~bad

    majority(head["encoding_space_ref"], "encoding-space", "an encoding space")
    majority(ch, "channels", "a channel count")
    majority(eff, "readout-length", "a readout length")
    kidx = np.flatnonzero(keep)
    n_ch, length = int(ch[kidx[0]]), int(eff[kidx[0]])
    if n_ch == 0 or length <= 0:
        raise RawDataError(
            f"imaging readouts hold no samples ({n_ch} channels, {length} samples after discards)"
        )
    # the stored arrays must be as long as their headers say (a truncated write is not)
    want = ch[kidx] * ns[kidx] * 2
    short = _lengths(rows["data"][kidx]) != want
    if short.any():
        dropped["truncated"] = int(short.sum())
        warn(
            notes,
            f"dropped {int(short.sum())} readouts whose sample arrays do not match "
            "their headers (damaged write)",
        )
        kidx = kidx[~short]
        if not len(kidx):
            raise RawDataError("no imaging readout holds the samples its header announces")
    data = _decode_samples(rows, kidx, head, n_ch, length)
    flat = data.view(np.float32).reshape(len(kidx), -1)
    finite = np.isfinite(flat).all(axis=1)
    bad = int((~finite).sum())
    if bad > 0.1 * len(kidx):
        raise RawDataError(
            f"{bad} of {len(kidx)} imaging readouts hold NaN or Inf samples; the file is damaged"
        )
    with np.errstate(invalid="ignore"):
        peak = np.where(finite, np.abs(flat).max(axis=1, initial=0.0), 0.0)
    absurd = peak > ABSURD_MAGNITUDE
    n_absurd = int(absurd.sum())
    if bad + n_absurd > 0.1 * len(kidx):
        raise RawDataError(
            f"{n_absurd} of {len(kidx)} imaging readouts hold samples of absurd magnitude (up "
            f"to {float(peak.max()):.3g}, limit {ABSURD_MAGNITUDE:.0e}); the file is damaged"
        )
    finite &= ~absurd
    zero = finite & ~np.any(flat != 0, axis=1)
    good = finite & ~zero
    if not good.any():
        raise RawDataError("every imaging readout is all zeros or NaN")
    if bad:
        dropped["nan"] = bad
        warn(notes, f"dropped {bad} readouts with NaN or Inf samples")
    if n_absurd:
        dropped["absurd"] = n_absurd
        warn(
            notes,
            f"dropped {n_absurd} readouts with samples of absurd magnitude (up to "
            f"{float(peak.max()):.3g}, limit {ABSURD_MAGNITUDE:.0e})",
        )
    if zero.any():
        dropped["all-zero"] = int(zero.sum())
        warn(notes, f"dropped {int(zero.sum())} readouts whose samples are all zero")
    if not good.all():
        kidx, data = kidx[good], data[good]

    dims = int(np.bincount(head["trajectory_dimensions"][kidx].astype(np.int64)).argmax())
    traj = None
    if dims > 0:
        lens = _lengths(rows["traj"][kidx])
        if np.all(lens == ns[kidx] * dims):
            traj = _decode_traj(rows, kidx, head, dims, length)
        else:
            warn(notes, "the stored trajectory does not match the readouts; it is ignored")
    enc_ref = int(head["encoding_space_ref"][kidx[0]])
    header = parse_header(xml, encoding=enc_ref, notes=notes)

    # center_sample counts from the first sample kept (after discard_pre), not from the first
    # sample stored: Gadgetron's BucketToBuffer copies the trimmed readout so that its sample
    # center_sample lands on the grid centre, and mrpro passes center_sample unchanged to its
    # trajectory of the trimmed readout (docs/loader.md, "Conventions")
    sub = {k: v[kidx] for k, v in head.items()}

    noise, noise_dwell = None, None
    if is_noise.any():
        noise, noise_dwell = _noise_samples(rows, head, np.flatnonzero(is_noise), n_ch, notes)
    elif other_noise is not None:
        name, nrows, nhead = other_noise
        noise, noise_dwell = _noise_samples(nrows, nhead, np.arange(len(nrows)), n_ch, notes)
        if noise is not None:
            dropped["noise"] = len(nrows)
            notes.append(f"noise scans taken from group '{name}'")
    return RawScan(
        header=header,
        data=data,
        traj=traj,
        head=sub,
        noise=noise,
        noise_sample_time_us=noise_dwell,
        extras=extras,
        path=path,
        group=group,
        groups=groups,
        dropped=dropped,
        notes=notes,
        xml=xml,
    )


def _noise_samples(
    rows: np.ndarray, head: dict[str, np.ndarray], nidx: np.ndarray, n_ch: int, notes: list[str]
) -> tuple[np.ndarray | None, float | None]:
    """``(C, M)`` noise samples of the noise scans with the data's channel count."""
    ch = head["active_channels"][nidx]
    match = nidx[ch == n_ch]
    if not len(match):
        warn(
            notes,
            f"noise scans have {sorted(set(ch.tolist()))} channels but the data {n_ch}; "
            "data not prewhitened",
            stacklevel=4,
        )
        return None, None
    eff = (head["number_of_samples"] - head["discard_pre"] - head["discard_post"])[match]
    want = head["active_channels"][match] * head["number_of_samples"][match] * 2
    ok = (_lengths(rows["data"][match]) == want) & (eff > 0)
    match, eff = match[ok], eff[ok]
    if not len(match):
        return None, None
    blocks = []
    for length in np.unique(eff):
        sel = match[eff == length]
        blocks.append(
            _decode_samples(rows, sel, head, n_ch, int(length)).transpose(1, 0, 2).reshape(n_ch, -1)
        )
    noise = np.concatenate(blocks, axis=1)
    if not np.isfinite(noise.view(np.float32)).all():
        warn(notes, "noise scans hold NaN or Inf samples; data not prewhitened", stacklevel=4)
        return None, None
    dwell = float(np.median(head["sample_time_us"][match]))
    return noise, dwell


# -- header -------------------------------------------------------------------------------------
def parse_header(xml: str, encoding: int = 0, notes: list[str] | None = None) -> RawHeader:
    """Normalise an ISMRMRD XML header.

    Parsed with the ``ismrmrd`` package; when its strict schema rejects the text (older
    converters, unknown elements, missing required elements) a tolerant ElementTree reading
    of the same fields is used and a :class:`RawDataWarning` says why.

    Parameters
    ----------
    xml
        The header text.
    encoding
        Which ``<encoding>`` to normalise (the imaging readouts' ``encoding_space_ref``).
    notes
        Receives the text of any warning.

    Raises
    ------
    RawDataError
        When the header is not XML, has no such encoding, or lacks the encoded matrix.
    """
    notes = [] if notes is None else notes
    try:
        import ismrmrd.xsd

        h = ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as exc:  # the strict parser rejects many real files: fall back
        reason = re.sub(r"\{[^}]*\}", "", str(exc)).splitlines()[0][:120] if str(exc) else ""
        missing = re.search(r"missing \d+ required .*argument: '(\w+)'", reason)
        if missing:  # the package's dataclasses report a missing element as a TypeError
            reason = f"no <{missing.group(1)}>"
        header = _from_etree(xml, encoding)
        warn(
            notes,
            "the ISMRMRD header does not follow the schema"
            + (f" ({reason})" if reason else "")
            + "; read with the tolerant parser",
            stacklevel=4,
        )
        return header
    return _from_ismrmrd(h, encoding)


def _triple(obj: Any, cast: Any, default: Any) -> tuple[Any, Any, Any]:
    if obj is None:
        return (default, default, default)
    vals = []
    for a in "xyz":
        v = getattr(obj, a, None)
        vals.append(default if v is None else cast(v))
    return tuple(vals)  # type: ignore[return-value]


def _from_ismrmrd(h: Any, encoding: int) -> RawHeader:
    if not h.encoding:
        raise RawDataError("header has no <encoding> section")
    if encoding >= len(h.encoding):
        raise RawDataError(
            f"readouts refer to encoding {encoding} but the header has {len(h.encoding)}"
        )
    e = h.encoding[encoding]
    if e.encodedSpace is None or e.encodedSpace.matrixSize is None:
        raise RawDataError("header lacks the encoded matrix size")
    recon = e.reconSpace if e.reconSpace is not None else e.encodedSpace
    limits: dict[str, Limit] = {}
    if e.encodingLimits is not None:
        for name in _LIMIT_NAMES:
            lim = getattr(e.encodingLimits, name, None)
            if lim is not None and lim.minimum is not None and lim.maximum is not None:
                centre = None if lim.center is None else int(lim.center)
                limits[name] = Limit(int(lim.minimum), int(lim.maximum), centre)
    asi = h.acquisitionSystemInformation
    tr = None
    if h.sequenceParameters is not None and h.sequenceParameters.TR:
        tr = float(h.sequenceParameters.TR[0])
    traj = e.trajectory.value if hasattr(e.trajectory, "value") else str(e.trajectory)
    accel = None
    pi = getattr(e, "parallelImaging", None)
    if pi is not None and pi.accelerationFactor is not None:
        af = pi.accelerationFactor
        accel = (int(af.kspace_encoding_step_1 or 1), int(af.kspace_encoding_step_2 or 1))
    bw = None if asi is None else asi.relativeReceiverNoiseBandwidth
    return RawHeader(
        encoded_matrix=_triple(e.encodedSpace.matrixSize, int, 1),
        recon_matrix=_triple(recon.matrixSize, int, 1),
        encoded_fov_mm=_triple(e.encodedSpace.fieldOfView_mm, float, 0.0),
        recon_fov_mm=_triple(recon.fieldOfView_mm, float, 0.0),
        trajectory=str(traj).lower(),
        limits=limits,
        receiver_channels=None
        if asi is None or asi.receiverChannels is None
        else int(asi.receiverChannels),
        noise_bandwidth=float(bw) if bw else DEFAULT_NOISE_BANDWIDTH,
        tr_ms=tr,
        vendor=None if asi is None else asi.systemVendor,
        acceleration=accel,
        encoding=encoding,
        parsed_with="ismrmrd",
    )


def _text(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    hit = node.find(path)
    if hit is None or hit.text is None or not hit.text.strip():
        return None
    return hit.text.strip()


def _num(node: ET.Element | None, path: str, cast: Any, default: Any) -> Any:
    text = _text(node, path)
    if text is None:
        return default
    try:
        return cast(float(text)) if cast is int else cast(text)
    except ValueError:
        return default


def _from_etree(xml: str, encoding: int) -> RawHeader:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise RawDataError(f"the ISMRMRD header is not valid XML ({exc})") from None
    for el in root.iter():  # files with and without the ISMRMRD namespace read alike
        if isinstance(el.tag, str):
            el.tag = el.tag.split("}", 1)[-1]
    encs = root.findall("encoding")
    if not encs:
        raise RawDataError("header has no <encoding> section")
    if encoding >= len(encs):
        raise RawDataError(f"readouts refer to encoding {encoding} but the header has {len(encs)}")
    enc = encs[encoding]

    def space(name: str) -> tuple[tuple[int, int, int], tuple[float, float, float]] | None:
        sp = enc.find(name)
        if sp is None or _text(sp, "matrixSize/x") is None:
            return None
        m = tuple(_num(sp, f"matrixSize/{a}", int, 1) for a in "xyz")
        fov = tuple(_num(sp, f"fieldOfView_mm/{a}", float, 0.0) for a in "xyz")
        return m, fov  # type: ignore[return-value]

    es = space("encodedSpace")
    if es is None:
        raise RawDataError("header lacks the encoded matrix size (<encodedSpace><matrixSize>)")
    rs = space("reconSpace") or es
    limits: dict[str, Limit] = {}
    lim_node = enc.find("encodingLimits")
    if lim_node is not None:
        for child in lim_node:
            lo, hi = _num(child, "minimum", int, None), _num(child, "maximum", int, None)
            if lo is not None and hi is not None:
                limits[str(child.tag)] = Limit(lo, hi, _num(child, "center", int, None))
    traj = (_text(enc, "trajectory") or "cartesian").lower()
    accel = None
    af = enc.find("parallelImaging/accelerationFactor")
    if af is not None:
        accel = (
            _num(af, "kspace_encoding_step_1", int, 1),
            _num(af, "kspace_encoding_step_2", int, 1),
        )
    asi = root.find("acquisitionSystemInformation")
    bw = _num(asi, "relativeReceiverNoiseBandwidth", float, None)
    return RawHeader(
        encoded_matrix=es[0],
        recon_matrix=rs[0],
        encoded_fov_mm=es[1],
        recon_fov_mm=rs[1],
        trajectory=traj,
        limits=limits,
        receiver_channels=_num(asi, "receiverChannels", int, None),
        noise_bandwidth=bw if bw else DEFAULT_NOISE_BANDWIDTH,
        tr_ms=_num(root.find("sequenceParameters"), "TR", float, None),
        vendor=_num(asi, "systemVendor", str, None),
        acceleration=accel,
        encoding=encoding,
        parsed_with="etree",
    )
