"""Reading ISMRMRD raw files: read-only, header normalised, acquisitions read in bulk.

The file is opened with h5py in ``'r'`` mode (the ``ismrmrd`` package's openers write), the
whole compound ``data`` dataset is read in one call and the header fields of every readout
are decoded as arrays. Pre-processing into a :class:`~mridip.kspace.DynamicKSpace` lives in
:mod:`mridip.preprocess`.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mridip.errors import RawDataError

_NS = "{http://www.ismrm.org/ISMRMRD}"

#: ISMRMRD acquisition flag bits (1-based bit numbers of the format).
FLAGS = {
    "noise": 19,
    "parallel_calibration": 20,
    "parallel_calibration_and_imaging": 21,
    "reverse": 22,
    "navigation": 23,
    "phasecorr": 24,
    "hpfeedback": 25,
    "dummyscan": 27,
    "rtfeedback": 28,
    "surfacecoilcorrection": 29,
    "phase_stabilization_reference": 30,
    "phase_stabilization": 31,
}

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


@dataclass(frozen=True)
class RawHeader:
    """The header fields a reconstruction needs, normalised.

    Matrices and fields of view are ``(x, y, z)`` as in the format (readout first); a limit is
    ``(minimum, maximum, center)`` or absent.
    """

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    trajectory: str
    limits: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    receiver_channels: int | None = None
    noise_bandwidth: float = 0.793
    tr_ms: float | None = None
    vendor: str | None = None
    parsed_with: str = "ismrmrd"


@dataclass
class RawScan:
    """Everything read from one ISMRMRD group, before pre-processing.

    Attributes
    ----------
    header
        Normalised header.
    data
        ``(N, C, S)`` complex64 samples of the non-noise readouts.
    traj
        ``(N, S, D)`` float32 stored trajectory, or None.
    head
        Per-readout header fields as arrays ``(N,)`` (``flags``, ``center_sample``,
        ``discard_pre``, ``discard_post``, ``acquisition_time_stamp``, ``sample_time_us``,
        ``scan_counter``, ``active_channels``, ``number_of_samples``) plus the encoding counters
        of :data:`IDX_FIELDS`, and the geometry vectors ``position``, ``read_dir``,
        ``phase_dir``, ``slice_dir`` as ``(N, 3)``.
    noise
        ``(C, M)`` complex64 noise samples from the noise scans, or None.
    noise_sample_time_us
        Dwell time of the noise scans.
    extras
        Top-level datasets stored beside the group by ``mridip simulate`` (``reference``,
        ``reference_maps``), as arrays.
    path, group
        Where the scan came from.
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
    dropped: dict[str, int] = field(default_factory=dict)

    def flag(self, name: str) -> np.ndarray:
        """Boolean ``(N,)``: readouts with the named flag set (see :data:`FLAGS`)."""
        return _has_flag(self.head["flags"], FLAGS[name])


def _has_flag(flags: np.ndarray, bit: int) -> np.ndarray:
    return (flags & np.uint64(1 << (bit - 1))) != 0


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
    """Names of the groups that hold an ISMRMRD ``data`` dataset, in file order."""
    out: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and "data" in obj and isinstance(obj["data"], h5py.Dataset):
            out.append(name)

    f.visititems(visit)
    return out


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

    Raises
    ------
    RawDataError
        Missing file, not HDF5, no ISMRMRD group, unreadable header, no imaging readouts,
        readouts of differing channel count or length.
    """
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
        g = f[group.strip("/")]
        if "xml" not in g:
            raise RawDataError(f"group '{group}' in {path} has no ISMRMRD header ('xml')")
        xml = g["xml"][()]
        if isinstance(xml, np.ndarray):
            xml = xml.flat[0]
        if isinstance(xml, bytes):
            xml = xml.decode("utf-8", errors="replace")
        header = parse_header(str(xml))
        table = g["data"]
        try:
            rows = table[()]
        except (OSError, ValueError, TypeError) as exc:
            raise RawDataError(f"cannot read the acquisitions of {path}: {exc}") from None
        extras = {
            k: f[k][()]
            for k in ("reference", "reference_maps")
            if k in f and isinstance(f[k], h5py.Dataset)
        }
    if rows.size == 0:
        raise RawDataError(f"{path} has no acquisitions")
    head = rows["head"]
    flat: dict[str, np.ndarray] = {
        k: np.asarray(head[k])
        for k in (
            "flags",
            "center_sample",
            "discard_pre",
            "discard_post",
            "acquisition_time_stamp",
            "sample_time_us",
            "scan_counter",
            "active_channels",
            "number_of_samples",
            "trajectory_dimensions",
            "encoding_space_ref",
            "position",
            "read_dir",
            "phase_dir",
            "slice_dir",
        )
    }
    for k in IDX_FIELDS:
        flat[k] = np.asarray(head["idx"][k]).astype(np.int64)
    flags = flat["flags"].astype(np.uint64)
    flat["flags"] = flags

    is_noise = _has_flag(flags, FLAGS["noise"])
    noise, noise_dwell = None, None
    if is_noise.any():
        nidx = np.flatnonzero(is_noise)
        shapes = {
            (int(flat["active_channels"][i]), int(flat["number_of_samples"][i])) for i in nidx
        }
        if len(shapes) == 1:
            c, s = shapes.pop()
            raw = np.stack(rows["data"][nidx]).reshape(len(nidx), c, s, 2)
            noise = (raw[..., 0] + 1j * raw[..., 1]).astype(np.complex64)
            noise = noise.transpose(1, 0, 2).reshape(c, -1)
            noise_dwell = float(flat["sample_time_us"][nidx[0]])
        else:
            warnings.warn(
                f"noise scans have differing shapes {sorted(shapes)}; not used",
                UserWarning,
                stacklevel=2,
            )
    keep = ~is_noise
    if not keep.any():
        raise RawDataError(f"no imaging acquisitions: all {rows.size} are noise scans")
    kidx = np.flatnonzero(keep)
    chans = flat["active_channels"][kidx]
    samples = flat["number_of_samples"][kidx]
    if len(np.unique(chans)) > 1 or len(np.unique(samples)) > 1:
        raise RawDataError(
            f"readouts differ in channels {sorted(set(chans.tolist()))} or samples "
            f"{sorted(set(samples.tolist()))}; mixed acquisitions are not supported"
        )
    c, s = int(chans[0]), int(samples[0])
    if c == 0 or s == 0:
        raise RawDataError("imaging readouts hold no samples")
    raw = np.stack(rows["data"][kidx]).reshape(len(kidx), c, s, 2)
    data = (raw[..., 0] + 1j * raw[..., 1]).astype(np.complex64)
    traj = None
    dims = int(flat["trajectory_dimensions"][kidx[0]])
    if dims > 0:
        traj = np.stack(rows["traj"][kidx]).reshape(len(kidx), s, dims).astype(np.float32)
    head_keep = {k: v[kidx] for k, v in flat.items()}
    return RawScan(
        header=header,
        data=data,
        traj=traj,
        head=head_keep,
        noise=noise,
        noise_sample_time_us=noise_dwell,
        extras=extras,
        path=str(path),
        group=str(group),
        dropped={"noise": int(is_noise.sum())},
    )


# -- header -------------------------------------------------------------------------------------
def parse_header(xml: str) -> RawHeader:
    """Normalise an ISMRMRD XML header.

    Parsed with the ``ismrmrd`` package; when its strict schema rejects the text (older
    converters, unknown elements) a tolerant ElementTree reading of the same fields is used.

    Raises
    ------
    RawDataError
        When the header is not XML or lacks the encoded or recon space.
    """
    try:
        import ismrmrd.xsd

        h = ismrmrd.xsd.CreateFromDocument(xml)
        return _from_ismrmrd(h)
    except RawDataError:
        raise
    except Exception:  # the strict parser rejects many real files: fall back
        return _from_etree(xml)


def _from_ismrmrd(h: Any) -> RawHeader:
    if not h.encoding:
        raise RawDataError("header has no <encoding> section")
    e = h.encoding[0]
    em, rm = e.encodedSpace.matrixSize, e.reconSpace.matrixSize
    ef, rf = e.encodedSpace.fieldOfView_mm, e.reconSpace.fieldOfView_mm
    limits = {}
    if e.encodingLimits is not None:
        for name in (
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
        ):
            lim = getattr(e.encodingLimits, name, None)
            if lim is not None:
                limits[name] = (int(lim.minimum), int(lim.maximum), int(lim.center))
    asi = h.acquisitionSystemInformation
    tr = None
    if h.sequenceParameters is not None and h.sequenceParameters.TR:
        tr = float(h.sequenceParameters.TR[0])
    traj = e.trajectory.value if hasattr(e.trajectory, "value") else str(e.trajectory)
    return RawHeader(
        encoded_matrix=(int(em.x), int(em.y), int(em.z)),
        recon_matrix=(int(rm.x), int(rm.y), int(rm.z)),
        encoded_fov_mm=(float(ef.x), float(ef.y), float(ef.z)),
        recon_fov_mm=(float(rf.x), float(rf.y), float(rf.z)),
        trajectory=str(traj),
        limits=limits,
        receiver_channels=None
        if asi is None or asi.receiverChannels is None
        else int(asi.receiverChannels),
        noise_bandwidth=float(asi.relativeReceiverNoiseBandwidth)
        if asi is not None and asi.relativeReceiverNoiseBandwidth
        else 0.793,
        tr_ms=tr,
        vendor=None if asi is None else asi.systemVendor,
        parsed_with="ismrmrd",
    )


def _find(node: ET.Element | None, path: str) -> ET.Element | None:
    if node is None:
        return None
    hit = node.find("/".join(_NS + p for p in path.split("/")))
    if hit is None:  # files without the namespace
        hit = node.find(path)
    return hit


def _num(node: ET.Element | None, path: str, cast: Any = float, default: Any = None) -> Any:
    hit = _find(node, path)
    if hit is None or hit.text is None:
        return default
    try:
        return cast(float(hit.text)) if cast is int else cast(hit.text)
    except ValueError:
        return default


def _from_etree(xml: str) -> RawHeader:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise RawDataError(f"the ISMRMRD header is not valid XML ({exc})") from None
    enc = _find(root, "encoding")
    if enc is None:
        raise RawDataError("header has no <encoding> section")

    def space(name: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
        sp = _find(enc, name)
        if sp is None:
            raise RawDataError(f"header lacks <{name}>")
        m = tuple(_num(sp, f"matrixSize/{a}", int, 1) for a in "xyz")
        fov = tuple(_num(sp, f"fieldOfView_mm/{a}", float, 0.0) for a in "xyz")
        return m, fov  # type: ignore[return-value]

    em, ef = space("encodedSpace")
    rm, rf = space("reconSpace")
    limits: dict[str, tuple[int, int, int]] = {}
    lim_node = _find(enc, "encodingLimits")
    if lim_node is not None:
        for child in lim_node:
            name = child.tag.replace(_NS, "")
            vals = [_num(child, k, int, None) for k in ("minimum", "maximum", "center")]
            if None not in vals:
                limits[name] = tuple(vals)  # type: ignore[assignment]
    traj_node = _find(enc, "trajectory")
    traj = (traj_node.text or "cartesian").strip() if traj_node is not None else "cartesian"
    asi = _find(root, "acquisitionSystemInformation")
    return RawHeader(
        encoded_matrix=em,
        recon_matrix=rm,
        encoded_fov_mm=ef,
        recon_fov_mm=rf,
        trajectory=traj,
        limits=limits,
        receiver_channels=_num(asi, "receiverChannels", int, None),
        noise_bandwidth=_num(asi, "relativeReceiverNoiseBandwidth", float, 0.793) or 0.793,
        tr_ms=_num(_find(root, "sequenceParameters"), "TR", float, None),
        vendor=_num(asi, "systemVendor", str, None),
        parsed_with="etree",
    )
