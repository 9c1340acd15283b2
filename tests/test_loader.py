"""Fault injection for the ISMRMRD loader: every fault a real file has, planted one at a time
by ``tests/rawfaults.py``, is either loaded correctly (with a warning where something was
dropped or guessed) or refused with exit code 2 and one line that names the problem."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from rawfaults import (
    DWELL_US,
    NOISE,
    Faults,
    cartesian_scan,
    correlated_noise,
    noise_covariance,
    write_table,
)

from mridip.cli import main
from mridip.errors import RawDataError
from mridip.io import RawDataWarning, load_image_smap_mat, load_lps_mat, read_raw
from mridip.operators import fft2c, ifft2c
from mridip.preprocess import load, noise_whitening, remove_readout_oversampling, to_kspace
from mridip.simulate import SimulationConfig, simulate, write_simulation


# -- helpers --------------------------------------------------------------------------------------
def read_table(path, group="dataset"):
    """(xml, head fields as arrays, per-readout complex (C, S) data, per-readout traj)."""
    with h5py.File(path, "r") as f:
        xml = f[group]["xml"][0]
        rows = f[group]["data"][()]
    xml = xml.decode() if isinstance(xml, bytes) else str(xml)
    h = rows["head"]
    head = {k: np.asarray(h[k]) for k in h.dtype.names if k != "idx"}
    head.update({k: np.asarray(h["idx"][k]) for k in h["idx"].dtype.names if k != "user"})
    data = [
        d.view(np.complex64).reshape(c, s)
        for d, c, s in zip(
            rows["data"], head["active_channels"], head["number_of_samples"], strict=True
        )
    ]
    traj = [
        t.reshape(s, -1) if t.size else None
        for t, s in zip(rows["traj"], head["number_of_samples"], strict=True)
    ]
    return xml, head, data, traj


def rewrite(path, xml=None, head=None, data=None, traj=None, group="dataset"):
    x0, h0, d0, t0 = read_table(path, group)
    n = len(d0 if data is None else data)
    traj = (t0 if len(t0) == n else None) if traj is None else traj
    write_table(
        path,
        x0 if xml is None else xml,
        h0 if head is None else head,
        d0 if data is None else data,
        traj,
        group=group,
    )


def check_kspace(scan, planted, tol=1e-5):
    """The loaded k-space is the planted truth, whitened as the loader says it whitened."""
    ks = scan.kspace
    w = ks.meta.get("whitening")
    w = np.eye(ks.n_coils) if w is None else np.asarray(w)
    want = np.einsum("cd,tdyx->tcyx", w, planted.kspace)
    got = ks.data.numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tol * np.abs(want).max()
    assert np.array_equal(ks.mask.numpy(), planted.mask)


def cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- a clean file and the features that are no fault ----------------------------------------------
@pytest.mark.parametrize("oversampling", [1, 2])
def test_clean_file_loads_exactly(tmp_path, oversampling):
    import ismrmrd

    planted = cartesian_scan(tmp_path / "clean.h5", oversampling=oversampling)
    scan = load(planted.path)  # filterwarnings=error: no warning may be issued
    check_kspace(scan, planted)
    assert scan.raw.header.parsed_with == "ismrmrd"
    assert scan.kspace.meta["prewhitened"] and scan.kspace.meta["time_dim"] == "phase"
    assert scan.kspace.meta["readout_oversampling"] == oversampling
    ds = ismrmrd.Dataset(str(planted.path), "dataset", create_if_needed=False)
    try:  # the writer's files are valid for the reference reader too
        assert ds.number_of_acquisitions() == len(read_table(planted.path)[1]["flags"])
    finally:
        ds.close()


@pytest.mark.parametrize(
    "faults, oversampling",
    [
        (Faults(discard=(3, 5)), 2),
        (Faults(reverse=True), 2),
        (Faults(asymmetric=6), 1),
        (Faults(partial_fourier=8), 2),
        (Faults(noise_dwell_ratio=2.0), 2),
        (Faults(time_dim="repetition"), 2),
        (Faults(stored_trajectory=True), 2),
        (Faults(stored_trajectory=True, discard=(10, 4), reverse=True), 1),
        (Faults(vendor="Siemens"), 2),
        (Faults(vendor="SIEMENS", reverse=True, time_dim="repetition"), 2),
    ],
    ids=[
        "discard",
        "reverse",
        "asymmetric_echo",
        "partial_fourier",
        "noise_dwell",
        "repetition",
        "cartesian_with_trajectory",
        "cartesian_with_trajectory_discard_reverse",
        "siemens_conjugated",
        "siemens_reverse_repetition",
    ],
)
def test_acquisition_features_load_exactly(tmp_path, faults, oversampling):
    planted = cartesian_scan(tmp_path / "f.h5", faults, oversampling=oversampling)
    scan = load(planted.path)
    check_kspace(scan, planted)
    meta = scan.kspace.meta
    if faults.asymmetric:
        assert meta["echo_asymmetry"] == pytest.approx((32 - 6) / 32)
    if faults.partial_fourier:
        assert meta["partial_fourier"] == pytest.approx((32 - 8) / 32)
    assert meta["time_dim"] == faults.time_dim
    assert meta["trajectory"] == "cartesian"
    assert meta["conjugated"].startswith(str(faults.vendor.lower() == "siemens"))


def test_center_sample_counts_after_the_discarded_samples(tmp_path):
    """center_sample indexes the trimmed readout (Gadgetron, mrpro): with 10 samples discarded
    before the echo, a loader that subtracts them again puts every line 10 columns off."""
    planted = cartesian_scan(tmp_path / "d.h5", Faults(discard=(10, 0)), oversampling=1)
    head = read_table(planted.path)[1]
    imaging = head["flags"] == 0
    assert (head["center_sample"][imaging] == 16).all() and (
        head["discard_pre"][imaging] == 10
    ).all()
    ks = load(planted.path).kspace
    check_kspace(load(planted.path), planted)
    # the k-space centre is where the energy peaks
    energy = (ks.data.abs() ** 2).sum(dim=(0, 1, 2))
    assert int(energy.argmax()) == 16


@pytest.mark.parametrize("frames", [1, 4])
def test_cartesian_file_with_trajectory_is_placed_by_its_counters(tmp_path, frames):
    """mrpro stores k_x in ±Nro/2 (readout oversampled 2×) and k_y in ±N/2 for Cartesian
    scans. Gridded as non-Cartesian with one scale for both axes, the image came out 2×
    magnified along y, a single repetition was refused and unequal frames too."""
    planted = cartesian_scan(
        tmp_path / "t.h5", Faults(stored_trajectory=True), frames=frames, oversampling=2
    )
    assert read_table(planted.path)[3][10] is not None  # the trajectory is stored
    scan = load(planted.path)  # no warning: nothing is wrong with such a file
    check_kspace(scan, planted)
    ks = scan.kspace
    assert ks.is_cartesian and ks.n_frames == frames and ks.matrix == (32, 32)
    assert "not used" in ks.meta["stored_trajectory"]


def test_siemens_conjugation_can_be_overridden(tmp_path, capsys):
    # no readout oversampling: its removal (a crop of the image) does not commute with conj
    planted = cartesian_scan(tmp_path / "s.h5", Faults(vendor="Siemens"), oversampling=1)
    default = load(planted.path)
    kept = load(planted.path, conjugate=False).kspace
    forced = load(cartesian_scan(tmp_path / "o.h5").path, conjugate=True).kspace
    check_kspace(default, planted)
    assert torch.allclose(kept.data, default.kspace.data.conj(), atol=1e-6)
    assert forced.meta["conjugated"].startswith("True (--conjugate")
    assert kept.meta["conjugated"].startswith("False (--conjugate")
    code, out, _ = cli(["info", planted.path], capsys)
    assert code == 0 and "vendor       Siemens (k-space conjugated: True (vendor rule" in out
    code, out, _ = cli(["info", planted.path, "--conjugate", "off"], capsys)
    assert code == 0 and "conjugated: False (--conjugate" in out


def test_asymmetric_echo_with_oversampling_keeps_the_sampled_columns(tmp_path):
    """Oversampling removal maps the asymmetric echo's sampled k-range onto the cropped grid."""
    planted = cartesian_scan(tmp_path / "a.h5", Faults(asymmetric=16), oversampling=2)
    ks = load(planted.path).kspace
    assert ks.matrix == (32, 32)
    mask = ks.mask.numpy()
    # 16 of 64 oversampled samples missing at the start = the first 8 columns of 32
    assert not mask[..., :8].any() and mask[..., 9:].any(axis=-1)[mask.any(axis=-1)].all()
    assert not ks.data.numpy()[..., :8].any()


# -- faults loaded with a warning -----------------------------------------------------------------
WARNED = [
    ("body_coil", Faults(body_coil=3), "3 readouts with a channel count other than"),
    (
        "non_imaging",
        Faults(calibration_only=2, navigators=3),
        "not imaging data: 2 calibration-only, 3 navigator",
    ),
    ("wrong_centre", Faults(header_centre=6), "centre at line 6 but the signal peaks at line 16"),
    ("duplicates", Faults(duplicates=3), "dropped 3 duplicate readouts"),
    ("repeats", Faults(repeats=2), "2 repeated lines"),
    ("truncated_last_frame", Faults(truncate_last=True), "dropped the last frame"),
    ("nan", Faults(nan=2), "dropped 2 readouts with NaN"),
    (
        "absurd",
        Faults(absurd=2),
        "dropped 2 readouts with samples of absurd magnitude (up to 2.4e+38",
    ),
    ("zero", Faults(zero=1), "all zero"),
    ("unknown_header_element", Faults(unknown_element=True), "does not follow the schema"),
    ("missing_limits", Faults(missing_limits=True), "no centre line for phase encoding"),
]


@pytest.mark.parametrize("faults, message", [w[1:] for w in WARNED], ids=[w[0] for w in WARNED])
def test_fault_is_loaded_with_a_warning(tmp_path, faults, message):
    planted = cartesian_scan(tmp_path / "f.h5", faults)
    with pytest.warns(RawDataWarning) as record:
        scan = load(planted.path)
    assert any(message in str(w.message) for w in record), [str(w.message) for w in record]
    check_kspace(scan, planted)
    assert any(message.split(":")[0] in n for n in scan.kspace.meta["notes"])
    if faults.unknown_element:
        assert scan.raw.header.parsed_with == "etree"


def _edit(path, case):
    """Plant a fault by editing a clean file's table; returns what the loader must warn."""
    xml, head, data, _ = read_table(path)
    imaging = np.flatnonzero(head["flags"] == 0)
    if case == "encoding_space":
        head["encoding_space_ref"][imaging[-2:]] = 1
        return dict(head=head), "2 readouts with an encoding space other than", imaging[-2:]
    if case == "short_array":
        data[imaging[-1]] = data[imaging[-1]][:, :10]
        return dict(data=data), "sample arrays do not match their headers", imaging[-1:]
    if case == "contrast":
        head = {k: np.concatenate([v, v[imaging]]) for k, v in head.items()}
        head["contrast"][-len(imaging) :] = 1
        data = data + [2 * data[i] for i in imaging]
        return dict(head=head, data=data), "2 values of idx.contrast; using 0", []
    if case == "phase_oversampling":
        xml = xml.replace("<y>300.0</y>", "<y>450.0</y>", 1)  # the encoded FOV's y
        return dict(xml=xml), "phase oversampling: the image covers the encoded FOV of 450", []
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["encoding_space", "short_array", "contrast", "phase_oversampling"]
)
def test_edited_fault_is_loaded_with_a_warning(tmp_path, case):
    planted = cartesian_scan(tmp_path / "e.h5")
    head = read_table(planted.path)[1]
    changes, message, lost = _edit(planted.path, case)
    rewrite(planted.path, **changes)
    for i in lost:  # a dropped readout leaves its line unsampled
        f, line = head["phase"][i], head["kspace_encode_step_1"][i]
        planted.kspace[f, :, line] = 0
        planted.mask[f, line] = False
    with pytest.warns(RawDataWarning, match=message):
        scan = load(planted.path)
    check_kspace(scan, planted)


def test_limit_without_centre_and_time_from_trigger_stamps(tmp_path):
    planted = cartesian_scan(tmp_path / "l.h5")
    xml, head, data, _ = read_table(planted.path)
    xml = xml.replace("<center>16</center>", "", 1)
    # gated cine: phases interleave in acquisition time; the trigger time orders them
    head["acquisition_time_stamp"] = head["acquisition_time_stamp"][::-1].copy()
    head["physiology_time_stamp"][:, 0] = 10 * head["phase"]
    write_table(planted.path, xml, head, data)
    with pytest.warns(RawDataWarning) as record:
        scan = load(planted.path)
    # the strict parser reads a missing centre as 0, the tolerant one as None: both end at 16
    assert scan.raw.header.limits["kspace_encoding_step_1"][:2] == (0, 31)
    assert any("using line 16" in str(w.message) or "using 16" in str(w.message) for w in record)
    assert scan.kspace.meta["k1_centre"] == 16
    check_kspace(scan, planted)
    assert scan.kspace.meta["frame_times_from"] == "physiology_time_stamp"
    assert scan.kspace.frame_times.tolist() == pytest.approx([0.0, 0.025, 0.05, 0.075])


def test_two_groups_default_last_noise_from_the_other(tmp_path, capsys):
    planted = cartesian_scan(tmp_path / "two.h5", Faults(two_groups=True))
    scan = load(planted.path)
    assert scan.raw.group == "dataset_10" and scan.raw.groups == ["dataset_9", "dataset_10"]
    assert scan.kspace.meta["prewhitened"]
    assert "noise scans taken from group 'dataset_9'" in scan.raw.notes
    check_kspace(scan, planted)
    code, _, err = cli(["info", planted.path, "--group", "dataset_9"], capsys)
    assert code == 2 and err.count("\n") == 1 and "all 4 are noise scans" in err
    code, _, err = cli(["info", planted.path, "--group", "nope"], capsys)
    assert code == 2 and err.count("\n") == 1 and "dataset_9, dataset_10" in err


def test_averages_are_averaged_silently(tmp_path):
    planted = cartesian_scan(tmp_path / "avg.h5", Faults())
    xml, head, data, _ = read_table(planted.path)
    imaging = np.flatnonzero(head["flags"] == 0)
    head2 = {k: np.concatenate([v, v[imaging]]) for k, v in head.items()}
    head2["average"][len(head["flags"]) :] = 1
    data2 = data + [d * (1 + 0.4j) for d in (data[i] for i in imaging)]
    write_table(planted.path, xml, head2, data2)
    scan = load(planted.path)  # no warning: averages are expected
    planted.kspace = planted.kspace * (1 + 0.2j)
    check_kspace(scan, planted)


def test_slices(tmp_path, capsys):
    planted = cartesian_scan(tmp_path / "s.h5", Faults(slices=2))
    s0, s1 = load(planted.path), load(planted.path, slice_index=1)
    assert s0.kspace.meta["n_slices"] == 2
    planted.kspace = planted.kspace * 1.5  # the writer scales slice s by 1 + s/2
    check_kspace(s1, planted)
    assert s1.kspace.meta["geometry"]["position"] == [0.0, 0.0, 6.0]
    assert s1.kspace.meta["geometry"]["slice_dir"] == [0.0, 0.0, 1.0]
    code, _, err = cli(["info", planted.path, "--slice", 3], capsys)
    assert code == 2 and err.count("\n") == 1 and "slice 3 not in the file (slices: [0, 1])" in err


def test_time_in_phase_and_repetition(tmp_path):
    planted = cartesian_scan(tmp_path / "t.h5", Faults())
    xml, head, data, _ = read_table(planted.path)
    head["repetition"] = (head["phase"] >= 2).astype(np.uint16)
    write_table(planted.path, xml, head, data)
    with pytest.warns(RawDataWarning, match="both phase and repetition vary"):
        both = load(planted.path)
    with pytest.warns(RawDataWarning, match="repetition varies too"):
        phase = load(planted.path, time_dim="phase")
    for scan in (both, phase):
        check_kspace(scan, planted)
    assert both.kspace.meta["time_dim"] == "repetition+phase"
    with pytest.raises(RawDataError, match="time dimension must be"):
        load(planted.path, time_dim="slice")


# -- faults that are refused ----------------------------------------------------------------------
def _refusal(tmp_path, case):
    path = tmp_path / "bad.h5"
    if case == "folder":
        path.mkdir()
    elif case == "not_hdf5":
        path.write_text("hello")
    elif case == "no_group":
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=[1, 2])
    elif case == "not_a_table":
        with h5py.File(path, "w") as f:
            f.create_dataset("dataset/data", data=np.arange(4))
            f.create_dataset("dataset/xml", data=["<a/>"], dtype=h5py.string_dtype())
    elif case == "no_header":
        cartesian_scan(path)
        with h5py.File(path, "a") as f:
            del f["dataset/xml"]
    elif case == "empty_table":
        cartesian_scan(path)
        xml, head, data, _ = read_table(path)
        write_table(path, xml, {k: v[:0] for k, v in head.items()}, [])
    elif case == "bad_xml":
        cartesian_scan(path)
        rewrite(path, xml="<ismrmrdHeader><encoding>")
    elif case == "no_matrix":
        cartesian_scan(path)
        xml = read_table(path)[0]
        start, end = xml.index("<encodedSpace>"), xml.index("</encodedSpace>")
        rewrite(path, xml=xml[:start] + xml[end + len("</encodedSpace>") :])
    elif case == "no_encoding":
        cartesian_scan(path)
        xml = read_table(path)[0]
        rewrite(path, xml=xml[: xml.index("<encoding>")] + "</ismrmrdHeader>")
    elif case == "all_zero":
        cartesian_scan(path)
        _, head, data, _ = read_table(path)
        rewrite(
            path, data=[d * 0 if f == 0 else d for d, f in zip(data, head["flags"], strict=True)]
        )
    elif case == "compressed":
        cartesian_scan(path, Faults(compressed=True))
    elif case == "all_nan":
        cartesian_scan(path, Faults(nan=30))
    elif case == "three_d":
        cartesian_scan(path)
        _, head, _, _ = read_table(path)
        head["kspace_encode_step_2"] = np.arange(len(head["flags"])) % 2
        rewrite(path, head=head)
    elif case in ("lines_outside", "lines_outside_with_trajectory"):
        cartesian_scan(path, Faults(stored_trajectory=case != "lines_outside"))
        rewrite(path, xml=read_table(path)[0].replace("<y>32</y>", "<y>16</y>", 1))
    elif case == "absurd":
        cartesian_scan(path, Faults(absurd=30))
    elif case == "noise_only":
        cartesian_scan(path)
        xml, head, data, _ = read_table(path)
        keep = head["flags"] == NOISE
        write_table(
            path,
            xml,
            {k: v[keep] for k, v in head.items()},
            [data[i] for i in np.flatnonzero(keep)],
        )
    elif case in ("spiral_no_traj", "traj_units", "unlabelled", "uneven_frames"):  # radial
        write_simulation(path, simulate(SimulationConfig(matrix=16, frames=3, coils=2, spokes=5)))
        xml, head, data, traj = read_table(path)
        imaging = head["flags"] == 0
        if case == "spiral_no_traj":
            head["trajectory_dimensions"][:] = 0
            rewrite(
                path, xml=xml.replace(">radial<", ">spiral<"), head=head, traj=[None] * len(data)
            )
        elif case == "traj_units":
            rewrite(path, traj=[None if t is None else t * 3.7 for t in traj])
        elif case == "unlabelled":
            head["phase"][:] = 0
            rewrite(path, head=head)
        else:
            first = np.flatnonzero(imaging)[0]
            head["phase"][first] = 1  # frame 0 loses a spoke to frame 1
            rewrite(path, head=head)
    return path


REFUSED = {
    "folder": "is a folder, not a raw data file",
    "not_hdf5": "is not an HDF5 file",
    "no_encoding": "header has no <encoding> section",
    "all_zero": "every imaging readout is all zeros or NaN",
    "no_group": "holds no ISMRMRD dataset",
    "not_a_table": "is not an ISMRMRD acquisition table",
    "no_header": "has no ISMRMRD header",
    "empty_table": "has no acquisitions",
    "bad_xml": "not valid XML",
    "no_matrix": "lacks the encoded matrix size",
    "compressed": "stored compressed",
    "all_nan": "hold NaN or Inf samples; the file is damaged",
    "three_d": "3-D encoded readouts",
    "lines_outside": "fall outside the encoded matrix of 16 lines",
    "lines_outside_with_trajectory": "fall outside the encoded matrix of 16 lines",
    "absurd": "30 of 70 imaging readouts hold samples of absurd magnitude (up to 2.4e",
    "noise_only": "no imaging acquisitions: all 4 are noise scans",
    "spiral_no_traj": "spiral readouts without a stored trajectory",
    "traj_units": "cannot tell the units of the stored trajectory",
    "uneven_frames": "frames hold differing numbers of readouts",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_file_is_refused_with_one_line(tmp_path, case, capsys):
    path = _refusal(tmp_path, case)
    with pytest.raises(RawDataError, match=REFUSED[case].replace("(", r"\(")):
        load(path)
    command = ["recon", path, "-o", tmp_path / "out", "--method", "zf"]
    for argv in (["info", path], command):
        code, out, err = cli(argv, capsys)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("mridip: error: ") and REFUSED[case] in err
    assert not (tmp_path / "out").exists()


def test_uneven_radial_frames_can_be_rebinned(tmp_path):
    path = _refusal(tmp_path, "uneven_frames")
    with pytest.warns(RawDataWarning, match="frame labels \\(phase\\) ignored"):
        ks = load(path, spokes_per_frame=5).kspace
    assert ks.n_frames == 3 and ks.meta["spokes_per_frame"] == 5


# -- noise prewhitening ---------------------------------------------------------------------------
def test_prewhitened_noise_has_identity_covariance():
    rng = np.random.default_rng(3)
    cov = noise_covariance(8)
    w = noise_whitening(correlated_noise(cov, (4000,), rng))
    fresh = w @ correlated_noise(cov, (20000,), rng)  # independent noise of the same receiver
    white = fresh @ fresh.conj().T / fresh.shape[1]
    assert np.abs(white - np.eye(8)).max() < 0.06
    assert np.abs(cov - np.eye(8)).max() > 0.3  # it was far from white before


def test_whitening_scales_by_dwell_ratio_and_bandwidth(tmp_path):
    planted = cartesian_scan(tmp_path / "d.h5", Faults(noise_dwell_ratio=4.0, noise_scans=8))
    raw = read_raw(planted.path)
    assert raw.noise_sample_time_us == pytest.approx(4 * DWELL_US)
    assert raw.header.noise_bandwidth == pytest.approx(0.793)
    ks, w = to_kspace(raw)
    w = w.numpy().astype(np.complex128)
    psi = raw.noise @ raw.noise.conj().T / (raw.noise.shape[1] - 1)
    # imaging noise has 4× the noise scans' power (4× the bandwidth): W Ψ_acq Wᴴ = b · I
    assert np.allclose(w @ (4 * psi) @ w.conj().T, 0.793 * np.eye(4), atol=1e-4)


def test_unusable_noise_is_skipped_with_a_warning(tmp_path):
    planted = cartesian_scan(tmp_path / "n.h5")
    raw = read_raw(planted.path)
    short = raw.noise[:, :5]
    dead = raw.noise.copy()
    dead[1] = dead[0]
    with pytest.warns(RawDataWarning, match="noise scans have 3 channels, data 4"):
        raw.noise = raw.noise[:3]
        to_kspace(raw)
    for noise, why in ((short, "too few"), (dead, "not positive definite|singular")):
        raw.noise = noise
        with pytest.warns(RawDataWarning, match=f"noise scans unusable \\(.*({why})"):
            ks, w = to_kspace(raw)
        assert torch.equal(w, torch.eye(4, dtype=torch.complex64))
        assert not ks.meta["prewhitened"]
    with pytest.raises(RawDataError, match="too few"):
        noise_whitening(short)


# -- readout oversampling -------------------------------------------------------------------------
def test_removing_oversampling_does_not_change_the_image(tmp_path):
    """Relative difference ≤ 1e-3 against reconstructing at the full readout and cropping."""
    planted = cartesian_scan(tmp_path / "os.h5", oversampling=2, acceleration=3)
    scan = load(planted.path)
    cropped = scan.kspace
    w = cropped.meta["whitening"]
    maps = torch.from_numpy(np.einsum("cd,dyx->cyx", w, planted.maps).astype(np.complex64))
    # the same data at the full readout: the oversampled readouts on a 32 × 64 grid
    raw = read_raw(planted.path)
    full = np.zeros((4, 4, 32, 64), np.complex64)
    data = np.matmul(w, raw.data)
    full[raw.head["phase"], :, raw.head["kspace_encode_step_1"], :] = data
    wide_maps = torch.nn.functional.pad(maps, (16, 16))
    img_full = (ifft2c(torch.from_numpy(full)) * wide_maps.conj()).sum(1)[..., 16:48]
    img_crop = (ifft2c(cropped.data) * maps.conj()).sum(1)
    rel = float((img_crop - img_full).abs().norm() / img_full.abs().norm())
    assert rel <= 1e-3, rel
    # and the public function agrees with the loader on the full-readout k-space
    from mridip.kspace import DynamicKSpace

    wide = DynamicKSpace(
        data=torch.from_numpy(full), matrix=(32, 64), mask=torch.from_numpy(np.abs(full).sum(1) > 0)
    )
    again = remove_readout_oversampling(wide, 32)
    assert torch.allclose(again.data, cropped.data, atol=1e-5 * float(cropped.data.abs().max()))


# -- non-Cartesian --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_radial(tmp_path_factory):
    path = tmp_path_factory.mktemp("radial") / "r.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=16, frames=3, coils=2, spokes=5)))
    return path


def test_golden_angle_computed_when_no_trajectory_is_stored(tmp_path, small_radial):
    stored = load(small_radial).kspace
    path = tmp_path / "notraj.h5"
    path.write_bytes(small_radial.read_bytes())
    _, head, data, traj = read_table(path)
    head["trajectory_dimensions"][:] = 0
    rewrite(path, head=head, traj=[None] * len(data))
    with pytest.warns(RawDataWarning, match="golden-angle radial"):
        computed = load(path).kspace
    assert torch.allclose(computed.traj, stored.traj, atol=1e-4)
    assert torch.equal(computed.data, stored.data)


@pytest.mark.parametrize(
    "scale, units",
    [(2 * math.pi / 16, "radians"), (1 / 16, "cycles per voxel"), (2 / 16, "±1")],
)
def test_trajectory_units_are_normalised(tmp_path, small_radial, scale, units):
    stored = load(small_radial).kspace
    assert stored.meta["trajectory_units"].startswith("cycles per FOV")
    path = tmp_path / "units.h5"
    path.write_bytes(small_radial.read_bytes())
    rewrite(path, traj=[None if t is None else t * scale for t in read_table(path)[3]])
    ks = load(path).kspace
    assert units in ks.meta["trajectory_units"]
    assert torch.allclose(ks.traj, stored.traj, atol=1e-5)


# -- mridip info ----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("always::mridip.io.raw.RawDataWarning")
def test_info_reports_what_was_dropped(tmp_path, capsys):
    planted = cartesian_scan(tmp_path / "i.h5", Faults(body_coil=2, calibration_only=3, nan=1))
    code, out, err = cli(["info", planted.path], capsys)
    assert code == 0
    assert "mridip: warning: dropped 3 readouts that are not imaging data" in err
    assert "3 calibration-only" in out and "2 channels" in out and "1 nan" in out
    assert "noise scans  4 (prewhitened" in out
    assert "lines/frame" in out and "acceleration" in out and "slices       1" in out


@pytest.mark.filterwarnings("always::mridip.io.raw.RawDataWarning")
def test_unlabelled_stream_is_one_static_frame(tmp_path, capsys):
    """A radial scan without frame labels (JEMRIS, MRIReco, mrpro's single repetition) is one
    image: reconstructed as one frame, with a warning that says how to bin a stream."""
    path = _refusal(tmp_path, "unlabelled")
    n = int((read_table(path)[1]["flags"] == 0).sum())
    with pytest.warns(RawDataWarning, match="no frame labels .* one static frame; give --spokes"):
        ks = load(path).kspace
    assert ks.n_frames == 1 and ks.meta["spokes_per_frame"] == n and ks.meta["static_frame"]
    binned = load(path, spokes_per_frame=5).kspace  # the way out the warning names
    assert binned.n_frames == 3
    code, out, err = cli(["info", path], capsys)
    assert code == 0 and "frames       1 (no frame labels: one static frame" in out
    assert err.count("\n") == 1 and "one static frame" in err
    code, out, err = cli(["recon", path, "-o", tmp_path / "out", "--method", "zf"], capsys)
    assert code == 0 and (tmp_path / "out" / "recon.h5").exists()


# -- MATLAB importers -----------------------------------------------------------------------------
def _truth(ny=16, nx=12, t=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:ny, :nx]
    blob = np.exp(-((yy - ny / 2) ** 2 + (xx - nx / 2) ** 2) / 20.0)
    img = np.stack([blob * (1 + 0.2 * k) * np.exp(0.3j * k) for k in range(t)])  # (T, ny, nx)
    maps = rng.standard_normal((c, ny, nx)) + 1j * rng.standard_normal((c, ny, nx))
    return img.astype(np.complex64), maps.astype(np.complex64)


def _otazo_kspace(img_m, b1, mask_m):
    """Their forward model: fft2c_mri = centred orthonormal *inverse* DFT over [nx, ny]."""
    z = img_m[:, :, :, None] * b1[:, :, None, :]  # [nx, ny, nt, nc]
    for ax in (0, 1):
        n = z.shape[ax]
        z = np.fft.fftshift(np.fft.ifft(np.fft.fftshift(z, axes=ax), axis=ax), axes=ax) * np.sqrt(n)
    return z * mask_m[..., None]


def test_lps_importer_maps_their_kspace_onto_ours(tmp_path):
    from scipy.io import savemat

    img, maps = _truth()
    rng = np.random.default_rng(1)
    mask = rng.random((3, 16, 12)) < 0.4  # ours (T, ny, nx)
    mask[:, 7:9, :] = True
    # their index i holds k = −(i − N/2): where we sample k, they stored (N − i) mod N
    theirs = np.roll(np.flip(mask, axis=(1, 2)), 1, axis=(1, 2))
    img_m, b1, mask_m = img.transpose(2, 1, 0), maps.transpose(2, 1, 0), theirs.transpose(2, 1, 0)
    savemat(tmp_path / "lps.mat", {"kdata": _otazo_kspace(img_m, b1, mask_m), "b1": b1})
    scan = load_lps_mat(tmp_path / "lps.mat")
    ks = scan.kspace
    assert ks.matrix == (16, 12) and ks.n_frames == 3 and ks.n_coils == 3 and scan.raw is None
    want = fft2c(torch.from_numpy(img[:, None] * maps[None])) * torch.from_numpy(mask)[:, None]
    assert torch.allclose(ks.data, want.to(torch.complex64), atol=1e-5)
    assert torch.equal(ks.mask, torch.from_numpy(mask))
    assert torch.allclose(scan.maps, torch.from_numpy(maps))
    savemat(tmp_path / "bad.mat", {"kdata": np.zeros((4, 4, 2, 2)), "b1": np.zeros((4, 4, 3))})
    with pytest.raises(RawDataError, match="b1 is \\[4, 4, 3\\] but kdata needs"):
        load_lps_mat(tmp_path / "bad.mat")


def _write_v73(path, arrays):
    """What MATLAB's save -v7.3 writes: HDF5, axes reversed, complex as a real/imag compound."""
    cplx = np.dtype([("real", "<f8"), ("imag", "<f8")])
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, a in arrays.items():
            a = np.asarray(a).T
            if np.iscomplexobj(a):
                rec = np.empty(a.shape, cplx)
                rec["real"], rec["imag"] = a.real, a.imag
                a = rec
            f.create_dataset(k, data=a).attrs["MATLAB_class"] = np.bytes_("double")


@pytest.mark.parametrize("layout", ["mat_v5", "mat_v73", "numpy_h5"])
def test_image_smap_importer(tmp_path, layout):
    from scipy.io import savemat

    img, maps = _truth()
    rng = np.random.default_rng(2)
    mask = np.repeat(rng.random((3, 16, 1)) < 0.5, 12, axis=2)
    mask[:, 8] = True
    arrays = {
        "img": img.transpose(2, 1, 0),
        "smap": maps.transpose(2, 1, 0),
        "mask": mask.transpose(2, 1, 0).astype(np.float64),
    }
    path = tmp_path / ("gip.mat" if layout != "numpy_h5" else "gip.h5")
    if layout == "mat_v5":
        savemat(path, arrays)
    elif layout == "mat_v73":
        _write_v73(path, arrays)
    else:
        with h5py.File(path, "w") as f:
            for k, a in arrays.items():
                f.create_dataset(k, data=a)
    scan = load_image_smap_mat(path)
    ref = img / np.abs(img).max()
    s = maps / np.linalg.norm(maps, axis=0, keepdims=True)
    assert np.allclose(scan.reference, ref, atol=1e-6)
    assert torch.allclose(scan.maps, torch.from_numpy(s), atol=1e-6)
    want = fft2c(torch.from_numpy(ref[:, None] * s[None])) * torch.from_numpy(mask)[:, None]
    assert torch.allclose(scan.kspace.data, want, atol=1e-5)
    assert torch.equal(scan.kspace.mask, torch.from_numpy(mask))


def test_image_smap_importer_simulates_radial_and_refuses_bad_files(tmp_path):
    from scipy.io import savemat

    img, maps = _truth(ny=16, nx=16, t=2, c=2)
    savemat(tmp_path / "g.mat", {"img": img.transpose(2, 1, 0), "smap": maps.transpose(2, 1, 0)})
    scan = load_image_smap_mat(tmp_path / "g.mat", trajectory="radial", spokes=7, noise=1e-3)
    ks = scan.kspace
    assert not ks.is_cartesian and ks.traj.shape == (2, 2, 7 * 32) and ks.n_coils == 2
    cart = load_image_smap_mat(tmp_path / "g.mat", acceleration=4, mask_key=None).kspace
    assert cart.acceleration == pytest.approx(4, rel=0.15)
    (tmp_path / "x.mat").write_text("not matlab")
    with pytest.raises(RawDataError, match="not a MATLAB file"):
        load_image_smap_mat(tmp_path / "x.mat")
    with pytest.raises(RawDataError, match="has no variable 'image'"):
        load_image_smap_mat(tmp_path / "g.mat", image_key="image")


@pytest.mark.parametrize("nx", [32, 30, 31])
def test_readout_crop_keeps_the_image_for_even_and_odd_sizes(nx):
    from mridip.kspace import DynamicKSpace

    rng = np.random.default_rng(5)
    k = rng.standard_normal((2, 3, 8, 64)) + 1j * rng.standard_normal((2, 3, 8, 64))
    wide = DynamicKSpace(
        data=torch.from_numpy(k.astype(np.complex64)),
        matrix=(8, 64),
        mask=torch.ones(2, 8, 64, dtype=torch.bool),
        fov_mm=(100.0, 200.0),
    )
    cropped = remove_readout_oversampling(wide, nx)
    assert cropped.matrix == (8, nx) and cropped.fov_mm == pytest.approx((100.0, 200.0 * nx / 64))

    def ifft_x(z):
        z = torch.fft.ifftshift(z, dim=-1)
        return torch.fft.fftshift(torch.fft.ifft(z, dim=-1, norm="ortho"), dim=-1)

    x0 = 32 - nx // 2
    assert torch.allclose(ifft_x(cropped.data), ifft_x(wide.data)[..., x0 : x0 + nx], atol=1e-5)


def test_loader_benchmark_runs_and_cleans_up():
    """The benchmark's structure (speed itself is measured by `mridip bench --only loader`)."""
    from mridip.bench import loader_benchmark

    r = loader_benchmark(frames=2, lines=8, coils=2, samples=16, repeats=1)
    assert r["size"]["readouts"] == 8 + 2 * 8
    for key in ("disk_read_s", "h5py_table_s", "read_raw_s", "load_s"):
        assert r[key] > 0
    assert r["read_raw_over_disk"] == r["read_raw_s"] / r["disk_read_s"]
