"""Outputs that viewers open: NIfTI, DICOM, MRD images and MP4 with the scanner's geometry.

One oblique simulated scan (read and phase directions rotated, slice centre off the iso-centre)
is reconstructed once through the command line with every format; the tests compare what each
file says about where the slice lies with values computed here by hand.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from mridip.cli import main
from mridip.errors import ConfigError, ResultError
from mridip.geometry import Geometry, geometry_from_readouts
from mridip.io.export import GeometryWarning
from mridip.io.results import export_recon, read_recon, write_recon

N, T = 32, 4
FOV = 300.0  # mm, mridip simulate's default
THICK = 8.0  # mm, the simulated header's slice thickness
POS = np.array([10.0, -20.0, 35.0])  # slice centre, LPS mm
A, B = math.radians(30), math.radians(20)
READ = np.array([math.cos(A), math.sin(A), 0.0])  # in-plane rotation by 30° ...
PHASE = np.array([-math.sin(A) * math.cos(B), math.cos(A) * math.cos(B), math.sin(B)])  # ... tilt
NORMAL = np.cross(READ, PHASE)
DX = FOV / N
# centre of voxel (0, 0): the slice centre is voxel (N//2, N//2) of a centred FFT
FIRST_LPS = POS - (N // 2) * DX * READ - (N // 2) * DX * PHASE
ALL = "h5,nifti,dicom,mrd,gif,mp4"


def cli(args: list[str]) -> int:
    """Exit code of ``mridip ARGS``, whether the parser or the command ends it."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


def _csv(v: np.ndarray) -> str:
    return ",".join(repr(float(x)) for x in v)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory) -> Path:
    """``mridip simulate`` an oblique Cartesian cine, then ``mridip recon --formats`` all."""
    d = tmp_path_factory.mktemp("oblique")
    raw = d / "oblique.h5"
    args = ["simulate", str(raw), "--trajectory", "cartesian", "--matrix", str(N)]
    args += ["--frames", str(T), "--coils", "4", "--acceleration", "2", "--seed", "3"]
    # "=": a vector that starts with a minus sign would read as an option
    args += [f"--position={_csv(POS)}", f"--read-dir={_csv(READ)}", f"--phase-dir={_csv(PHASE)}"]
    assert main(args) == 0
    out = d / "out"
    code = main(
        ["recon", str(raw), "-o", str(out), "--method", "zf", "--maps", "file", "--quiet"]
        + ["--formats", ALL]
    )
    assert code == 0
    return out


def test_hand_computed_position_is_right():
    # the formula above, checked once against numbers worked out on paper
    np.testing.assert_allclose(FIRST_LPS, [-49.427, -217.070, -16.303], atol=1e-3)
    assert abs(READ @ PHASE) < 1e-12


def test_geometry_reaches_recon_h5(oblique):
    g = read_recon(oblique / "recon.h5").geometry
    assert g is not None and g.known
    assert g.matrix == (N, N)
    np.testing.assert_allclose(g.pixel_spacing_mm, (DX, DX))
    assert g.slice_thickness_mm == THICK
    np.testing.assert_allclose(g.position, POS, atol=1e-4)
    np.testing.assert_allclose(g.read_dir, READ, atol=1e-6)  # float32 in the raw file
    np.testing.assert_allclose(g.phase_dir, PHASE, atol=1e-6)
    np.testing.assert_allclose(g.slice_dir, NORMAL, atol=1e-6)
    assert g.patient_position == "HFS"
    assert g.frame_times_from == "acquisition_time_stamp"
    assert g.header["Manufacturer"] == "mridip-simulate"
    assert "PatientName" not in g.header  # the simulated header names no patient


def test_nifti_affine_and_data(oblique):
    import nibabel as nib

    img = nib.load(oblique / "recon.nii.gz")
    assert img.shape == (N, N, 1, T)
    flip = np.diag([-1.0, -1.0, 1.0])  # LPS → RAS
    expected = np.eye(4)
    expected[:3, 0] = flip @ (DX * READ)
    expected[:3, 1] = flip @ (DX * PHASE)
    expected[:3, 2] = flip @ (THICK * NORMAL)
    expected[:3, 3] = flip @ FIRST_LPS
    np.testing.assert_allclose(img.affine, expected, atol=1e-3)
    np.testing.assert_allclose(img.get_qform(), expected, atol=1e-3)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    rec = read_recon(oblique / "recon.h5")
    data = np.asarray(img.dataobj)
    np.testing.assert_allclose(data[:, :, 0, :], np.abs(rec.image).transpose(2, 1, 0), rtol=1e-6)
    assert rec.frame_times is not None
    dt = float(np.median(np.diff(rec.frame_times)))
    assert img.header.get_zooms()[3] == pytest.approx(dt, rel=1e-5)
    assert img.header.get_xyzt_units() == ("mm", "sec")


def _series(folder: Path):
    import pydicom

    files = sorted(folder.glob("*.dcm"))
    return [pydicom.dcmread(f) for f in files]


def test_dicom_position_orientation_and_pixels(oblique):
    series = _series(oblique / "dicom")
    assert len(series) == T
    rec = read_recon(oblique / "recon.h5")
    assert rec.frame_times is not None
    mag = np.abs(rec.image)
    slope = float(series[0].RescaleSlope)
    assert len({ds.SOPInstanceUID for ds in series}) == T
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
    assert len({ds.StudyInstanceUID for ds in series}) == 1
    for t, ds in enumerate(series):
        assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], FIRST_LPS, atol=1e-3
        )
        iop = [float(v) for v in ds.ImageOrientationPatient]
        np.testing.assert_allclose(iop, [*READ, *PHASE], atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [DX, DX])
        assert float(ds.SliceThickness) == THICK
        assert float(ds.TriggerTime) == pytest.approx(1000 * rec.frame_times[t], abs=1e-3)
        assert ds.InstanceNumber == t + 1
        assert "zf" in ds.SeriesDescription
        assert ds.PatientPosition == "HFS"
        assert ds.Manufacturer == "mridip-simulate"
        assert ds.PatientName == "" and ds.PatientID == ""  # nothing invented
        assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.shape == (N, N)
        assert float(ds.RescaleIntercept) == 0
        assert float(ds.RescaleSlope) == slope
        # magnitude round trip: within half a quantisation step
        np.testing.assert_allclose(ds.pixel_array * slope, mag[t], atol=0.51 * slope)
        assert 0 < float(ds.WindowWidth) <= mag.max() + slope


def test_mrd_images_read_back_with_geometry(oblique):
    import ismrmrd

    rec = read_recon(oblique / "recon.h5")
    ds = ismrmrd.Dataset(str(oblique / "recon_mrd.h5"), "dataset", create_if_needed=False)
    try:
        assert ds.number_of_images("image_0") == T
        header = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
        assert header.encoding[0].reconSpace.matrixSize.x == N
        for t in range(T):
            img = ds.read_image("image_0", t)
            assert img.data.shape == (1, 1, N, N)
            np.testing.assert_allclose(img.data[0, 0], np.abs(rec.image[t]), rtol=1e-6)
            np.testing.assert_allclose(list(img.position), POS, atol=1e-4)
            np.testing.assert_allclose(list(img.read_dir), READ, atol=1e-6)
            np.testing.assert_allclose(list(img.phase_dir), PHASE, atol=1e-6)
            np.testing.assert_allclose(list(img.slice_dir), NORMAL, atol=1e-6)
            np.testing.assert_allclose(list(img.field_of_view), [FOV, FOV, THICK], rtol=1e-6)
            assert img.phase == t and img.image_type == ismrmrd.IMTYPE_MAGNITUDE
    finally:
        ds.close()


def test_mp4_has_a_frame_per_image(oblique):
    import imageio_ffmpeg

    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(oblique / "cine.mp4"))
    assert frames == T
    rec = read_recon(oblique / "recon.h5")
    assert rec.frame_times is not None
    dt = float(np.median(np.diff(rec.frame_times)))
    assert secs == pytest.approx(T * dt, rel=0.05)  # the series' own frame rate
    reader = imageio_ffmpeg.read_frames(str(oblique / "cine.mp4"))
    meta = next(reader)
    reader.close()
    assert tuple(meta["size"]) == (256, 256)  # 32² drawn as 8×8-pixel squares
    assert (oblique / "cine.gif").exists() and (oblique / "montage.png").exists()


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")
def test_dcm2niix_agrees_with_our_nifti(oblique, tmp_path):
    import nibabel as nib

    run = subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "series", "-o", str(tmp_path)]
        + [str(oblique / "dicom")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    made = sorted(tmp_path.glob("*.nii"))
    assert len(made) == 1, run.stdout
    theirs = nib.as_closest_canonical(nib.load(made[0]))
    ours = nib.as_closest_canonical(nib.load(oblique / "recon.nii.gz"))
    # dcm2niix stores the rows bottom-up; in a common (canonical) voxel order both agree
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-3)
    a, b = np.asarray(ours.get_fdata()), np.asarray(theirs.get_fdata())
    assert b.size == a.size
    slope = float(_series(oblique / "dicom")[0].RescaleSlope)
    np.testing.assert_allclose(b.reshape(a.shape), a, atol=0.51 * slope)


def test_export_from_recon_h5_alone(oblique, tmp_path, capsys):
    import nibabel as nib

    recon = oblique / "recon.h5"
    for to, out in (
        ("nifti", tmp_path / "x.nii"),
        ("dicom", tmp_path / "dcm"),
        ("mrd", tmp_path / "x_mrd.h5"),
        ("mp4", tmp_path / "x.mp4"),
    ):
        assert main(["export", str(recon), "--to", to, "-o", str(out)]) == 0
        assert out.exists()
    assert capsys.readouterr().err == ""  # the recon has geometry: no warning
    a, b = nib.load(tmp_path / "x.nii"), nib.load(oblique / "recon.nii.gz")
    np.testing.assert_array_equal(a.affine, b.affine)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert len(_series(tmp_path / "dcm")) == T
    # complex NIfTI on request
    args = ["export", str(recon), "--to", "nifti", "-o", str(tmp_path / "c.nii.gz")]
    assert main(args) == 0
    assert not np.iscomplexobj(np.asarray(nib.load(tmp_path / "c.nii.gz").dataobj))
    assert main([*args, "--complex"]) == 0  # replaces the magnitude file
    c = nib.load(tmp_path / "c.nii.gz")
    assert np.iscomplexobj(np.asarray(c.dataobj))
    # a second export into the same DICOM folder replaces the series
    assert main(["export", str(recon), "--to", "dicom", "-o", str(tmp_path / "dcm")]) == 0
    assert len(list((tmp_path / "dcm").iterdir())) == T


@pytest.mark.parametrize(
    "args, words",
    [
        (["export", "{d}/missing.h5", "--to", "nifti", "-o", "{d}/x.nii.gz"], "no such file"),
        (["export", "{recon}", "--to", "nifti", "-o", "{d}/x.png"], ".nii"),
        (["export", "{recon}", "--to", "dicom", "-o", "{recon}"], "is a file"),
        (["export", "{recon}", "--to", "mp4", "-o", "{d}"], "is a folder"),
        (["export", "{d}/not_h5.txt", "--to", "mp4", "-o", "{d}/x.mp4"], "not an HDF5"),
        (["export", "{recon}", "--to", "gif", "-o", "{d}/x.gif"], "invalid choice"),
    ],
)
def test_bad_paths_give_one_line_and_exit_2(oblique, tmp_path, capsys, args, words):
    (tmp_path / "not_h5.txt").write_text("hello")
    fill = {"d": str(tmp_path), "recon": str(oblique / "recon.h5")}
    assert cli([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".*tmp"))


def test_dicom_refuses_a_folder_with_other_files(oblique, tmp_path):
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(ResultError, match="holds other files"):
        export_recon(oblique / "recon.h5", "dicom", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_result_without_geometry_writes_identity_with_a_warning(tmp_path, capsys):
    import nibabel as nib

    rng = np.random.default_rng(0)
    image = (rng.standard_normal((3, 8, 10)) + 1j * rng.standard_normal((3, 8, 10))).astype(
        np.complex64
    )
    write_recon(tmp_path / "r", image, method="zf", config={}, pictures=False)
    with pytest.warns(GeometryWarning, match="no scanner geometry"):
        export_recon(tmp_path / "r" / "recon.h5", "nifti", tmp_path / "r.nii.gz")
    img = nib.load(tmp_path / "r.nii.gz")
    assert img.shape == (10, 8, 1, 3)
    np.testing.assert_allclose(img.affine[:3, :3], np.diag([-1.0, -1.0, 1.0]))
    np.testing.assert_allclose(img.affine[:3, 3], [5.0, 4.0, 0.0])  # voxel (5, 4) at 0
    # the command line: one warning line, exit code 0
    args = ["export", str(tmp_path / "r" / "recon.h5"), "--to", "dicom", "-o", str(tmp_path / "d")]
    with warnings.catch_warnings():  # as outside pytest: warnings print, they do not raise
        warnings.simplefilter("always", GeometryWarning)
        assert main(args) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "identity geometry" in err[0]


def test_patient_and_study_fields_are_copied_not_invented():
    xml = """<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
      <subjectInformation><patientName>Doe^Jane</patientName><patientID>P17</patientID>
        <patientBirthdate>1980-02-29</patientBirthdate><patientGender>F</patientGender>
      </subjectInformation>
      <studyInformation><studyDate>2024-05-01</studyDate><studyTime>14:03:07</studyTime>
      </studyInformation>
      <measurementInformation><patientPosition>FFS</patientPosition></measurementInformation>
      <encoding/></ismrmrdHeader>"""
    head = {
        "position": np.zeros((2, 3)),
        "read_dir": np.array([[0.0, 1.0, 0.0]] * 2),
        "phase_dir": np.array([[1.0, 0.0, 0.0]] * 2),
        "slice_dir": np.zeros((2, 3)),  # missing: read × phase
    }
    g = geometry_from_readouts(head, matrix=(8, 8), fov_mm=(80.0, 80.0), xml=xml)
    assert g.header == {
        "PatientName": "Doe^Jane",
        "PatientID": "P17",
        "PatientBirthDate": "19800229",
        "PatientSex": "F",
        "StudyDate": "20240501",
        "StudyTime": "140307",
    }
    assert g.patient_position == "FFS"
    np.testing.assert_allclose(g.slice_dir, [0.0, 0.0, -1.0])
    assert Geometry.from_dict(g.to_dict()) == g


def test_readouts_without_directions_give_unknown_geometry():
    head = {k: np.zeros((3, 3)) for k in ("position", "read_dir", "phase_dir", "slice_dir")}
    g = geometry_from_readouts(head, matrix=(8, 6), fov_mm=(80.0, 60.0), slice_thickness_mm=5.0)
    assert not g.known and g.pixel_spacing_mm == (10.0, 10.0) and g.slice_thickness_mm == 5.0


def test_simulate_refuses_a_skewed_slice():
    from mridip.simulate import SimulationConfig

    with pytest.raises(ConfigError, match="perpendicular"):
        SimulationConfig(read_dir=(1.0, 0.0, 0.0), phase_dir=(0.6, 0.8, 0.0)).check()


def test_formats_flag_rejects_unknown_names(tmp_path, capsys):
    args = ["recon", str(tmp_path / "x.h5"), "-o", str(tmp_path), "--formats", "h5,tiff"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiff" in err[0]


def test_recon_h5_keeps_geometry_as_json(oblique):
    with h5py.File(oblique / "recon.h5", "r") as f:
        assert "geometry" in f.attrs


def test_frame_indices_are_not_written_as_times(tmp_path):
    import nibabel as nib
    import pydicom

    from mridip.io.export import write_dicom, write_nifti

    g = Geometry(
        matrix=(6, 4),
        pixel_spacing_mm=(2.0, 2.0),
        slice_thickness_mm=5.0,
        position=(0.0, 0.0, 0.0),
        read_dir=(1.0, 0.0, 0.0),
        phase_dir=(0.0, 1.0, 0.0),
        slice_dir=(0.0, 0.0, 1.0),
        frame_times_from="frame index: no increasing time stamps",
        header={"FrameOfReferenceUID": "1.2.3.4", "PatientName": "Doe^Jane"},
    )
    image = np.ones((3, 6, 4), np.complex64)
    write_nifti(tmp_path / "x.nii", image, g, np.arange(3.0))
    hdr = nib.load(tmp_path / "x.nii").header
    assert hdr.get_xyzt_units() == ("mm", "unknown") and hdr.get_zooms()[3] == 1.0
    files = write_dicom(tmp_path / "d", image, g, np.arange(3.0), method="tv")
    ds = pydicom.dcmread(files[0])
    assert "TriggerTime" not in ds
    assert ds.FrameOfReferenceUID == "1.2.3.4" and ds.PatientName == "Doe^Jane"
    real = dataclasses.replace(g, frame_times_from="physiology_time_stamp")
    write_nifti(tmp_path / "y.nii", image, real, np.array([0.0, 0.05, 0.1]))
    hdr = nib.load(tmp_path / "y.nii").header
    assert hdr.get_xyzt_units() == ("mm", "sec") and hdr.get_zooms()[3] == pytest.approx(0.05)


def test_gated_series_keeps_the_trigger_delay(tmp_path):
    import pydicom

    from mridip.io.export import write_dicom

    # two cardiac phases of two readouts each, at 40 and 42 ms, then 80 and 82 ms after the R wave
    ticks = np.array([16, 16.8, 32, 32.8])  # 2.5 ms
    head = {
        "position": np.zeros((4, 3)),
        "read_dir": np.array([[1.0, 0.0, 0.0]] * 4),
        "phase_dir": np.array([[0.0, 1.0, 0.0]] * 4),
        "slice_dir": np.array([[0.0, 0.0, 1.0]] * 4),
        "physiology_time_stamp": np.stack([ticks, np.zeros(4), np.zeros(4)], axis=1),
        "phase": np.array([0, 0, 1, 1]),
    }
    g = geometry_from_readouts(
        head,
        matrix=(4, 4),
        fov_mm=(40.0, 40.0),
        frame_times_from="physiology_time_stamp",
        time_dim="phase",
    )
    assert g.trigger_delay_s == pytest.approx(0.041)
    files = write_dicom(tmp_path / "d", np.ones((2, 4, 4), np.complex64), g, np.array([0.0, 0.04]))
    times = [float(pydicom.dcmread(f).TriggerTime) for f in files]
    np.testing.assert_allclose(times, [41.0, 81.0])
    assert Geometry.from_dict(g.to_dict()) == g
    import ismrmrd

    from mridip.io.export import write_mrd

    write_mrd(tmp_path / "m.h5", np.ones((2, 4, 4), np.complex64), g, np.array([0.0, 0.04]))
    ds = ismrmrd.Dataset(str(tmp_path / "m.h5"), "dataset", create_if_needed=False)
    try:
        stamps = [ds.read_image("image_0", t).physiology_time_stamp[0] for t in range(2)]
    finally:
        ds.close()
    assert stamps == [16, 32]  # 41 and 81 ms in 2.5 ms ticks
