"""A synthetic ISMRMRD raw writer that plants, one at a time, the faults real files have.

The acquisition table is written with h5py in the ``ismrmrd`` package's own compound dtype
(``ismrmrd.hdf5.acquisition_dtype``) and the header with ``ismrmrd.xsd``, so the files are
valid ISMRMRD (``ismrmrd.Dataset`` reads them) while every field stays under the test's
control. :func:`cartesian_scan` builds a small Cartesian cine with a known truth and plants
the faults :class:`Faults` asks for; :func:`write_table` writes any table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import torch

from mridip import phantoms
from mridip.io.raw import IDX_FIELDS
from mridip.io.raw_writer import make_header

IDX = IDX_FIELDS
NOISE = 1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)
REVERSE = 1 << (ismrmrd.ACQ_IS_REVERSE - 1)
CALIBRATION = 1 << (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION - 1)
CAL_AND_IMAGING = 1 << (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING - 1)
NAVIGATOR = 1 << (ismrmrd.ACQ_IS_NAVIGATION_DATA - 1)
DUMMY = 1 << (ismrmrd.ACQ_IS_DUMMYSCAN_DATA - 1)
COMPRESSED = 1 << (ismrmrd.ACQ_COMPRESSION1 - 1)
DWELL_US = 2.5


def write_table(
    path: str | Path,
    xml: str,
    head: dict[str, np.ndarray],
    data: list[np.ndarray],
    traj: list[np.ndarray | None] | None = None,
    group: str = "dataset",
    mode: str = "w",
) -> None:
    """Write one ISMRMRD group: ``xml`` and a ``data`` table filled field by field.

    ``head`` maps acquisition-header and ``idx`` field names to ``(N,)`` (or ``(N, 3)``)
    arrays; ``data`` holds each readout's ``(C, S)`` complex samples; ``traj`` each
    readout's ``(S, D)`` trajectory.
    """
    n = len(data)
    rows = np.zeros(n, ismrmrd.hdf5.acquisition_dtype)
    h = rows["head"]
    h["version"] = 1
    for k, v in head.items():
        if k in IDX:
            h["idx"][k] = v
        else:
            h[k] = v
    samples = np.empty(n, object)
    trajs = np.empty(n, object)
    for i, d in enumerate(data):
        samples[i] = np.ascontiguousarray(d, np.complex64).view(np.float32).ravel()
        ti = None if traj is None else traj[i]
        trajs[i] = np.zeros(0, np.float32) if ti is None else np.asarray(ti, np.float32).ravel()
    rows["data"] = samples
    rows["traj"] = trajs
    with h5py.File(path, mode) as f:
        g = f.require_group(group)
        g.create_dataset("xml", data=[xml.encode()], dtype=h5py.string_dtype())
        g.create_dataset("data", data=rows, maxshape=(None,), chunks=True)


def noise_covariance(c: int, seed: int = 0) -> np.ndarray:
    """A receiver covariance with unequal gains and neighbour correlation ``(C, C)``."""
    rng = np.random.default_rng(seed + 101)
    gains = rng.uniform(0.6, 1.4, c)
    i = np.arange(c)
    corr = 0.4 ** np.abs(i[:, None] - i[None, :]) * np.exp(0.3j * (i[:, None] - i[None, :]))
    return np.sqrt(gains)[:, None] * corr * np.sqrt(gains)[None, :]


def correlated_noise(cov: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator):
    """Complex Gaussian noise ``(C, *shape)`` with covariance ``cov``."""
    c = cov.shape[0]
    white = (rng.standard_normal((c, *shape)) + 1j * rng.standard_normal((c, *shape))) / np.sqrt(2)
    return np.tensordot(np.linalg.cholesky(cov), white, axes=1)


@dataclass
class Faults:
    """What to plant in a :func:`cartesian_scan` (all off: a clean file)."""

    noise_scans: int = 4
    noise_dwell_ratio: float = 1.0  #: noise dwell time / imaging dwell time
    body_coil: int = 0  #: extra readouts with 2 channels
    discard: tuple[int, int] = (0, 0)  #: junk samples before / after each readout
    reverse: bool = False  #: odd lines stored reversed (ACQ_IS_REVERSE)
    asymmetric: int = 0  #: samples missing at the start of each readout
    partial_fourier: int = 0  #: first phase-encoding lines not acquired
    header_centre: int | None = None  #: a wrong k1 centre in the header
    duplicates: int = 0  #: readouts written twice, bit for bit
    repeats: int = 0  #: lines acquired a second time (other data: averaged)
    truncate_last: bool = False  #: the last frame keeps a quarter of its lines
    nan: int = 0  #: readouts holding a NaN sample
    absurd: int = 0  #: readouts holding a finite sample of absurd magnitude (2.4e38)
    zero: int = 0  #: readouts of all-zero samples
    calibration_only: int = 0  #: extra ACS-only readouts
    navigators: int = 0  #: extra navigator readouts
    two_groups: bool = False  #: noise scans in a group of their own (dataset_9, dataset_10)
    unknown_element: bool = False  #: an element the ISMRMRD schema does not know
    missing_limits: bool = False  #: no <encodingLimits>
    compressed: bool = False  #: readouts flagged ACQ_COMPRESSION1
    slices: int = 1
    time_dim: str = "phase"
    #: ``systemVendor``; "Siemens" stores the conjugate of the k-space (as mrpro's writer and
    #: its reader's rule have it: Siemens orientation assumes a forward FFT to the image)
    vendor: str = "rawfaults"
    #: store each readout's trajectory as mrpro's writer does for Cartesian scans: k_x in
    #: samples from the centre (±Nro/2, readout oversampling included), k_y = line − N/2
    stored_trajectory: bool = False


@dataclass
class Planted:
    """A written file and what a correct loader must make of it."""

    path: Path
    kspace: np.ndarray  #: ``(T, C, N, N)`` expected k-space on the recon grid, before whitening
    mask: np.ndarray  #: ``(T, N, N)`` expected sampling mask
    image: np.ndarray  #: ``(T, N, N)`` coil-combined truth
    maps: np.ndarray  #: ``(C, N, N)``
    noise_cov: np.ndarray
    dropped_lines: list[tuple[int, int]] = field(default_factory=list)


def cartesian_scan(
    path: str | Path,
    faults: Faults | None = None,
    *,
    matrix: int = 32,
    frames: int = 4,
    coils: int = 4,
    oversampling: int = 2,
    acceleration: int = 2,
    seed: int = 0,
) -> Planted:
    """Write a small Cartesian cine with the given faults; return the file and its truth.

    Frame ``t`` samples the lines ``e1`` with ``(e1 + t) % acceleration == 0`` plus the four
    central lines; readouts are ``oversampling·N`` samples of a field of view widened by the
    same factor along x (the object fills the central part).
    """
    fl = faults or Faults()
    n, t, c, os_ = matrix, frames, coils, oversampling
    rng = np.random.default_rng(seed)
    ph = phantoms.cine_phantom((n, n), t, seed=seed)
    img = ph.image.numpy().astype(np.complex128)  # (T, N, N)
    maps = phantoms.coil_maps((n, n), c, seed=seed).numpy().astype(np.complex128)
    slice_imgs = [img * (1.0 + 0.5 * s) for s in range(fl.slices)]
    cov = noise_covariance(c, seed)

    def fft_x(x: np.ndarray) -> np.ndarray:
        x = np.fft.ifftshift(x, axes=(-2, -1))
        return np.fft.fftshift(np.fft.fft2(x, norm="ortho"), axes=(-2, -1))

    nro = os_ * n
    pad = (nro - n) // 2
    lines = np.zeros((t, n), bool)
    e1 = np.arange(n)
    for f in range(t):
        lines[f] = ((e1 + f) % acceleration == 0) | (np.abs(e1 - n // 2) < 2)
    lines[:, : fl.partial_fourier] = False
    centre_sample = nro // 2

    head_rows: list[dict[str, object]] = []
    data_rows: list[np.ndarray] = []
    traj_rows: list[np.ndarray | None] = []
    counter = 0

    def add(d: np.ndarray, **fields: object) -> None:
        nonlocal counter
        row: dict[str, object] = {
            "scan_counter": counter,
            "acquisition_time_stamp": counter * 2,
            "active_channels": d.shape[0],
            "available_channels": d.shape[0],
            "number_of_samples": d.shape[1],
            "center_sample": centre_sample,
            "sample_time_us": DWELL_US,
            "read_dir": (1.0, 0.0, 0.0),
            "phase_dir": (0.0, 1.0, 0.0),
            "slice_dir": (0.0, 0.0, 1.0),
        }
        traj = fields.pop("traj", None)
        row.update(fields)
        if traj is not None:
            row["trajectory_dimensions"] = 2
        head_rows.append(row)
        data_rows.append(d)
        traj_rows.append(traj)
        counter += 1

    noise_rows = []
    for _ in range(fl.noise_scans):
        noise_rows.append(correlated_noise(cov, (nro,), rng))
    if not fl.two_groups:
        for d in noise_rows:
            add(d, flags=NOISE, sample_time_us=DWELL_US * fl.noise_dwell_ratio)
    for _ in range(fl.body_coil):
        add(rng.standard_normal((2, nro)) + 1j * rng.standard_normal((2, nro)))
    for _ in range(fl.navigators):
        add(rng.standard_normal((c, nro)) + 0j, flags=NAVIGATOR)
    kspace_all = []
    for s, simg in enumerate(slice_imgs):
        coil_img = simg[:, None] * maps[None]  # (T, C, N, N)
        wide = np.pad(coil_img, ((0, 0), (0, 0), (0, 0), (pad, nro - n - pad)))
        k_os = fft_x(wide)  # (T, C, N, nro)
        kspace_all.append(fft_x(coil_img))
        for _ in range(fl.calibration_only if s == 0 else 0):
            add(k_os[0, :, n // 2 + 1], flags=CALIBRATION, kspace_encode_step_1=n // 2 + 1)
        for f in range(t):
            for line in np.flatnonzero(lines[f]):
                d = k_os[f, :, line].copy()
                if fl.vendor.lower() == "siemens":
                    d = d.conj()
                flags = 0
                kx = np.arange(nro, dtype=np.float64) - centre_sample
                if fl.reverse and line % 2:
                    d = d[:, ::-1].copy()
                    kx = kx[::-1]
                    flags |= REVERSE
                cs = centre_sample
                if fl.asymmetric:
                    d = d[:, fl.asymmetric :]
                    kx = kx[fl.asymmetric :]
                    cs = centre_sample - fl.asymmetric
                pre, post = fl.discard
                if pre or post:
                    # center_sample counts from the first sample kept (Gadgetron, mrpro)
                    junk = np.full((c, pre), 1e3 + 0j), np.full((c, post), -1e3 + 0j)
                    d = np.concatenate([junk[0], d, junk[1]], axis=1)
                    kx = np.concatenate([np.zeros(pre), kx, np.zeros(post)])
                traj = None
                if fl.stored_trajectory:
                    traj = np.stack([kx, np.full(len(kx), line - n / 2)], axis=1)
                if fl.compressed:
                    flags |= COMPRESSED
                position = (0.0, 0.0, 6.0 * s)
                time_fields = {fl.time_dim: f}
                add(
                    d,
                    flags=flags,
                    kspace_encode_step_1=line,
                    slice=s,
                    center_sample=cs,
                    discard_pre=pre,
                    discard_post=post,
                    position=position,
                    traj=traj,
                    **time_fields,
                )
    planted_mask = np.repeat(lines[:, :, None], n, axis=2)
    expected = kspace_all[0] * planted_mask[:, None]
    dropped_lines: list[tuple[int, int]] = []
    imaging = [
        i
        for i, r in enumerate(head_rows)
        if not r.get("flags") and r["active_channels"] == c and r.get("slice", 0) == 0
    ]
    if fl.repeats:
        # a second acquisition of a line, with other data: the loader must average the two
        for i in imaging[5 : 5 + fl.repeats]:
            r = dict(head_rows[i])
            f, line = int(r[fl.time_dim]), int(r["kspace_encode_step_1"])  # type: ignore[arg-type]
            extra = data_rows[i] * (1.0 + 0.2j)
            add(extra, traj=traj_rows[i], **{k: v for k, v in r.items() if k != "scan_counter"})
            expected[f, :, line] *= 1.0 + 0.1j
    if fl.duplicates:
        for i in imaging[3 : 3 + fl.duplicates]:
            head_rows.append(dict(head_rows[i]))
            data_rows.append(data_rows[i].copy())
            traj_rows.append(traj_rows[i])
    if fl.nan or fl.zero or fl.absurd:
        for j, i in enumerate(imaging[7 : 7 + fl.nan + fl.zero + fl.absurd]):
            r = head_rows[i]
            d = data_rows[i].copy()
            if j < fl.nan:
                d[0, d.shape[1] // 3] = np.nan
            elif j < fl.nan + fl.zero:
                d[:] = 0
            else:  # finite in float32 (largest 3.4e38), absurd as a measurement
                d[0, d.shape[1] // 3] = 2.4e38
            data_rows[i] = d
            f, line = int(r[fl.time_dim]), int(r["kspace_encode_step_1"])  # type: ignore[arg-type]
            dropped_lines.append((f, line))
            expected[f, :, line] = 0
            planted_mask[f, line] = False
    if fl.truncate_last:
        last = [
            i
            for i, r in enumerate(head_rows)
            if r.get(fl.time_dim) == t - 1 and not r.get("flags") and r.get("slice", 0) == 0
        ]
        cut = set(last[len(last) // 4 :])
        head_rows = [r for i, r in enumerate(head_rows) if i not in cut]
        data_rows = [d for i, d in enumerate(data_rows) if i not in cut]
        traj_rows = [tr for i, tr in enumerate(traj_rows) if i not in cut]
        expected, planted_mask = expected[:-1], planted_mask[:-1]
    if fl.asymmetric and os_ == 1:
        planted_mask[..., : fl.asymmetric] = False
        expected[..., : fl.asymmetric] = 0
    head: dict[str, np.ndarray] = {}
    keys = sorted({k for r in head_rows for k in r})
    for k in keys:
        default = (0.0, 0.0, 0.0) if k in ("position", "read_dir", "phase_dir", "slice_dir") else 0
        head[k] = np.asarray([r.get(k, default) for r in head_rows])
    limits = {
        "kspace_encoding_step_1": (
            0,
            n - 1,
            n // 2 if fl.header_centre is None else fl.header_centre,
        ),
        fl.time_dim: (0, t - 1, 0),
        "slice": (0, fl.slices - 1, 0),
    }
    xml = make_header(
        encoded=(nro, n),
        recon=(n, n),
        fov_mm=(300.0, 300.0),
        encoded_fov_mm=(300.0 * os_, 300.0),
        trajectory="cartesian",
        limits=limits,
        n_coils=c,
        tr_ms=3.0,
        vendor=fl.vendor,
    )
    if fl.unknown_element:
        xml = xml.replace("<encoding>", "<encoding><vendorThing>7</vendorThing>", 1)
    if fl.missing_limits:
        xml = re.sub(r"<encodingLimits>.*?</encodingLimits>", "", xml, flags=re.S)
    path = Path(path)
    if fl.two_groups:
        nxml = xml
        nhead = {
            "flags": np.full(len(noise_rows), NOISE, np.uint64),
            "active_channels": np.full(len(noise_rows), c),
            "number_of_samples": np.full(len(noise_rows), nro),
            "sample_time_us": np.full(len(noise_rows), DWELL_US * fl.noise_dwell_ratio),
        }
        # as multi-measurement conversions name them; "dataset_10" sorts last only naturally
        write_table(path, nxml, nhead, noise_rows, group="dataset_9")
        write_table(path, xml, head, data_rows, traj_rows, group="dataset_10", mode="a")
    else:
        write_table(path, xml, head, data_rows, traj_rows)
    return Planted(
        path=path,
        kspace=expected,
        mask=planted_mask,
        image=img,
        maps=maps,
        noise_cov=cov,
        dropped_lines=dropped_lines,
    )


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """complex64 tensor of an array."""
    return torch.from_numpy(np.ascontiguousarray(x).astype(np.complex64))
