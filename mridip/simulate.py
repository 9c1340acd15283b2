"""Simulated acquisitions with a known truth, written as ISMRMRD raw files.

The object is rendered at twice the matrix and its k-space is taken from that finer image, so
the data are not produced by the operator that reconstructs them (no "inverse crime"). The
truth stored as ``/reference`` is the band-limited image at the reconstruction matrix.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mridip import phantoms, sampling
from mridip.errors import ConfigError
from mridip.io.raw_writer import RawAcquisitions, make_header, write_raw
from mridip.operators.cartesian import fft2c, ifft2c


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``noise`` is the standard deviation of the complex k-space noise per
    coil, relative to the truth's peak magnitude of 1 (orthonormal FFT: a fully sampled
    image carries the same standard deviation per voxel and coil).

    ``texture`` and ``breathing`` (cine only) make the phantom less piecewise constant and less
    static: tissue texture, and head-foot motion of the whole thorax
    (:func:`mridip.phantoms.cine_phantom`).

    ``position_mm``, ``read_dir`` and ``phase_dir`` place the slice in the patient (LPS
    millimetres and unit vectors of image x and y; the slice normal is ``read × phase``): an
    oblique slice tests the geometry of the NIfTI, DICOM and MRD outputs."""

    kind: str = "cine"
    trajectory: str = "radial"
    matrix: int = 64
    frames: int = 12
    coils: int = 8
    spokes: int = 13
    acceleration: float = 8.0
    noise: float = 0.01
    seed: int = 0
    texture: float = 0.0
    breathing: float = 0.0
    fov_mm: float = 300.0
    tr_ms: float = 3.0
    position_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    read_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    phase_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)

    def check(self) -> None:
        """Raise :class:`ConfigError` on impossible settings."""
        if self.kind not in ("cine", "perfusion"):
            raise ConfigError(f"--kind must be cine or perfusion, not {self.kind!r}")
        if not (0 <= self.texture <= 1):
            raise ConfigError(f"--texture must be between 0 and 1, got {self.texture}")
        if self.texture and self.kind != "cine":
            raise ConfigError("--texture is for --kind cine")
        if not (0 <= self.breathing <= 0.2):
            raise ConfigError(f"--breathing must be between 0 and 0.2, got {self.breathing}")
        if self.breathing and self.kind != "cine":
            raise ConfigError("--breathing is for --kind cine (perfusion always breathes)")
        if self.trajectory not in ("radial", "cartesian"):
            raise ConfigError(f"--trajectory must be radial or cartesian, not {self.trajectory!r}")
        if not 8 <= self.matrix <= 512:
            raise ConfigError(f"--matrix must be between 8 and 512, got {self.matrix}")
        if not 1 <= self.frames <= 512:
            raise ConfigError(f"--frames must be between 1 and 512, got {self.frames}")
        if not 1 <= self.coils <= 64:
            raise ConfigError(f"--coils must be between 1 and 64, got {self.coils}")
        if self.spokes < 1:
            raise ConfigError(f"--spokes must be ≥ 1, got {self.spokes}")
        if self.acceleration < 1:
            raise ConfigError(f"--acceleration must be ≥ 1, got {self.acceleration}")
        if self.noise < 0:
            raise ConfigError(f"--noise must be ≥ 0, got {self.noise}")
        vecs = {"position": self.position_mm, "read-dir": self.read_dir}
        vecs["phase-dir"] = self.phase_dir
        for name, v in vecs.items():
            if len(v) != 3 or not all(math.isfinite(float(x)) for x in v):
                raise ConfigError(f"--{name} must be three finite numbers, got {v}")
        r, p = np.asarray(self.read_dir, float), np.asarray(self.phase_dir, float)
        if abs(np.linalg.norm(r) - 1) > 1e-4 or abs(np.linalg.norm(p) - 1) > 1e-4:
            raise ConfigError("--read-dir and --phase-dir must be unit vectors")
        if abs(float(r @ p)) > 1e-4:
            raise ConfigError(
                f"--read-dir and --phase-dir must be perpendicular (dot product {r @ p:.3g})"
            )


@dataclass
class Simulation:
    """A simulated scan in memory (before it is written)."""

    config: SimulationConfig
    truth: torch.Tensor  # (T, N, N) complex64
    maps: torch.Tensor  # (C, N, N) complex64
    frame_times: torch.Tensor  # (T,)
    acquisitions: RawAcquisitions
    noise_scans: np.ndarray  # (M, C, S)
    noise_cov: np.ndarray  # (C, C)
    header_xml: str


def _noise_covariance(c: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible receiver covariance: unequal gains, correlation between neighbours."""
    gains = rng.uniform(0.7, 1.3, c)
    idx = np.arange(c)
    corr = 0.3 ** np.abs(idx[:, None] - idx[None, :]) * np.exp(
        1j * 0.2 * (idx[:, None] - idx[None, :])
    )
    return (np.sqrt(gains)[:, None] * corr * np.sqrt(gains)[None, :]).astype(np.complex128)


def _complex_noise(rng: np.random.Generator, shape: tuple[int, ...], chol: np.ndarray, axis: int):
    white = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
    return np.moveaxis(np.tensordot(chol, np.moveaxis(white, axis, 0), axes=1), 0, axis)


def simulate(config: SimulationConfig, images: torch.Tensor | None = None) -> Simulation:
    """Simulate a scan (see :class:`SimulationConfig`) without writing it.

    ``images``: a series of real images ``(T, H, W)`` to scan instead of the phantom of
    ``config.kind`` (see :func:`mridip.phantoms.from_images`); ``config.frames`` must be ``T``.
    """
    config.check()
    n, t, c = config.matrix, config.frames, config.coils
    fine = (2 * n, 2 * n)
    if images is not None:
        if images.ndim != 3 or images.shape[0] != t:
            raise ConfigError(
                f"images must be ({t}, ny, nx) for {t} frames, got shape {tuple(images.shape)}"
            )
        ph = phantoms.from_images(images, fine, seed=config.seed)
    else:
        if config.kind == "cine":
            ph = phantoms.cine_phantom(
                fine, t, seed=config.seed, texture=config.texture, breathing=config.breathing
            )
        else:
            ph = phantoms.perfusion_phantom(fine, t, seed=config.seed)
    maps_fine = phantoms.coil_maps(fine, c, seed=config.seed)
    # band-limited truth and maps at the recon matrix: crop the centre of the fine k-space
    lo = n // 2

    def downsample(x: torch.Tensor) -> torch.Tensor:
        k = fft2c(x)[..., lo : lo + n, lo : lo + n]
        return ifft2c(k) / 2.0  # orthonormal FFTs: 2× matrix → halve to keep intensity

    truth = downsample(ph.image)
    maps = phantoms.coil_maps((n, n), c, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    cov = _noise_covariance(c, rng)
    chol = np.linalg.cholesky(cov)
    sigma = config.noise
    coil_imgs = ph.image[:, None] * maps_fine[None]  # (T, C, 2N, 2N)
    frame_dt = float(ph.frame_times[1] - ph.frame_times[0]) if t > 1 else 1.0

    if config.trajectory == "radial":
        import torchkbnufft as tkbn

        traj, _ = sampling.golden_angle_radial(n, config.spokes, t)  # rad/voxel at N
        nufft = tkbn.KbNufft(im_size=fine, grid_size=(4 * n, 4 * n))
        # the same k at the fine voxel size is half as many radians per voxel; torchkbnufft's
        # "ortho" divides by √(4N·4N): ×2 gives the unitary DFT of the fine image, and ÷2
        # maps it to the recon matrix (4× the voxels of a quarter the area)
        k = nufft(coil_imgs, traj / 2, norm="ortho")  # (T, C, S·2N)
        ro = 2 * n
        s = config.spokes
        data = k.reshape(t, c, s, ro).permute(0, 2, 1, 3).reshape(t * s, c, ro).numpy()
        tr = traj.reshape(t, 2, s, ro).permute(0, 2, 3, 1).reshape(t * s, ro, 2).numpy()
        tr = tr[..., ::-1] * (n / (2 * math.pi))  # ISMRMRD order (k_x, k_y), cycles per FOV
        idx = {
            "kspace_encode_step_1": np.tile(np.arange(s), t),
            "phase": np.repeat(np.arange(t), s),
        }
        spoke_time = frame_dt / s
        times = np.repeat(ph.frame_times.numpy(), s) + np.tile(np.arange(s), t) * spoke_time
        encoded = (ro, n)
        limits = {
            "kspace_encoding_step_1": (0, s - 1, 0),
            "phase": (0, t - 1, 0),
            "slice": (0, 0, 0),
        }
        traj_name = "radial"
        centre = ro // 2
        samples = ro
    else:
        mask = sampling.variable_density_mask((n, n), t, config.acceleration, seed=config.seed)
        k_full = fft2c(coil_imgs)[..., lo : lo + n, lo : lo + n] / 2.0  # (T, C, N, N)
        lines = mask[:, :, 0].nonzero()  # (L, 2): frame, ky
        data = k_full[lines[:, 0], :, lines[:, 1], :].numpy()  # (L, C, N)
        tr = None
        idx = {
            "kspace_encode_step_1": lines[:, 1].numpy(),
            "phase": lines[:, 0].numpy(),
        }
        per = np.bincount(lines[:, 0].numpy(), minlength=t)
        order_in_frame = np.concatenate([np.arange(p) for p in per])
        times = ph.frame_times.numpy()[lines[:, 0].numpy()] + order_in_frame * config.tr_ms * 1e-3
        encoded = (n, n)
        limits = {
            "kspace_encoding_step_1": (0, n - 1, n // 2),
            "phase": (0, t - 1, 0),
            "slice": (0, 0, 0),
        }
        traj_name = "cartesian"
        centre = n // 2
        samples = n
    if sigma > 0:
        data = data + sigma * _complex_noise(rng, data.shape, chol, axis=1)
    n_noise = max(4, int(math.ceil(8 * c / samples)) + 1)
    noise_scans = sigma * _complex_noise(rng, (n_noise, c, samples), chol, axis=1)
    if sigma == 0:  # noise scans of pure zeros would not whiten; keep the receiver noise shape
        noise_scans = 1e-3 * _complex_noise(rng, (n_noise, c, samples), chol, axis=1)
    header = make_header(
        encoded=encoded,
        recon=(n, n),
        fov_mm=(config.fov_mm, config.fov_mm),
        encoded_fov_mm=(config.fov_mm * encoded[0] / n, config.fov_mm),
        trajectory=traj_name,
        limits=limits,
        n_coils=c,
        tr_ms=config.tr_ms,
        patient_position="HFS",
    )
    normal = np.cross(config.read_dir, config.phase_dir)
    acq = RawAcquisitions(
        data=data.astype(np.complex64),
        traj=None if tr is None else np.ascontiguousarray(tr, np.float32),
        idx=idx,
        time_s=times,
        center_sample=centre,
        position=tuple(float(x) for x in config.position_mm),  # type: ignore[arg-type]
        read_dir=tuple(float(x) for x in config.read_dir),  # type: ignore[arg-type]
        phase_dir=tuple(float(x) for x in config.phase_dir),  # type: ignore[arg-type]
        slice_dir=(float(normal[0]), float(normal[1]), float(normal[2])),
    )
    return Simulation(config, truth, maps, ph.frame_times, acq, noise_scans, cov, header)


def write_simulation(path: str | os.PathLike[str], sim: Simulation) -> None:
    """Write a simulation as an ISMRMRD raw file with ``/reference`` and ``/reference_maps``.

    The file appears complete under ``path`` or not at all (temporary name, then rename).
    """
    import json

    extras = {
        "reference": sim.truth.numpy().astype(np.complex64),
        "reference_maps": sim.maps.numpy().astype(np.complex64),
        "reference_frame_times": sim.frame_times.numpy(),
    }
    write_raw(
        path,
        sim.header_xml,
        sim.acquisitions,
        noise=sim.noise_scans,
        extra_datasets=extras,
        attrs={"mridip_simulation": json.dumps(asdict(sim.config))},
    )
