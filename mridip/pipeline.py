"""One slice of a raw file to a result folder: the steps ``mridip recon`` runs once and
``mridip batch`` runs per (file, slice) task.

Two steps, so that ``mridip recon`` can choose a regularisation weight (``--lam-sweep``)
between them: :func:`prepare_slice` (load, prewhiten, compress coils, coil maps) and
:func:`reconstruct_slice` (the method, then ``recon.h5``, ``cine.gif`` and ``montage.png``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mridip.errors import MridipError
from mridip.kspace import DynamicKSpace
from mridip.methods import Reconstruction
from mridip.preprocess import LoadedScan

__all__ = ["PreparedSlice", "prepare_slice", "reconstruct_slice"]


@dataclass
class PreparedSlice:
    """One slice ready for a method.

    Attributes
    ----------
    scan : LoadedScan
        The loaded slice, with the file's reference series when it stores one.
    kspace : DynamicKSpace
        Prewhitened k-space, coil-compressed when asked.
    maps : torch.Tensor
        Coil maps ``(C, Ny, Nx)`` complex64 matching ``kspace``'s coils.
    maps_source : str
        ``"file"`` or the estimator's name (``espirit``, ``walsh``, ...).
    """

    scan: LoadedScan
    kspace: DynamicKSpace
    maps: torch.Tensor
    maps_source: str


def prepare_slice(
    raw: str | os.PathLike[str],
    *,
    group: str | None = None,
    slice_index: int = 0,
    spokes_per_frame: int | None = None,
    time_dim: str | None = None,
    conjugate: bool | None = None,
    coils: int | None = None,
    maps: str = "auto",
    device: str = "cpu",
) -> PreparedSlice:
    """Load one slice of an ISMRMRD raw file and get its coil maps.

    Parameters
    ----------
    raw : path
        ISMRMRD raw file.
    group, slice_index, spokes_per_frame, time_dim, conjugate
        As :func:`mridip.preprocess.load`.
    coils : int, optional
        Compress to this many virtual coils (PCA) before estimating the maps.
    maps : str
        ``"auto"`` (the file's reference maps when stored, else ESPIRiT), ``"file"``, or an
        estimator of :func:`mridip.coils.estimate_maps`.
    device : str
        Where the maps are estimated (``cpu``, ``cuda``, ``auto``).

    Returns
    -------
    PreparedSlice

    Raises
    ------
    RawDataError
        The file cannot be read or holds no reconstructable slice ``slice_index``.
    ConfigError
        ``device`` asks for CUDA on a machine without it.
    MridipError
        ``maps="file"`` but the file stores no maps.
    """
    from mridip.coils import DEFAULT_METHOD, compress_coils, estimate_maps
    from mridip.methods import resolve_device
    from mridip.preprocess import load

    dev = resolve_device(device)  # fail before loading on a machine without CUDA
    scan = load(
        raw,
        group=group,
        slice_index=slice_index,
        spokes_per_frame=spokes_per_frame,
        time_dim=time_dim,
        conjugate=conjugate,
    )
    kspace, stored = scan.kspace, scan.maps
    if coils is not None:  # compress first: the maps are then estimated on fewer coils
        kspace, stored = compress_coils(kspace, stored, coils)
    source = maps
    if maps == "auto":
        source = "file" if stored is not None else DEFAULT_METHOD
    if source == "file":
        if stored is None:
            raise MridipError(f"--maps file: {raw} stores no reference coil maps")
        found = stored
    else:
        found = estimate_maps(kspace.to(dev), method=source)  # on the GPU when asked
    return PreparedSlice(scan, kspace, found, source)


def reconstruct_slice(
    prep: PreparedSlice,
    output: str | os.PathLike[str],
    *,
    method: str,
    raw: str | os.PathLike[str],
    slice_index: int = 0,
    device: str = "cpu",
    seed: int = 0,
    iters: int | None = None,
    options: dict[str, Any] | None = None,
    formats: tuple[str, ...] | None = None,
) -> tuple[Reconstruction, dict[str, Any]]:
    """Reconstruct a prepared slice and write ``output/recon.h5``, ``cine.gif``, ``montage.png``.

    Parameters
    ----------
    prep : PreparedSlice
        From :func:`prepare_slice`.
    output : path
        Result folder (created; each file is written under a temporary name and renamed).
    method : str
        A key of :data:`mridip.methods.METHODS`.
    raw, slice_index
        Where the slice came from, recorded in the configuration.
    device, seed, iters, options
        As :func:`mridip.methods.reconstruct`.
    formats : tuple of str, optional
        Outputs to write (:data:`mridip.io.export.FORMATS`; default ``h5`` and ``gif``).

    Returns
    -------
    rec : Reconstruction
        ``rec.image`` is ``(T, Ny, Nx)`` complex64.
    config : dict
        The configuration written into ``recon.h5``.

    Raises
    ------
    ConfigError
        Unknown method or bad option.
    """
    from mridip.io.results import write_recon
    from mridip.methods import reconstruct

    rec = reconstruct(
        prep.kspace, method, prep.maps, device=device, seed=seed, iters=iters, **(options or {})
    )
    config = dict(
        rec.config,
        raw=str(raw),
        slice=slice_index,
        maps=prep.maps_source,
        coils=prep.kspace.n_coils,
        group=prep.scan.raw.group if prep.scan.raw is not None else None,
    )
    history = {k: v for k, v in rec.history.items() if len(v)}
    write_recon(
        output,
        rec.image.numpy(),
        method=method,
        config=config,
        frame_times=None if rec.frame_times is None else rec.frame_times.numpy(),
        maps=rec.maps.numpy(),
        history={k: np.asarray(v) for k, v in history.items()},
        seconds=rec.seconds,
        geometry=rec.geometry,
        formats=formats,
    )
    return rec, config
