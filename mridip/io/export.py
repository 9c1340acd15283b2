"""Results in the formats viewers and pipelines open: NIfTI, DICOM, MRD images and MP4.

Each writer takes the image series ``(T, Ny, Nx)`` (complex), its frame times ``(T,)`` in
seconds and the scanner :class:`~mridip.geometry.Geometry`, and writes under a temporary name
that is renamed when complete. The libraries made for each format do the encoding: nibabel
(NIfTI), pydicom (DICOM), ismrmrd (MRD images) and imageio-ffmpeg (MP4). What each file holds
and how to open it: ``docs/outputs.md``.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mridip.errors import ResultError
from mridip.geometry import TICK_S, Geometry
from mridip.io.atomic import atomic_path

#: Every output ``mridip recon --formats`` knows, in the order they are written.
FORMATS = ("h5", "nifti", "dicom", "mrd", "gif", "mp4")
#: What ``mridip recon`` writes without ``--formats`` (``gif`` includes montage.png and loss.png).
DEFAULT_FORMATS = ("h5", "gif")
#: The formats ``mridip export`` writes from a ``recon.h5``.
EXPORT_FORMATS = ("nifti", "dicom", "mrd", "mp4")
#: File (or, for DICOM, folder) names inside a recon's output folder.
OUTPUT_NAMES = {
    "nifti": "recon.nii.gz",
    "dicom": "dicom",
    "mrd": "recon_mrd.h5",
    "mp4": "cine.mp4",
}
#: Frame period when a series has no frame times (the GIF's default as well).
DEFAULT_FRAME_S = 0.08


class GeometryWarning(UserWarning):
    """A result carries no scanner geometry: it was written with identity geometry."""


def parse_formats(text: str) -> tuple[str, ...]:
    """``"h5,nifti,dicom"`` → the formats in :data:`FORMATS` order.

    Raises
    ------
    ResultError
        An unknown name, or none at all.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ResultError(
            f"unknown output format {', '.join(unknown) or repr(text)}; "
            f"choose from {','.join(FORMATS)}"
        )
    return tuple(f for f in FORMATS if f in names)


def resolve_geometry(geometry: Geometry | None, image: np.ndarray, what: str) -> Geometry:
    """The geometry to write: ``geometry`` when it is known and fits, otherwise identity
    geometry with a :class:`GeometryWarning` that says so."""
    matrix = (int(image.shape[-2]), int(image.shape[-1]))
    if geometry is not None and geometry.matrix != matrix:
        warnings.warn(
            f"{what}: the geometry is for a {geometry.matrix[0]}×{geometry.matrix[1]} matrix but "
            f"the image is {matrix[0]}×{matrix[1]}; written with identity geometry",
            GeometryWarning,
            stacklevel=3,
        )
        return Geometry.identity(matrix)
    if geometry is None or not geometry.known:
        warnings.warn(
            f"{what} has no scanner geometry; written with identity geometry "
            "(axial, 1 mm voxels, centred at the iso-centre)",
            GeometryWarning,
            stacklevel=3,
        )
        return geometry or Geometry.identity(matrix)
    return geometry


def frame_period(frame_times: np.ndarray | None, geometry: Geometry | None) -> float | None:
    """Median frame spacing in seconds, or None when the frame times are only frame indices."""
    if frame_times is None or len(frame_times) < 2:
        return None
    if geometry is not None and str(geometry.frame_times_from or "").startswith("frame index"):
        return None
    dt = float(np.median(np.diff(np.asarray(frame_times, np.float64))))
    return dt if dt > 0 else None


def _check_series(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1:
        raise ResultError(f"image must be a series (T, Ny, Nx), got shape {image.shape}")
    return image


# -- NIfTI ---------------------------------------------------------------------------------------
def write_nifti(
    path: str | os.PathLike[str],
    image: np.ndarray,
    geometry: Geometry | None,
    frame_times: np.ndarray | None = None,
    *,
    complex_values: bool = False,
) -> Path:
    """Write a 4-D NIfTI-1 file ``(Nx, Ny, 1, T)`` with the scanner's affine (RAS).

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` (gzip-compressed).
    image
        ``(T, Ny, Nx)`` complex series.
    geometry
        Scanner geometry; None or unknown → identity geometry and a :class:`GeometryWarning`.
    frame_times
        ``(T,)`` seconds; their median spacing becomes ``pixdim[4]`` (units: seconds).
    complex_values
        Store complex64 instead of the float32 magnitude.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ResultError
        A name without ``.nii``/``.nii.gz``, a folder in the way, or a malformed series.
    """
    out = Path(path)
    check_target("nifti", out)
    image = _check_series(image)
    g = resolve_geometry(geometry, image, f"NIfTI {out.name}")
    with atomic_path(out) as tmp:
        _nifti(tmp, out.name, image, g, frame_period(frame_times, geometry), complex_values)
    return out


def _nifti(
    tmp: Path, name: str, image: np.ndarray, g: Geometry, dt: float | None, complex_values: bool
) -> None:
    import nibabel as nib

    values = image.astype(np.complex64) if complex_values else np.abs(image).astype(np.float32)
    # (T, Ny, Nx) → (Nx, Ny, 1, T): NIfTI's first index runs along the readout (read_dir)
    data = np.ascontiguousarray(values.transpose(2, 1, 0)[:, :, None, :])
    affine = g.nifti_affine()
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    img.set_sform(affine, code="scanner")
    img.set_qform(affine, code="scanner")
    zooms = (*g.pixel_spacing_mm[::-1], g.slice_thickness_mm, dt if dt is not None else 1.0)
    hdr.set_zooms(zooms)
    hdr.set_xyzt_units(xyz="mm", t="sec" if dt is not None else "unknown")
    hdr.set_dim_info(freq=0, phase=1, slice=2)
    hdr["descrip"] = b"mridip reconstruction"
    blob = img.to_bytes()
    if name.lower().endswith(".gz"):  # the temporary name hides the extension from nibabel
        blob = gzip.compress(blob, compresslevel=6, mtime=0)
    tmp.write_bytes(blob)


def check_target(kind: str, path: Path) -> None:
    """Refuse an output path that cannot hold ``kind`` (before anything is computed or written).

    Raises
    ------
    ResultError
        A NIfTI name without ``.nii``/``.nii.gz``, a folder where a file goes, a file where
        the DICOM folder goes.
    """
    name = path.name.lower()
    if kind == "nifti" and not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ResultError(f"NIfTI output must end in .nii or .nii.gz: {path}")
    if kind == "dicom":
        if path.exists() and not path.is_dir():
            raise ResultError(f"{path} is a file; the DICOM series needs a folder")
    elif path.is_dir():
        raise ResultError(f"{path} is a folder; give a file name for the {kind} output")


# -- DICOM ---------------------------------------------------------------------------------------
def _ds(value: float) -> str:
    """A decimal string that fits DICOM's 16 characters."""
    from pydicom.valuerep import format_number_as_ds

    return str(format_number_as_ds(float(value)))


def _uint16_scale(mag: np.ndarray) -> tuple[str, float]:
    """Rescale slope (as written and as a number) that maps the series' maximum to 65535."""
    peak = float(mag.max())
    slope_text = _ds(peak / 65535.0 if peak > 0 else 1.0)
    slope = float(slope_text)
    if slope <= 0:
        slope_text, slope = "1", 1.0
    return slope_text, slope


def write_dicom(
    folder: str | os.PathLike[str],
    image: np.ndarray,
    geometry: Geometry | None,
    frame_times: np.ndarray | None = None,
    *,
    method: str = "",
    series_number: int = 1,
) -> list[Path]:
    """Write one MR image series: one DICOM file per frame, ``IM_0001.dcm`` ….

    Every instance carries ImagePositionPatient and ImageOrientationPatient from the geometry
    (LPS), PixelSpacing, SliceThickness, TriggerTime (when the frame times are real: the frame
    time in ms, after the trigger for a gated series, else after the first frame), new Study,
    Series and SOP Instance UIDs, a series description naming the method, and the magnitude as
    uint16 with RescaleSlope (one slope for the whole series, the series maximum mapped to
    65535) and a window of the 99.5th percentile. Patient, study and scanner fields are copied
    from the raw header where present; type-2 fields the header lacks are left empty.

    Parameters
    ----------
    folder
        Output folder; written as a whole under a temporary name and renamed. An existing
        folder is replaced only when it holds nothing but ``.dcm`` files.
    image
        ``(T, Ny, Nx)`` complex series.
    geometry
        Scanner geometry; None or unknown → identity geometry and a :class:`GeometryWarning`.
    frame_times
        ``(T,)`` seconds.
    method
        The reconstruction method, named in SeriesDescription.
    series_number
        SeriesNumber.

    Returns
    -------
    list of Path
        The files written, in frame order.

    Raises
    ------
    ResultError
        A file in the way, a folder holding other files, or a malformed series.
    """
    out = Path(folder)
    check_target("dicom", out)
    image = _check_series(image)
    g = resolve_geometry(geometry, image, f"DICOM series {out.name}")
    dt = frame_period(frame_times, geometry)
    with atomic_dir(out) as tmp:
        names = _dicom(tmp, image, g, frame_times, dt, method, series_number)
    return [out / n for n in names]


def _dicom(
    tmp: Path,
    image: np.ndarray,
    g: Geometry,
    frame_times: np.ndarray | None,
    dt: float | None,
    method: str,
    series_number: int = 1,
) -> list[str]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from mridip import __version__

    mag = np.abs(image).astype(np.float64)
    t, ny, nx = mag.shape
    slope_text, slope = _uint16_scale(mag)
    pixels = np.clip(np.round(mag / slope), 0, 65535).astype(np.uint16)
    hi = float(np.percentile(mag, 99.5)) or float(mag.max()) or 1.0
    times_ms = None
    if dt is not None and frame_times is not None:  # after the trigger when it is known
        times_ms = 1000.0 * (np.asarray(frame_times, np.float64) + (g.trigger_delay_s or 0.0))
    now = datetime.datetime.now()
    study_uid, series_uid = generate_uid(), generate_uid()
    frame_uid = g.header.get("FrameOfReferenceUID") or generate_uid()
    ipp = [_ds(v) for v in g.first_voxel_lps()]
    iop = [_ds(v) for v in g.image_orientation()]
    normal = np.asarray(g.slice_dir, np.float64)
    slice_location = _ds(float(np.dot(g.first_voxel_lps(), normal)))
    description = f"mridip {method}".strip() + " reconstruction"
    text_fields = {k: v for k, v in g.header.items() if k != "FrameOfReferenceUID"}
    numeric = {"PatientWeight", "PatientSize", "MagneticFieldStrength", "RepetitionTime"}
    numeric |= {"EchoTime", "FlipAngle", "ImagingFrequency"}

    def instance(f: int) -> Dataset:
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationVersionName = f"MRIDIP_{__version__}"[:16]
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names from the header may need it
        ds.ImageType = ["DERIVED", "PRIMARY", "M", "MRIDIP"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = now.strftime("%Y%m%d")
        ds.InstanceCreationTime = now.strftime("%H%M%S")
        ds.Modality = "MR"
        # type-2 fields: present, empty unless the header gives them
        for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
            setattr(ds, key, "")
        for key in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID"):
            setattr(ds, key, "")
        ds.AccessionNumber = ""
        ds.Manufacturer = ""
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = ""
        ds.EchoTrainLength = ""
        for key, value in text_fields.items():
            setattr(ds, key, _ds(float(value)) if key in numeric else value)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = f + 1
        ds.AcquisitionNumber = 1
        if g.patient_position:
            ds.PatientPosition = g.patient_position
        ds.ScanningSequence = "RM"  # research mode: the header does not name the sequence
        ds.SequenceVariant = "NONE"
        ds.SoftwareVersions = f"mridip {__version__}"
        ds.ImagePositionPatient = ipp
        ds.ImageOrientationPatient = iop
        ds.SliceLocation = slice_location
        ds.PixelSpacing = [_ds(g.pixel_spacing_mm[0]), _ds(g.pixel_spacing_mm[1])]
        ds.SliceThickness = _ds(g.slice_thickness_mm)
        ds.TemporalPositionIdentifier = f + 1
        ds.NumberOfTemporalPositions = t
        if times_ms is not None:
            ds.TriggerTime = _ds(times_ms[f])
            ds.CardiacNumberOfImages = t
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = slope_text
        ds.RescaleType = "US"  # unspecified units: the reconstruction's intensity scale
        ds.WindowCenter = _ds(hi / 2)
        ds.WindowWidth = _ds(hi)
        ds.PixelData = np.ascontiguousarray(pixels[f]).tobytes()
        return ds

    files = [f"IM_{f + 1:04d}.dcm" for f in range(t)]
    for f, name in enumerate(files):
        instance(f).save_as(tmp / name, enforce_file_format=True)
    return files


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    An existing ``path`` is replaced only when it holds nothing but ``.dcm`` files (an earlier
    series), so a mistyped ``-o`` cannot delete someone's folder.

    Raises
    ------
    ResultError
        ``path`` is a file, or a folder that holds anything other than ``.dcm`` files.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise ResultError(f"{final} is a file; the DICOM series needs a folder")
    if final.is_dir():
        other = [p.name for p in final.iterdir() if p.suffix.lower() != ".dcm" or p.is_dir()]
        if other:
            raise ResultError(
                f"{final} holds other files ({', '.join(sorted(other)[:3])}); "
                "give an empty or new folder for the DICOM series"
            )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    old: Path | None = None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes folders private; outputs are not
        for p in tmp.iterdir():
            os.chmod(p, 0o666 & ~umask)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / "series")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# -- MRD (ISMRMRD images) ------------------------------------------------------------------------
def _mrd_header_xml(g: Geometry, n_frames: int) -> str:
    """A minimal ISMRMRD header describing the image space (the raw file's is not kept)."""
    import ismrmrd.xsd as xsd

    ny, nx = g.matrix
    fov_y, fov_x = g.fov_mm
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=nx, y=ny, z=1),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fov_x, y=fov_y, z=g.slice_thickness_mm),
    )
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
        phase=xsd.limitType(minimum=0, maximum=n_frames - 1, center=0),
        slice=xsd.limitType(minimum=0, maximum=0, center=0),
    )
    enc = xsd.encodingType(
        encodedSpace=space,
        reconSpace=space,
        encodingLimits=limits,
        trajectory=xsd.trajectoryType("cartesian"),
    )
    kwargs = {}
    if g.patient_position:
        try:
            kwargs["measurementInformation"] = xsd.measurementInformationType(
                patientPosition=xsd.patientPositionType(g.patient_position)
            )
        except ValueError:  # a value outside the schema's list: leave it out
            pass
    vendor = g.header.get("Manufacturer")
    if vendor:
        kwargs["acquisitionSystemInformation"] = xsd.acquisitionSystemInformationType(
            systemVendor=vendor
        )
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(float(g.header.get("ImagingFrequency", 0)) * 1e6))
        ),
        encoding=[enc],
        **kwargs,
    )
    return xsd.ToXML(header)


def write_mrd(
    path: str | os.PathLike[str],
    image: np.ndarray,
    geometry: Geometry | None,
    frame_times: np.ndarray | None = None,
    *,
    method: str = "",
    complex_values: bool = False,
) -> Path:
    """Write the series as MRD (ISMRMRD) images, one image per frame, in group ``dataset``.

    Each image header carries ``matrix_size``, ``field_of_view`` (mm), ``position``,
    ``read_dir``, ``phase_dir``, ``slice_dir`` (LPS, the slice centre as ISMRMRD defines it),
    ``phase`` and ``image_index`` (the frame), and the frame time in ``acquisition_time_stamp``
    (2.5 ms ticks); the images are stored as ``dataset/image_0`` beside an XML header.

    Parameters
    ----------
    path
        Output ``.h5``.
    image
        ``(T, Ny, Nx)`` complex series.
    geometry
        Scanner geometry; None or unknown → identity geometry and a :class:`GeometryWarning`.
    frame_times
        ``(T,)`` seconds.
    method
        Named in each image's meta attributes (``ImageComment``).
    complex_values
        Store complex64 (``IMTYPE_COMPLEX``) instead of the float32 magnitude.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ResultError
        A folder in the way or a malformed series.
    """
    out = Path(path)
    check_target("mrd", out)
    image = _check_series(image)
    g = resolve_geometry(geometry, image, f"MRD {out.name}")
    with atomic_path(out) as tmp:
        _mrd(tmp, image, g, frame_times, method, complex_values)
    return out


def _mrd(
    tmp: Path,
    image: np.ndarray,
    g: Geometry,
    frame_times: np.ndarray | None,
    method: str,
    complex_values: bool,
) -> None:
    import ismrmrd

    fov_y, fov_x = g.fov_mm
    t = image.shape[0]
    times = np.asarray(frame_times, np.float64) if frame_times is not None else np.arange(t) * 1.0
    ticks = np.round((times - times[0]) / TICK_S).astype(np.int64)
    values = image.astype(np.complex64) if complex_values else np.abs(image).astype(np.float32)
    attrs = ismrmrd.Meta()
    attrs["ImageComment"] = f"mridip {method}".strip()
    attrs["DataRole"] = "Image"
    meta_text = attrs.serialize()
    kind = ismrmrd.IMTYPE_COMPLEX if complex_values else ismrmrd.IMTYPE_MAGNITUDE
    ds = ismrmrd.Dataset(str(tmp), "dataset", create_if_needed=True)
    try:
        ds.write_xml_header(_mrd_header_xml(g, t))
        for f in range(t):  # one image per frame, as MRD tools expect
            img = ismrmrd.Image.from_array(np.ascontiguousarray(values[f][None]))
            img.image_type = kind
            img.field_of_view[:] = (fov_x, fov_y, g.slice_thickness_mm)
            img.position[:] = g.position
            img.read_dir[:] = g.read_dir
            img.phase_dir[:] = g.phase_dir
            img.slice_dir[:] = g.slice_dir
            img.phase = f
            img.slice = 0
            img.image_index = f + 1
            img.image_series_index = 1
            img.acquisition_time_stamp = int(ticks[f])
            if g.trigger_delay_s is not None:  # gated: the frame's delay after the trigger
                img.physiology_time_stamp[0] = int(round((times[f] + g.trigger_delay_s) / TICK_S))
            img.attribute_string = meta_text
            ds.append_image("image_0", img)
    finally:
        ds.close()


# -- MP4 -----------------------------------------------------------------------------------------
#: An MP4 shorter than this on its short side is enlarged by whole-voxel repetition.
MP4_MIN_SIDE = 256


def write_mp4(
    path: str | os.PathLike[str],
    image: np.ndarray,
    frame_times: np.ndarray | None = None,
    *,
    geometry: Geometry | None = None,
) -> Path:
    """Write the magnitude series as an H.264 MP4 at the series' own frame rate.

    The frame rate is one over the median frame spacing, clipped to 1–120 fps, or 12.5 fps when
    the frame times are only frame indices. Each voxel becomes a square of whole pixels so the
    short side is at least :data:`MP4_MIN_SIDE` (players blur tiny videos), and an odd size is
    padded by one black row or column (H.264's 4:2:0 needs even sizes). Intensities as in the
    GIF: the 99.5th percentile is white.

    Parameters
    ----------
    path
        Output ``.mp4``.
    image
        ``(T, Ny, Nx)`` series (complex or real; the magnitude is shown).
    frame_times
        ``(T,)`` seconds.
    geometry
        Only to tell real frame times from frame indices.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ResultError
        A folder in the way or a malformed series.
    """
    out = Path(path)
    check_target("mp4", out)
    image = _check_series(image)
    with atomic_path(out) as tmp:
        _mp4(tmp, image, frame_period(frame_times, geometry))
    return out


def _mp4(tmp: Path, image: np.ndarray, dt: float | None) -> None:
    import imageio_ffmpeg

    mag = np.abs(image)
    hi = float(np.percentile(mag, 99.5)) or float(mag.max()) or 1.0
    frames = (np.clip(mag / hi, 0.0, 1.0) * 255).round().astype(np.uint8)
    t, ny, nx = frames.shape
    rep = max(1, -(-MP4_MIN_SIDE // min(ny, nx)))
    frames = frames.repeat(rep, axis=1).repeat(rep, axis=2)
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2)))
    h, w = frames.shape[1:]
    fps = float(np.clip(1.0 / dt, 1.0, 120.0)) if dt is not None else 1.0 / DEFAULT_FRAME_S
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (w, h),
        pix_fmt_in="gray",
        pix_fmt_out="yuv420p",
        fps=fps,
        codec="libx264",
        macro_block_size=2,
        ffmpeg_log_level="error",
        output_params=["-f", "mp4", "-movflags", "+faststart"],  # the temporary name has no .mp4
    )
    writer.send(None)
    try:
        for f in range(t):
            writer.send(np.ascontiguousarray(frames[f]))
    finally:
        writer.close()


def write_to_temporary(
    kind: str,
    tmp: Path,
    final: Path,
    image: np.ndarray,
    geometry: Geometry,
    frame_times: np.ndarray | None,
    *,
    dt: float | None,
    method: str = "",
    complex_values: bool = False,
) -> None:
    """Write one format into a temporary target that the caller renames (``recon --formats``
    renames every output together); ``geometry`` is already resolved (see
    :func:`resolve_geometry`), ``dt`` the frame period (:func:`frame_period`)."""
    if kind == "nifti":
        _nifti(tmp, final.name, image, geometry, dt, complex_values)
    elif kind == "dicom":
        _dicom(tmp, image, geometry, frame_times, dt, method)
    elif kind == "mrd":
        _mrd(tmp, image, geometry, frame_times, method, complex_values)
    elif kind == "mp4":
        _mp4(tmp, image, dt)
    else:
        raise ResultError(f"unknown export format {kind!r}; choose from {','.join(EXPORT_FORMATS)}")
