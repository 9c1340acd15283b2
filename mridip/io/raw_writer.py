"""Writing ISMRMRD raw files with the ``ismrmrd`` package (used by ``mridip simulate``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np

from mridip.io.atomic import atomic_path

#: ISMRMRD/Siemens time-stamp tick in seconds.
TICK_S = 2.5e-3


@dataclass
class RawAcquisitions:
    """Imaging readouts to write, one row per acquisition.

    Attributes
    ----------
    data
        ``(N, C, S)`` complex64 samples.
    traj
        ``(N, S, 2)`` float32 trajectory in ISMRMRD order ``(k_x, k_y)``, in units of cycles
        per field of view (``±N/2`` at the edge of k-space), or None for Cartesian data.
    idx
        Encoding counters, each ``(N,)`` int: any of ``kspace_encode_step_1``, ``phase``,
        ``repetition``, ``slice``, ``average``, ``contrast``, ``set``, ``segment``.
    time_s
        ``(N,)`` acquisition time of each readout in seconds.
    center_sample
        Index of the k-space centre within a readout.
    flags
        ``(N,)`` uint64 ISMRMRD flag bits (0 for plain imaging).
    position, read_dir, phase_dir, slice_dir
        Slice geometry written into every readout: centre in LPS millimetres and the unit
        vectors of readout, phase encoding and slice normal (default: axial at the iso-centre).
    """

    data: np.ndarray
    traj: np.ndarray | None
    idx: dict[str, np.ndarray]
    time_s: np.ndarray
    center_sample: int
    flags: np.ndarray | None = None
    sample_time_us: float = 2.5
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    read_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    phase_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)
    slice_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)


def make_header(
    *,
    encoded: tuple[int, int],
    recon: tuple[int, int],
    fov_mm: tuple[float, float],
    trajectory: str,
    limits: dict[str, tuple[int, int, int]],
    n_coils: int,
    tr_ms: float,
    encoded_fov_mm: tuple[float, float] | None = None,
    vendor: str = "mridip-simulate",
    patient_position: str | None = None,
) -> str:
    """An ISMRMRD XML header; matrices and FOVs are ``(x, y)`` (readout first, as the format).

    ``patient_position`` (``HFS``, ``FFS`` ...) adds a ``measurementInformation`` section."""
    efov = encoded_fov_mm or fov_mm
    lim = {k: xsd.limitType(minimum=a, maximum=b, center=c) for k, (a, b, c) in limits.items()}
    enc = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=encoded[0], y=encoded[1], z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=efov[0], y=efov[1], z=8.0),
        ),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=recon[0], y=recon[1], z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=fov_mm[0], y=fov_mm[1], z=8.0),
        ),
        encodingLimits=xsd.encodingLimitsType(**lim),
        trajectory=xsd.trajectoryType(trajectory),
    )
    extra = {}
    if patient_position is not None:
        extra["measurementInformation"] = xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType(patient_position)
        )
    header = xsd.ismrmrdHeader(
        **extra,
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_897_600),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor=vendor,
            receiverChannels=n_coils,
            relativeReceiverNoiseBandwidth=0.793,
            systemFieldStrength_T=1.5,
        ),
        encoding=[enc],
        sequenceParameters=xsd.sequenceParametersType(TR=[tr_ms], TE=[tr_ms / 2]),
    )
    return xsd.ToXML(header)


def write_raw(
    path: str | os.PathLike[str],
    header_xml: str,
    acquisitions: RawAcquisitions,
    noise: np.ndarray | None = None,
    extra_datasets: dict[str, np.ndarray] | None = None,
    group: str = "dataset",
    attrs: dict[str, str] | None = None,
) -> None:
    """Write an ISMRMRD raw file atomically.

    Parameters
    ----------
    path
        Output ``.h5``; written under a temporary name and renamed when complete.
    header_xml
        The XML header (see :func:`make_header`).
    acquisitions
        Imaging readouts.
    noise
        Noise-only readouts ``(M, C, S)`` complex, written first with the noise flag.
    extra_datasets
        Arrays stored at the file's top level beside the ISMRMRD group (e.g. ``reference``).
    group
        Name of the ISMRMRD group.
    attrs
        Attributes of the file's root (e.g. the simulation's configuration as JSON).
    """
    acq = acquisitions
    with atomic_path(path) as tmp:
        ds = ismrmrd.Dataset(str(tmp), group, create_if_needed=True)
        try:
            ds.write_xml_header(header_xml)
            counter = 0
            if noise is not None:
                for m in range(noise.shape[0]):
                    a = ismrmrd.Acquisition.from_array(np.ascontiguousarray(noise[m], np.complex64))
                    a.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
                    a.scan_counter = counter
                    a.sample_time_us = acq.sample_time_us
                    a.available_channels = noise.shape[1]
                    ds.append_acquisition(a)
                    counter += 1
            n = acq.data.shape[0]
            ticks = np.round(np.asarray(acq.time_s) / TICK_S).astype(np.int64)
            for i in range(n):  # writing is set-up, once per file
                traj = None if acq.traj is None else np.ascontiguousarray(acq.traj[i], np.float32)
                a = ismrmrd.Acquisition.from_array(
                    np.ascontiguousarray(acq.data[i], np.complex64), traj
                )
                for name, values in acq.idx.items():
                    setattr(a.idx, name, int(values[i]))
                if acq.flags is not None and acq.flags[i]:
                    a.flags = int(acq.flags[i])
                a.scan_counter = counter
                a.acquisition_time_stamp = int(ticks[i])
                a.center_sample = acq.center_sample
                a.sample_time_us = acq.sample_time_us
                a.available_channels = acq.data.shape[1]
                a.position[:] = acq.position
                a.read_dir[:] = acq.read_dir
                a.phase_dir[:] = acq.phase_dir
                a.slice_dir[:] = acq.slice_dir
                counter += 1
                ds.append_acquisition(a)
        finally:
            ds.close()
        if extra_datasets or attrs:
            with h5py.File(tmp, "a") as f:
                for name, arr in (extra_datasets or {}).items():
                    f.create_dataset(name, data=arr)
                for key, value in (attrs or {}).items():
                    f.attrs[key] = value
