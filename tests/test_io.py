import shutil

import h5py
import numpy as np
import pytest
import torch

from mridip.errors import RawDataError
from mridip.io import RawDataWarning, atomic_path, read_raw
from mridip.preprocess import load, noise_whitening
from mridip.simulate import SimulationConfig, simulate, write_simulation


def test_simulated_file_is_valid_ismrmrd(radial_cine):
    import ismrmrd

    ds = ismrmrd.Dataset(str(radial_cine), "dataset", create_if_needed=False)
    try:
        hdr = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
        n = ds.number_of_acquisitions()
        first = ds.read_acquisition(0)
        last = ds.read_acquisition(n - 1)
    finally:
        ds.close()
    enc = hdr.encoding[0]
    assert enc.trajectory.value == "radial"
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (64, 64)
    assert enc.encodedSpace.matrixSize.x == 128  # 2× readout oversampling
    assert enc.encodingLimits.phase.maximum == 11
    assert hdr.acquisitionSystemInformation.receiverChannels == 8
    assert first.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    assert not last.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    assert last.traj.shape == (128, 2)
    assert last.idx.phase == 11


def test_read_raw_fields(radial_cine):
    raw = read_raw(radial_cine)
    assert raw.data.shape == (12 * 13, 8, 128)
    assert raw.traj.shape == (12 * 13, 128, 2)
    assert raw.noise is not None and raw.noise.shape[0] == 8
    assert raw.header.trajectory == "radial"
    assert raw.header.parsed_with == "ismrmrd"
    assert raw.extras["reference"].shape == (12, 64, 64)
    # the simulated receiver noise is correlated between neighbouring channels
    psi = raw.noise @ raw.noise.conj().T / raw.noise.shape[1]
    corr = np.abs(psi[0, 1]) / np.sqrt(np.abs(psi[0, 0] * psi[1, 1]))
    assert corr > 0.15


def test_prewhitening_gives_identity_covariance(radial_cine):
    raw = read_raw(radial_cine)
    w = noise_whitening(raw.noise)
    white = w @ raw.noise
    cov = white @ white.conj().T / (white.shape[1] - 1)  # the estimator is unbiased
    assert np.allclose(cov, np.eye(8), atol=1e-5)
    with pytest.raises(RawDataError, match="too few"):
        noise_whitening(raw.noise[:, :10])


def test_load_radial(radial_cine):
    scan = load(radial_cine)
    ks = scan.kspace
    assert ks.n_frames == 12 and ks.n_coils == 8 and ks.matrix == (64, 64)
    assert ks.traj.shape == (12, 2, 13 * 128)
    assert float(ks.traj.abs().max()) <= np.pi + 1e-4
    assert ks.meta["spokes_per_frame"] == 13
    assert scan.maps is not None and scan.maps.shape == (8, 64, 64)
    assert torch.all(ks.frame_times[1:] > ks.frame_times[:-1])
    # the trajectory came back in rows (k_y, k_x) and radians: it matches the simulation's
    sim = simulate(SimulationConfig(matrix=64, frames=12, coils=8, spokes=13))
    assert np.allclose(
        ks.traj[0, :, :128].numpy().T[:, ::-1] * 64 / (2 * np.pi),
        sim.acquisitions.traj[0],
        atol=1e-4,
    )


def test_load_cartesian(cartesian_cine):
    ks = load(cartesian_cine).kspace
    assert ks.is_cartesian and ks.matrix == (48, 48) and ks.n_frames == 8
    assert ks.acceleration == pytest.approx(6, rel=0.1)
    assert bool((ks.data.abs() > 0).any(dim=1)[~ks.mask].sum() == 0)


def test_radial_stream_binning(tmp_path):
    """A stream without frame labels is one static frame, or binned by --spokes-per-frame."""
    sim = simulate(SimulationConfig(matrix=32, frames=4, coils=2, spokes=6))
    sim.acquisitions.idx["phase"] = np.zeros_like(sim.acquisitions.idx["phase"])
    path = tmp_path / "stream.h5"
    write_simulation(path, sim)
    with pytest.warns(UserWarning, match="one static frame; give --spokes-per-frame"):
        assert load(path).kspace.n_frames == 1
    with pytest.warns(UserWarning, match="incomplete"):
        ks = load(path, spokes_per_frame=5).kspace
    assert ks.n_frames == 4  # 24 spokes → 4 frames of 5, 4 dropped


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not_hdf5", "no_group", "noise_only"])
def test_reader_refuses_bad_files(tmp_path, case, radial_cine):
    path = tmp_path / "bad.h5"
    if case == "not_hdf5":
        path.write_text("hello")
    elif case == "no_group":
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=[1, 2])
    elif case == "noise_only":
        import ismrmrd

        ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
        with h5py.File(radial_cine, "r") as f:
            ds.write_xml_header(f["dataset/xml"][0])
        a = ismrmrd.Acquisition.from_array(np.ones((2, 16), np.complex64))
        a.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        ds.append_acquisition(a)
        ds.close()
    expected = {
        "missing": "no such file",
        "not_hdf5": "not an HDF5",
        "no_group": "no ISMRMRD",
        "noise_only": "no imaging acquisitions",
    }[case]
    with pytest.raises(RawDataError, match=expected):
        read_raw(path)


def test_header_fallback_to_elementtree(tmp_path, radial_cine):
    """An element the strict schema does not know sends the header to the tolerant parser."""
    import shutil

    path = tmp_path / "odd.h5"
    shutil.copy(radial_cine, path)
    with h5py.File(path, "a") as f:
        xml = f["dataset/xml"][0].decode()
        xml = xml.replace("<encoding>", "<encoding><vendorThing>1</vendorThing>", 1)
        del f["dataset/xml"]
        f.create_dataset("dataset/xml", data=[xml.encode()], dtype=h5py.string_dtype())
    with pytest.warns(RawDataWarning, match="does not follow the schema.*vendorThing"):
        raw = read_raw(path)
    assert raw.header.parsed_with == "etree"
    assert raw.header.recon_matrix[:2] == (64, 64)
    assert raw.header.limits["phase"] == (0, 11, 0)


@pytest.mark.skipif(
    shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
    reason="ismrmrd-tools not installed (apt install ismrmrd-tools)",
)
@pytest.mark.parametrize(
    "extra, frames, lines",
    [([], 2, 64), (["-a", "2", "-w", "16"], 4, 32)],
    ids=["full", "accelerated_with_calibration"],
)
def test_reference_tool_file_loads_and_reconstructs(tmp_path, extra, frames, lines):
    """A file from the ISMRMRD project's own C++ generator: 2× readout oversampling, noise
    calibration, repetitions and, accelerated, interleaved lines with calibration lines (those
    off the acceleration grid flagged calibration-only, dropped with a warning). It must load,
    lose the oversampling, and match the phantom the file stores, in the right orientation."""
    import subprocess

    from mridip.baselines import cg_sense
    from mridip.coils import estimate_maps
    from mridip.io import read_image
    from mridip.metrics import evaluate

    path = tmp_path / "shepp_logan.h5"
    args = ["-m", "64", "-c", "4", "-O", "2", "-r", "2", "-C", "-n", "0.05", "-o", str(path)]
    subprocess.run(
        ["ismrmrd_generate_cartesian_shepp_logan", *args, *extra], check=True, capture_output=True
    )
    if extra:
        with pytest.warns(RawDataWarning, match="dropped 32 readouts .* 32 calibration-only"):
            scan = load(path)
    else:
        scan = load(path)
    ks = scan.kspace
    assert ks.matrix == (64, 64) and ks.n_frames == frames and ks.n_coils == 4
    assert ks.meta["time_dim"] == "repetition" and scan.raw.noise is not None
    assert ks.meta["prewhitened"] and ks.meta["readout_oversampling"] == 2
    assert ks.mask.any(-1).sum(1).tolist() == [lines] * frames
    if extra:  # interleaved: the frames together cover every line
        assert bool(ks.mask.any(0).all()) and scan.raw.header.acceleration == (2, 1)
    phantom = np.abs(read_image(f"{path}:/dataset/phantom")[0])
    image = cg_sense(ks, estimate_maps(ks, method="lowres"), iters=5).image
    right = evaluate(image[0], phantom)["psnr"]
    flipped = evaluate(image[0], phantom[::-1].copy())["psnr"]
    assert right > (25 if not extra else 22) and right > flipped + 6
