"""Where a slice lies in the patient: the scanner's geometry, from the raw header to the viewers.

Conventions (``docs/outputs.md`` explains them with a worked example):

- Patient coordinates are DICOM/ISMRMRD **LPS** millimetres: +x towards the patient's left,
  +y towards the posterior, +z towards the head. NIfTI uses **RAS** (+x right, +y anterior),
  so the NIfTI affine is the LPS one with its first two rows negated.
- ``read_dir`` is the direction in which the image column index (axis −1, x, the readout)
  increases; ``phase_dir`` the direction in which the row index (axis −2, y) increases;
  ``slice_dir`` the slice normal. All three are unit vectors in LPS.
- ``position`` is the slice centre as ISMRMRD stores it. mridip's images are centred FFTs, so
  the voxel at ``(Ny//2, Nx//2)`` sits at ``position``; the first voxel's centre (DICOM's
  ImagePositionPatient) is ``position − (Nx//2)·dx·read_dir − (Ny//2)·dy·phase_dir``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

#: LPS → RAS: negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Tick of ISMRMRD time stamps (acquisition and physiology) in seconds: 2.5 ms, Siemens' unit.
TICK_S = 2.5e-3

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Geometry:
    """The scanner geometry of one reconstructed slice.

    Attributes
    ----------
    matrix
        Image matrix ``(Ny, Nx)`` in voxels.
    pixel_spacing_mm
        ``(dy, dx)``: distance between rows, then between columns, in millimetres (DICOM's
        PixelSpacing order).
    slice_thickness_mm
        Slice thickness in millimetres.
    position
        Slice centre in LPS millimetres (the voxel ``(Ny//2, Nx//2)``).
    read_dir, phase_dir, slice_dir
        Unit vectors in LPS along image x (columns), image y (rows) and the slice normal.
    patient_position
        ``HFS``, ``FFS`` ... from the header's ``measurementInformation``, or None.
    frame_times_from
        Where the frame times came from (``acquisition_time_stamp``,
        ``physiology_time_stamp``, or a frame index), or None when unknown.
    trigger_delay_s
        Gated series (frame times from the physiology time stamps): the first frame's mean
        delay after the trigger in seconds, so that frame ``t`` lies at
        ``trigger_delay_s + frame_times[t]`` after it; None otherwise.
    known
        False for the stand-in of :meth:`identity` (a result without scanner geometry).
    header
        Scanner, study and patient fields copied from the raw header where present, keyed by
        DICOM keyword (``PatientName``, ``StudyDate``, ``Manufacturer``, ``RepetitionTime`` ...);
        nothing is invented.
    """

    matrix: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    slice_thickness_mm: float
    position: Vec3
    read_dir: Vec3
    phase_dir: Vec3
    slice_dir: Vec3
    patient_position: str | None = None
    frame_times_from: str | None = None
    trigger_delay_s: float | None = None
    known: bool = True
    header: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def identity(
        cls, matrix: tuple[int, int], pixel_spacing_mm: tuple[float, float] = (1.0, 1.0)
    ) -> Geometry:
        """Stand-in geometry: axial slice at the iso-centre, 1 mm voxels, ``known=False``."""
        return cls(
            matrix=(int(matrix[0]), int(matrix[1])),
            pixel_spacing_mm=(float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])),
            slice_thickness_mm=1.0,
            position=(0.0, 0.0, 0.0),
            read_dir=(1.0, 0.0, 0.0),
            phase_dir=(0.0, 1.0, 0.0),
            slice_dir=(0.0, 0.0, 1.0),
            known=False,
        )

    # -- derived quantities ---------------------------------------------------------------------
    @property
    def fov_mm(self) -> tuple[float, float]:
        """Field of view ``(y, x)`` in millimetres."""
        return (
            self.matrix[0] * self.pixel_spacing_mm[0],
            self.matrix[1] * self.pixel_spacing_mm[1],
        )

    def first_voxel_lps(self) -> np.ndarray:
        """``(3,)`` LPS centre of voxel ``(0, 0)``: DICOM's ImagePositionPatient."""
        ny, nx = self.matrix
        dy, dx = self.pixel_spacing_mm
        return (
            np.asarray(self.position, np.float64)
            - (nx // 2) * dx * np.asarray(self.read_dir, np.float64)
            - (ny // 2) * dy * np.asarray(self.phase_dir, np.float64)
        )

    def voxel_to_lps(self) -> np.ndarray:
        """``(4, 4)`` affine from voxel indices ``(x, y, slice, 1)`` to LPS millimetres."""
        dy, dx = self.pixel_spacing_mm
        a = np.eye(4)
        a[:3, 0] = dx * np.asarray(self.read_dir, np.float64)
        a[:3, 1] = dy * np.asarray(self.phase_dir, np.float64)
        a[:3, 2] = self.slice_thickness_mm * np.asarray(self.slice_dir, np.float64)
        a[:3, 3] = self.first_voxel_lps()
        return a

    def nifti_affine(self) -> np.ndarray:
        """``(4, 4)`` NIfTI affine: voxel ``(x, y, slice)`` of an ``(Nx, Ny, 1, T)`` array → RAS."""
        return LPS_TO_RAS @ self.voxel_to_lps()

    def image_orientation(self) -> list[float]:
        """DICOM ImageOrientationPatient: ``read_dir`` then ``phase_dir`` (six cosines, LPS)."""
        return [float(v) for v in (*self.read_dir, *self.phase_dir)]

    # -- storage --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (as stored in ``recon.h5``)."""
        d = asdict(self)
        d["header"] = dict(self.header)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`; unknown keys are ignored.

        Raises
        ------
        KeyError, TypeError, ValueError
            When a required field is missing or malformed (callers turn this into their own
            error type).
        """

        def vec(name: str) -> Vec3:
            v = [float(x) for x in d[name]]
            if len(v) != 3:
                raise ValueError(f"{name} must have 3 entries")
            return (v[0], v[1], v[2])

        m = d["matrix"]
        ps = d["pixel_spacing_mm"]
        return cls(
            matrix=(int(m[0]), int(m[1])),
            pixel_spacing_mm=(float(ps[0]), float(ps[1])),
            slice_thickness_mm=float(d["slice_thickness_mm"]),
            position=vec("position"),
            read_dir=vec("read_dir"),
            phase_dir=vec("phase_dir"),
            slice_dir=vec("slice_dir"),
            patient_position=d.get("patient_position"),
            frame_times_from=d.get("frame_times_from"),
            trigger_delay_s=None
            if d.get("trigger_delay_s") is None
            else float(d["trigger_delay_s"]),
            known=bool(d.get("known", True)),
            header={str(k): str(v) for k, v in dict(d.get("header") or {}).items()},
        )


# -- from the raw data ---------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n < 1e-6:
        return None
    return v / n


def geometry_from_readouts(
    head: Mapping[str, np.ndarray],
    *,
    matrix: tuple[int, int],
    fov_mm: tuple[float, float] | None,
    slice_thickness_mm: float | None = None,
    xml: str | None = None,
    frame_times_from: str | None = None,
    time_dim: str | None = None,
) -> Geometry:
    """The geometry of one slice from its readouts' headers and the ISMRMRD XML header.

    Parameters
    ----------
    head
        Per-readout header arrays of the slice's imaging readouts: ``position``,
        ``read_dir``, ``phase_dir``, ``slice_dir``, each ``(N, 3)`` (LPS, as ISMRMRD stores them).
    matrix
        Reconstructed image matrix ``(Ny, Nx)``.
    fov_mm
        Field of view ``(y, x)`` the image covers, in millimetres, or None (then 1 mm voxels).
    slice_thickness_mm
        The header's slice thickness (the field of view along z of a 2-D encoding), or None.
    xml
        The ISMRMRD XML header, for patient position and the scanner, study and patient fields.
    frame_times_from
        Where the frame times came from (kept for the writers).
    time_dim
        The encoding counter that holds time (``phase``, ``repetition`` ...): with frame times
        from the physiology time stamps, the readouts of its lowest value give the trigger
        delay of the first frame (``physiology_time_stamp`` ``(N, 3)`` in 2.5 ms ticks).

    Returns
    -------
    Geometry
        With ``known=False`` (and axial, iso-centre directions) when the readouts carry no
        direction cosines (all zero).
    """
    ny, nx = int(matrix[0]), int(matrix[1])
    if fov_mm is not None and min(fov_mm) > 0:
        spacing = (float(fov_mm[0]) / ny, float(fov_mm[1]) / nx)
    else:
        spacing = (1.0, 1.0)
    patient_position, fields = _header_fields(xml)
    thick = float(slice_thickness_mm) if slice_thickness_mm and slice_thickness_mm > 0 else 1.0

    def first(name: str) -> np.ndarray:
        arr = np.asarray(head.get(name, np.zeros((0, 3))), np.float64).reshape(-1, 3)
        return arr[0] if len(arr) else np.zeros(3)

    read, phase = _unit(first("read_dir")), _unit(first("phase_dir"))
    if read is None or phase is None:
        return replace(
            Geometry.identity((ny, nx), spacing),
            slice_thickness_mm=thick,
            frame_times_from=frame_times_from,
        )
    normal = _unit(first("slice_dir"))
    if normal is None:  # ISMRMRD's slice_dir is the right-handed normal read × phase
        normal = np.cross(read, phase)
    pos = np.asarray(head["position"], np.float64).reshape(-1, 3).mean(axis=0)
    delay = None
    stamps = head.get("physiology_time_stamp")
    if frame_times_from == "physiology_time_stamp" and stamps is not None and len(stamps):
        s0 = np.asarray(stamps, np.float64).reshape(len(stamps), -1)[:, 0]
        labels = head.get(time_dim or "")
        in_first = np.ones(len(s0), bool) if labels is None else labels == np.min(labels)
        delay = float(s0[in_first].mean() * TICK_S)
    return Geometry(
        matrix=(ny, nx),
        pixel_spacing_mm=spacing,
        slice_thickness_mm=thick,
        position=_vec(pos),
        read_dir=_vec(read),
        phase_dir=_vec(phase),
        slice_dir=_vec(normal),
        patient_position=patient_position,
        frame_times_from=frame_times_from,
        trigger_delay_s=delay,
        known=True,
        header=fields,
    )


def _vec(v: np.ndarray) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


# ISMRMRD XML path → DICOM keyword, and how to turn the text into the DICOM value
_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("subjectInformation/patientName", "PatientName", "text"),
    ("subjectInformation/patientID", "PatientID", "text"),
    ("subjectInformation/patientBirthdate", "PatientBirthDate", "date"),
    ("subjectInformation/patientGender", "PatientSex", "text"),
    ("subjectInformation/patientWeight_kg", "PatientWeight", "number"),
    ("subjectInformation/patientHeight_m", "PatientSize", "number"),
    ("studyInformation/studyDate", "StudyDate", "date"),
    ("studyInformation/studyTime", "StudyTime", "time"),
    ("studyInformation/studyID", "StudyID", "text"),
    ("studyInformation/accessionNumber", "AccessionNumber", "text"),
    ("studyInformation/referringPhysicianName", "ReferringPhysicianName", "text"),
    ("studyInformation/studyDescription", "StudyDescription", "text"),
    ("studyInformation/bodyPartExamined", "BodyPartExamined", "text"),
    ("measurementInformation/protocolName", "ProtocolName", "text"),
    ("measurementInformation/frameOfReferenceUID", "FrameOfReferenceUID", "text"),
    ("acquisitionSystemInformation/systemVendor", "Manufacturer", "text"),
    ("acquisitionSystemInformation/systemModel", "ManufacturerModelName", "text"),
    ("acquisitionSystemInformation/systemFieldStrength_T", "MagneticFieldStrength", "number"),
    ("acquisitionSystemInformation/institutionName", "InstitutionName", "text"),
    ("acquisitionSystemInformation/stationName", "StationName", "text"),
    ("sequenceParameters/TR", "RepetitionTime", "number"),
    ("sequenceParameters/TE", "EchoTime", "number"),
    ("sequenceParameters/flipAngle_deg", "FlipAngle", "number"),
)


def _header_fields(xml: str | None) -> tuple[str | None, dict[str, str]]:
    """Patient position and the DICOM fields the XML header gives (tolerant: any that parse)."""
    if not xml:
        return None, {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, {}
    for el in root.iter():  # with or without the ISMRMRD namespace
        if isinstance(el.tag, str):
            el.tag = el.tag.split("}", 1)[-1]
    out: dict[str, str] = {}
    for path, keyword, kind in _FIELDS:
        node = root.find(path)
        text = None if node is None or node.text is None else node.text.strip()
        if not text:
            continue
        if kind == "date":  # xs:date 2024-05-01 → DICOM DA 20240501
            text = text[:10].replace("-", "")
            if not (len(text) == 8 and text.isdigit()):
                continue
        elif kind == "time":  # xs:time 14:03:07.5 → DICOM TM 140307.5
            text = text.split("+")[0].rstrip("Z").replace(":", "")
            if not text.replace(".", "", 1).isdigit():
                continue
        elif kind == "number":
            try:
                value = float(text)
            except ValueError:
                continue
            if not math.isfinite(value):
                continue
            text = repr(value)
        out[keyword] = text
    freq = root.find("experimentalConditions/H1resonanceFrequency_Hz")
    if freq is not None and freq.text and freq.text.strip().isdigit():
        out["ImagingFrequency"] = repr(int(freq.text.strip()) / 1e6)  # DICOM wants MHz
    pp = root.find("measurementInformation/patientPosition")
    position = pp.text.strip() if pp is not None and pp.text and pp.text.strip() else None
    return position, out
