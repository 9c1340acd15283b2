"""Raw files that mridip did not write: loaded right, or refused in one line (issue 18).

The files come from *running* other projects' writers: the ISMRMRD project's C++ generator
(``ismrmrd_generate_cartesian_shepp_logan``, Debian package ``ismrmrd-tools``) and the
``ismrmrd`` Python package driven the way mrpro's raw test writer drives it
(``tests/data/_IsmrmrdRawTestData.py`` of PTB-MR/mrpro, its behaviour re-created here):

- Cartesian scans store their trajectory too: ``k_x`` in samples from the centre, ±N_enc,x/2
  with the readout oversampled 2×, ``k_y = k1 − N/2``;
- radial scans store ``k`` in ±N_enc/2 along 2N-sample spokes, uniform angles;
- ``systemVendor`` Siemens: the stored k-space is the conjugate (the orientation rule mrpro's
  reader undoes, its PR #833);
- the first five readouts of a repetition carry ``discard_pre``/``discard_post`` samples while
  ``center_sample`` keeps its value (counted after the discarded samples);
- a single repetition carries no frame label at all.

Each file's truth is analytic: Gaussian blobs placed so that no flip or transposition maps
them onto themselves, seen by coils with linear phase ramps (so the k-space of every coil is
the blobs' Fourier transform, shifted). The tests check the loaded image against that truth
(PSNR, and that no flip or transposition fits better) and, for Cartesian files, against an
independent plain-FFT reader written here with the ``ismrmrd`` package alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest
import torch

from mridip.cli import main
from mridip.errors import RawDataError
from mridip.io import RawDataWarning
from mridip.metrics import evaluate
from mridip.operators import ifft2c
from mridip.preprocess import load

N = 32
#: (amplitude, centre y, centre x, width σ), pixels from the image centre (index N//2)
BLOBS = ((1.0, -6.0, -4.0, 3.0), (0.6, 7.0, 5.0, 2.0), (0.8, 2.0, 9.0, 1.6), (0.5, -9.0, 8.0, 2.5))
#: coil gains and the linear phase ramps of their maps, cycles per pixel along (y, x)
GAINS = (1.0, 0.7, 0.5)
RAMPS = ((0.0, 0.0), (0.02, -0.01), (-0.015, 0.025))
COILS = len(GAINS)


def truth(n: int = N) -> np.ndarray:
    """``(n, n)`` image of the blobs."""
    y, x = np.mgrid[:n, :n] - n // 2
    return sum(a * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s)) for a, cy, cx, s in BLOBS)


def true_maps(n: int = N) -> np.ndarray:
    """``(C, n, n)`` coil maps ``g·exp(2πi u·r)``, scaled to ``Σ|S|² = 1``."""
    y, x = np.mgrid[:n, :n] - n // 2
    m = np.stack(
        [
            g * np.exp(2j * np.pi * (uy * y + ux * x))
            for g, (uy, ux) in zip(GAINS, RAMPS, strict=True)
        ]
    )
    return m / np.sqrt(np.sum(np.square(GAINS)))


def coil_kspace(ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """``(C, *k.shape)`` k-space of each coil's image at ``(k_y, k_x)`` cycles per pixel.

    The format's sign (``exp(−2πi k·r)``, a forward FFT from image to k-space); a map
    ``g·exp(2πi u·r)`` shifts the blobs' spectrum by ``u``.
    """
    out = []
    for g, (uy, ux) in zip(GAINS, RAMPS, strict=True):
        qy, qx = ky - uy, kx - ux
        spectrum = sum(
            a
            * 2
            * np.pi
            * s
            * s
            * np.exp(-2 * np.pi**2 * s * s * (qy**2 + qx**2))
            * np.exp(-2j * np.pi * (qy * cy + qx * cx))
            for a, cy, cx, s in BLOBS
        )
        out.append(g * spectrum)
    return np.stack(out)


# -- the writer (mrpro's behaviour, through the ismrmrd package) --------------------------------
def _xml(enc, enc_fov, recon, trajectory: str, vendor: str | None, reps: int, k1: int) -> str:
    x = ismrmrd.xsd

    def space(m, fov):
        return x.encodingSpaceType(
            matrixSize=x.matrixSizeType(x=m[0], y=m[1], z=1),
            fieldOfView_mm=x.fieldOfViewMm(x=fov[0], y=fov[1], z=5),
        )

    system = x.acquisitionSystemInformationType(receiverChannels=COILS, systemVendor=vendor)
    encoding = x.encodingType(
        trajectory=x.trajectoryType(trajectory),
        encodedSpace=space(enc, enc_fov),
        reconSpace=space(recon, recon),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=0, center=k1 // 2, maximum=k1 - 1),
            repetition=x.limitType(minimum=0, center=reps // 2, maximum=reps - 1),
        ),
    )
    header = x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=128000000),
        acquisitionSystemInformation=system,
        encoding=[encoding],
    )
    return header.toXML("utf-8")


def mrpro_like(
    path: Path,
    *,
    trajectory: str = "cartesian",
    vendor: str | None = "OSI2",
    repetitions: int = 1,
    discard: tuple[int, int] = (0, 0),
    noise: float = 1e-3,
    seed: int = 0,
) -> Path:
    """Write a raw file as mrpro's test writer does (module docstring); return its path."""
    rng = np.random.default_rng(seed)
    nro = 2 * N  # readout oversampled 2×
    kfe = np.arange(nro) - nro // 2  # samples from the centre: ±N_enc,x/2
    if trajectory == "cartesian":
        lines = np.arange(N) - N // 2
        xml = _xml((nro, N), (nro, N), (N, N), "cartesian", vendor, repetitions, N)
    else:  # uniform radial, N spokes over π, k in ±N_enc/2 on both axes
        lines = np.arange(N)
        xml = _xml((nro, nro), (nro, nro), (N, N), "radial", vendor, repetitions, N)
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    try:
        ds.write_xml_header(xml)
        acq = ismrmrd.Acquisition()
        acq.resize(nro, COILS, trajectory_dimensions=2)
        acq.version = 1
        acq.available_channels = COILS
        acq.center_sample = nro // 2
        acq.read_dir, acq.phase_dir, acq.slice_dir = (1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)
        counter = 0
        for _ in range(4):  # noise scans
            acq.clearAllFlags()
            acq.setFlag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            acq.scan_counter = counter
            acq.data[:] = noise * (
                rng.standard_normal((COILS, nro)) + 1j * rng.standard_normal((COILS, nro))
            )
            ds.append_acquisition(acq)
            counter += 1
        for rep in range(repetitions):
            acq.idx.repetition = rep
            for i, line in enumerate(lines):
                if trajectory == "cartesian":
                    kx, ky = kfe.astype(float), np.full(nro, float(line))
                    k = coil_kspace(ky / N, kx / nro)  # cycles per pixel
                else:
                    angle = line * np.pi / N
                    kx, ky = np.cos(angle) * kfe, np.sin(angle) * kfe
                    k = coil_kspace(ky / nro, kx / nro)
                k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
                if vendor is not None and vendor.lower() == "siemens":
                    k = k.conj()  # what mrpro's reader undoes for Siemens
                pre, post = discard if i < 5 else (0, 0)
                acq.resize(nro + pre + post, COILS, trajectory_dimensions=2)
                acq.clearAllFlags()
                acq.scan_counter = counter
                acq.discard_pre, acq.discard_post = pre, post
                acq.center_sample = nro // 2  # not moved by discard_pre, as mrpro writes it
                acq.idx.kspace_encode_step_1 = (
                    int(line + N // 2) if trajectory == "cartesian" else int(line)
                )
                acq.data[:] = np.pad(k, ((0, 0), (pre, post)))
                acq.traj[:] = np.pad(np.stack([kx, ky], axis=1), ((pre, post), (0, 0)))
                ds.append_acquisition(acq)
                counter += 1
    finally:
        ds.close()
    return path


# -- independent readers and checks ---------------------------------------------------------------
def plain_fft_reader(path: Path) -> np.ndarray:
    """``(T, Ny, Nx)`` root-sum-of-squares image of a Cartesian file by the format alone.

    The ``ismrmrd`` package reads every readout; its ``discard_pre``/``discard_post`` samples
    are cut, sample ``center_sample`` of what is left goes to the readout centre, line ``k1`` to
    row ``k1 − centre + Ny/2``; Siemens data are conjugated; a centred inverse FFT and the
    central ``Nx`` columns (readout oversampling) give each coil's image.
    """
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        hdr = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
        enc = hdr.encoding[0]
        nro, ny = enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y
        nx = enc.reconSpace.matrixSize.x
        centre = enc.encodingLimits.kspace_encoding_step_1.center
        frames: dict[int, np.ndarray] = {}
        for i in range(ds.number_of_acquisitions()):
            acq = ds.read_acquisition(i)
            if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) or acq.is_flag_set(
                ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
            ):
                continue
            d = acq.data[:, acq.discard_pre : acq.number_of_samples - acq.discard_post]
            if acq.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
                d = d[:, ::-1]
            k = frames.setdefault(
                acq.idx.repetition, np.zeros((acq.active_channels, ny, nro), complex)
            )
            col = nro // 2 - acq.center_sample
            k[:, acq.idx.kspace_encode_step_1 - centre + ny // 2, col : col + d.shape[1]] = d
    finally:
        ds.close()
    kspace = np.stack([frames[f] for f in sorted(frames)])
    vendor = (
        hdr.acquisitionSystemInformation.systemVendor if hdr.acquisitionSystemInformation else None
    )
    if vendor and vendor.lower() == "siemens":
        kspace = kspace.conj()
    img = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    x0 = nro // 2 - nx // 2
    return np.sqrt((np.abs(img[..., x0 : x0 + nx]) ** 2).sum(1))


def cartesian_image(path: Path, **options) -> np.ndarray:
    """``(T, Ny, Nx)`` root-sum-of-squares image of mridip's k-space, its whitening undone."""
    ks = load(path, **options).kspace
    w = torch.as_tensor(np.linalg.inv(np.asarray(ks.meta["whitening"])), dtype=torch.complex64)
    coil = ifft2c(torch.einsum("cd,tdyx->tcyx", w, ks.data))
    return coil.abs().square().sum(1).sqrt().numpy()


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean PSNR (dB) after least-squares intensity scaling (:func:`mridip.metrics.evaluate`)."""
    if reference.ndim == 2:
        reference = np.broadcast_to(reference, image.shape)
    return float(evaluate(torch.as_tensor(image), torch.as_tensor(reference.copy()))["psnr"])


def assert_orientation(image: np.ndarray, reference: np.ndarray, margin_db: float = 6.0) -> float:
    """The image fits ``reference`` by at least ``margin_db`` better than any flip or
    transposition of it does; returns the PSNR."""
    right = psnr(image, reference)
    others = {
        "flip y": reference[::-1],
        "flip x": reference[:, ::-1],
        "flip both": reference[::-1, ::-1],
        "transpose": reference.T,
        "transpose, flip both": reference.T[::-1, ::-1],
    }
    for name, other in others.items():
        assert right > psnr(image, np.ascontiguousarray(other)) + margin_db, name
    return right


# -- Cartesian ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "vendor, repetitions, discard",
    [("OSI2", 1, (0, 0)), ("Siemens", 1, (0, 0)), ("Siemens", 3, (10, 6)), (None, 2, (4, 0))],
    ids=["osi2_single", "siemens_single", "siemens_repetitions_discard", "no_vendor_discard"],
)
def test_mrpro_cartesian_file_gives_the_plain_fft_image(tmp_path, vendor, repetitions, discard):
    """Every Cartesian file, trajectory stored or not, gives the plain FFT reader's image in
    the same orientation: a single repetition is one frame, discarded samples leave the
    centre where center_sample says, Siemens data are conjugated back."""
    path = mrpro_like(tmp_path / "c.h5", vendor=vendor, repetitions=repetitions, discard=discard)
    image = cartesian_image(path)  # no warning: nothing is wrong with these files
    assert image.shape == (repetitions, N, N)
    plain = plain_fft_reader(path)
    assert psnr(image, plain) > 80
    assert assert_orientation(image, truth()) > 40


def test_siemens_orientation_needs_the_conjugation(tmp_path, capsys):
    """Without the vendor rule (--conjugate off) a Siemens file comes out turned by 180°."""
    path = mrpro_like(tmp_path / "s.h5", vendor="Siemens")
    turned = cartesian_image(path, conjugate=False)[0]
    # conjugation turns the image about pixel N/2: compare with the truth turned the same way
    rolled = np.roll(truth()[::-1, ::-1], 1, axis=(0, 1))
    assert assert_orientation(turned[None], rolled) > 40
    code, out, err = _cli(["info", path, "--conjugate", "off"], capsys)
    assert code == 0 and "conjugated: False (--conjugate" in out and err == ""


@pytest.mark.skipif(
    shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
    reason="ismrmrd-tools not installed (apt install ismrmrd-tools)",
)
def test_ismrmrd_generator_file_gives_the_plain_fft_image(tmp_path):
    """The ISMRMRD project's own generator (no vendor, no stored trajectory, 2× readout
    oversampling, noise scans, two repetitions): mridip's image is the plain FFT reader's,
    and it is the phantom the file stores, in the same orientation."""
    from mridip.io import read_image

    path = tmp_path / "shepp_logan.h5"
    subprocess.run(
        [
            "ismrmrd_generate_cartesian_shepp_logan",
            "-m",
            "32",
            "-c",
            "4",
            "-O",
            "2",
            "-r",
            "2",
            "-C",
            "-n",
            "0.01",
            "-o",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    image = cartesian_image(path)
    assert psnr(image, plain_fft_reader(path)) > 80
    phantom = np.abs(read_image(f"{path}:/dataset/phantom")[0])
    assert assert_orientation(image, phantom, margin_db=3) > 25


# -- radial and spiral ----------------------------------------------------------------------------
def _sense(ks, iters: int = 30) -> np.ndarray:
    """CG-SENSE with the true maps (whitened like the data): no coil estimation in the way."""
    from mridip.methods import reconstruct

    w = torch.as_tensor(np.asarray(ks.meta["whitening"]), dtype=torch.complex64)
    maps = torch.einsum("cd,dyx->cyx", w, torch.as_tensor(true_maps(), dtype=torch.complex64))
    return reconstruct(ks, "cgsense", maps, iters=iters, progress=False).image.abs().numpy()


@pytest.mark.parametrize("repetitions", [1, 2])
def test_mrpro_radial_file_matches_its_truth(tmp_path, repetitions):
    """mrpro's radial file: k in ±N_enc/2 over 2N-sample spokes. A single repetition has no
    frame labels: one static frame, with the warning that says how to bin a stream."""
    path = mrpro_like(tmp_path / "r.h5", trajectory="radial", repetitions=repetitions)
    if repetitions == 1:
        with pytest.warns(RawDataWarning, match="one static frame; give --spokes-per-frame"):
            ks = load(path).kspace
    else:
        ks = load(path).kspace
    assert ks.n_frames == repetitions and ks.meta["spokes_per_frame"] == N
    assert ks.meta["trajectory_units"].startswith("cycles per FOV (±N/2, N = 64)")
    assert assert_orientation(_sense(ks), truth()) > 30


def _spiral_file(path: Path, trajectory: str = "spiral", absurd: float = 0.0) -> Path:
    """A JEMRIS-like spiral: interleaves without frame labels, k stored in ±0.5 cycles per
    voxel; ``absurd`` > 0 replaces every second readout by samples of that magnitude."""
    from mridip import sampling

    n_il = sampling.spiral_nyquist_interleaves(N)
    traj, _ = sampling.spiral_trajectory(N, 2 * n_il, 1, rotation="none")
    traj = traj[0].numpy().reshape(2, 2 * n_il, -1) / (2 * np.pi)  # rows (k_y, k_x), cycles
    samples = traj.shape[-1]
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    try:
        ds.write_xml_header(_xml((N, N), (N, N), (N, N), trajectory, None, 1, 2 * n_il))
        acq = ismrmrd.Acquisition()
        acq.resize(samples, COILS, trajectory_dimensions=2)
        acq.version = 1
        for i in range(2 * n_il):
            ky, kx = traj[0, i], traj[1, i]
            acq.scan_counter = i
            acq.idx.kspace_encode_step_1 = i
            acq.data[:] = coil_kspace(ky, kx)
            if absurd and i % 2:
                acq.data[:] = absurd
            acq.traj[:] = np.stack([kx, ky], axis=1)
            ds.append_acquisition(acq)
    finally:
        ds.close()
    return path


def test_spiral_file_without_frame_labels_is_one_static_frame(tmp_path):
    path = _spiral_file(tmp_path / "sp.h5")
    with pytest.warns(RawDataWarning, match="one static frame"):
        ks = load(path).kspace
    assert ks.n_frames == 1 and ks.meta["trajectory_units"] == "cycles per voxel (±0.5)"
    assert assert_orientation(_sense(ks), truth()) > 30


# -- refused in one line --------------------------------------------------------------------------
def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _no_samples(path: Path) -> Path:
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    try:
        ds.write_xml_header(_xml((2 * N, N), (2 * N, N), (N, N), "cartesian", None, 1, N))
        acq = ismrmrd.Acquisition()
        acq.resize(0, COILS)
        for i in range(N):
            acq.idx.kspace_encode_step_1 = i
            ds.append_acquisition(acq)
    finally:
        ds.close()
    return path


def _outside(path: Path) -> Path:
    """mrpro's Cartesian file whose header declares half the lines it holds."""
    mrpro_like(path)
    import h5py

    with h5py.File(path, "a") as f:
        xml = f["dataset/xml"][0]
        xml = (xml.decode() if isinstance(xml, bytes) else str(xml)).replace(
            f"<y>{N}</y>", f"<y>{N // 2}</y>", 1
        )
        del f["dataset/xml"]
        f.create_dataset("dataset/xml", data=[xml.encode()], dtype=h5py.string_dtype())
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (_no_samples, "imaging readouts hold no samples"),
        (lambda p: _spiral_file(p, absurd=2.4e38), "samples of absurd magnitude (up to 2.4e+38"),
        (_outside, "fall outside the encoded matrix of 16 lines"),
    ],
    ids=["no_samples", "absurd_values", "lines_outside"],
)
def test_unusable_file_is_refused_in_one_line(tmp_path, make, message, capsys):
    path = make(tmp_path / "bad.h5")
    with pytest.raises(RawDataError):
        load(path)
    for argv in (["info", path], ["recon", path, "-o", tmp_path / "out", "--method", "zf"]):
        code, out, err = _cli(argv, capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


# -- exit ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_info_that_printed_its_result_exits_0(tmp_path):
    """``mridip info`` of a spiral stream binned with --spokes-per-frame runs torchkbnufft's
    density compensation, whose TorchScript forks start PyTorch's inter-op threads; the
    interpreter's teardown then aborted some runs (exit 134) after the result was printed.
    Ten runs in fresh processes must all exit 0."""
    path = _spiral_file(tmp_path / "sp.h5")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    for _ in range(10):
        run = subprocess.run(
            [sys.executable, "-m", "mridip.cli", "info", str(path), "--spokes-per-frame", "2"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-500:]
        assert "spokes/frame 2 ×" in run.stdout and "terminate" not in run.stderr
