"""Result files: ``recon.h5`` with the image series, configuration and history, plus pictures.

``recon.h5`` layout: ``/image`` ``(T, Ny, Nx)`` complex64; ``/frame_times`` ``(T,)`` seconds;
``/maps`` ``(C, Ny, Nx)`` complex64 when given; ``/history/<name>`` 1-D arrays (loss curves);
root attributes ``method``, ``config`` (JSON), ``mridip_version``, ``seconds``, and
``geometry`` (JSON of :class:`mridip.geometry.Geometry`) when the scan had one, so that
``mridip export`` can write NIfTI, DICOM, MRD or MP4 from ``recon.h5`` alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mridip.errors import ResultError
from mridip.geometry import Geometry
from mridip.io import export as ex
from mridip.io.atomic import atomic_path


def write_recon(
    outdir: str | os.PathLike[str],
    image: np.ndarray,
    *,
    method: str,
    config: dict[str, Any],
    frame_times: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    history: dict[str, np.ndarray] | None = None,
    seconds: float | None = None,
    pictures: bool = True,
    geometry: Geometry | None = None,
    formats: tuple[str, ...] | list[str] | None = None,
) -> dict[str, Path]:
    """Write ``recon.h5``, ``cine.gif`` and ``montage.png`` (and ``loss.png`` with a history,
    ``lam.png`` with a λ choice, ``config["lam_choice"]``), and any of NIfTI, DICOM, MRD
    images and MP4 that ``formats`` names.

    All files are written under temporary names and renamed together at the end, so either
    every output exists complete or none of them was replaced.

    Parameters
    ----------
    geometry
        Scanner geometry, stored in ``recon.h5`` and used by the NIfTI, DICOM and MRD writers
        (None: identity geometry there, with a :class:`~mridip.io.export.GeometryWarning`).
    formats
        Any of :data:`~mridip.io.export.FORMATS` (``gif`` stands for the pictures: GIF,
        montage, loss curve). Default ``h5`` and, with ``pictures``, ``gif``.

    Returns
    -------
    dict
        Paths of the files written, by kind (``dicom`` is a folder).

    Raises
    ------
    ResultError
        A malformed image, an unknown format, or an output path that cannot hold its format.
    """
    from mridip import __version__
    from mridip.io import pictures as pics

    out = Path(outdir)
    image = np.asarray(image)
    if image.ndim != 3 or not np.iscomplexobj(image):
        raise ResultError(f"image must be complex (T, Ny, Nx), got {image.dtype} {image.shape}")
    if formats is None:
        formats = ex.DEFAULT_FORMATS if pictures else ("h5",)
    formats = ex.parse_formats(",".join(formats))
    choice = config.get("lam_choice") if isinstance(config.get("lam_choice"), dict) else None
    targets: dict[str, Path] = {}
    if "h5" in formats:
        targets["h5"] = out / "recon.h5"
    if "gif" in formats:
        targets["gif"] = out / "cine.gif"
        targets["montage"] = out / "montage.png"
        if history and any(len(v) > 1 for v in history.values()):
            targets["loss"] = out / "loss.png"
        if choice:
            targets["lam"] = out / "lam.png"
    exports = [k for k in ex.EXPORT_FORMATS if k in formats]
    for kind in exports:
        targets[kind] = out / ex.OUTPUT_NAMES[kind]
        ex.check_target(kind, targets[kind])
    resolved = None
    if any(k in exports for k in ("nifti", "dicom", "mrd")):
        resolved = ex.resolve_geometry(geometry, image, "the result")
    dt = ex.frame_period(frame_times, geometry)
    with contextlib.ExitStack() as stack:
        tmp = {
            k: stack.enter_context(ex.atomic_dir(p) if k == "dicom" else atomic_path(p))
            for k, p in targets.items()
        }
        for kind in exports:
            ex.write_to_temporary(
                kind,
                tmp[kind],
                targets[kind],
                image,
                resolved or Geometry.identity(image.shape[-2:]),
                frame_times,
                dt=dt,
                method=method,
            )
        if "h5" in tmp:
            with h5py.File(tmp["h5"], "w") as f:
                f.create_dataset("image", data=image.astype(np.complex64))
                if frame_times is not None:
                    f.create_dataset("frame_times", data=np.asarray(frame_times, np.float64))
                if maps is not None:
                    f.create_dataset("maps", data=np.asarray(maps, np.complex64))
                if history:
                    g = f.create_group("history")
                    for name, values in history.items():
                        g.create_dataset(name, data=np.asarray(values))
                if choice:  # the λ choice's curve (mridip.lam.LamChoice.record)
                    g = f.create_group("lam_choice")
                    g.create_dataset("lams", data=np.asarray(choice["lams"], np.float64))
                    g.create_dataset("scores", data=np.asarray(choice["scores"], np.float64))
                    for key in ("lam", "rule", "score", "seconds", "solves"):
                        g.attrs[key] = choice[key]
                f.attrs["method"] = method
                f.attrs["config"] = json.dumps(config, default=str, sort_keys=True)
                f.attrs["mridip_version"] = __version__
                if seconds is not None:
                    f.attrs["seconds"] = float(seconds)
                if geometry is not None:
                    f.attrs["geometry"] = json.dumps(geometry.to_dict(), sort_keys=True)
        if "gif" in tmp:
            pics.write_gif(tmp["gif"], image, frame_times)
            pics.write_montage(tmp["montage"], image, frame_times, title=method)
            if "loss" in tmp and history:
                pics.write_loss(tmp["loss"], history)
            if "lam" in tmp and choice:
                pics.write_lam_curve(tmp["lam"], choice, method)
    return targets


def read_image(spec: str | os.PathLike[str]) -> np.ndarray:
    """Read an image series from ``FILE.h5[:/dataset]``.

    Without a dataset: ``/image`` (a recon) or else ``/reference`` (a simulated raw file).

    Raises
    ------
    ResultError
        Missing file, not HDF5, no such dataset, not a 3-D series.
    """
    text = str(spec)
    path, dataset = text, None
    if ":" in text and not Path(text).exists():
        path, dataset = text.rsplit(":", 1)
    p = Path(path)
    if not p.exists():
        raise ResultError(f"no such file: {p}")
    try:
        f = h5py.File(p, "r")
    except OSError:
        raise ResultError(f"{p} is not an HDF5 file") from None
    with f:
        if dataset is None:
            dataset = next((d for d in ("image", "reference") if d in f), None)
            if dataset is None:
                raise ResultError(
                    f"{p} has neither /image nor /reference; name one as {p}:/dataset"
                )
        if dataset.strip("/") not in f or not isinstance(f[dataset.strip("/")], h5py.Dataset):
            raise ResultError(f"{p} has no dataset {dataset}")
        arr = f[dataset.strip("/")][()]
    arr = np.asarray(arr)
    if arr.dtype.names and {"real", "imag"} <= set(arr.dtype.names):
        arr = arr["real"] + 1j * arr["imag"]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ResultError(f"{p}:{dataset} is {arr.shape}; expected an image series (T, Ny, Nx)")
    return arr


@dataclass(frozen=True)
class StoredRecon:
    """What ``recon.h5`` holds for the exporters: series, frame times, method, geometry."""

    image: np.ndarray
    frame_times: np.ndarray | None
    method: str
    geometry: Geometry | None


def read_recon(path: str | os.PathLike[str]) -> StoredRecon:
    """Read a ``recon.h5`` written by :func:`write_recon`.

    Raises
    ------
    ResultError
        Missing file, not HDF5, no ``/image``, or a ``geometry`` attribute that does not parse.
    """
    p = Path(path)
    if not p.exists():
        raise ResultError(f"no such file: {p}")
    if p.is_dir():
        raise ResultError(f"{p} is a folder; give the recon.h5 inside it")
    try:
        f = h5py.File(p, "r")
    except OSError:
        raise ResultError(f"{p} is not an HDF5 file") from None
    with f:
        if not isinstance(f.get("image"), h5py.Dataset):
            raise ResultError(f"{p} has no /image: not a recon.h5 written by mridip recon")
        image = np.asarray(f["image"][()])
        times = f.get("frame_times")
        frame_times = None if not isinstance(times, h5py.Dataset) else np.asarray(times[()])
        method = str(f.attrs.get("method", ""))
        text = f.attrs.get("geometry")
    if image.ndim != 3:
        raise ResultError(f"{p}:/image is {image.shape}; expected an image series (T, Ny, Nx)")
    geometry = None
    if text is not None:
        try:
            geometry = Geometry.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ResultError(f"{p}: the stored geometry does not parse ({exc})") from None
    return StoredRecon(image, frame_times, method, geometry)


def export_recon(
    recon: str | os.PathLike[str],
    to: str,
    output: str | os.PathLike[str],
    *,
    complex_values: bool = False,
) -> Path:
    """Write a ``recon.h5`` as NIfTI, DICOM, MRD images or MP4 (``mridip export``).

    Parameters
    ----------
    recon
        A ``recon.h5``.
    to
        One of :data:`~mridip.io.export.EXPORT_FORMATS`.
    output
        The file (NIfTI ``.nii``/``.nii.gz``, MRD ``.h5``, ``.mp4``) or, for DICOM, the folder.
    complex_values
        NIfTI and MRD: store complex values instead of the magnitude.

    Returns
    -------
    Path
        What was written.

    Raises
    ------
    ResultError
        A bad recon file, an unknown format, or an output path that cannot hold the format.
        A result without geometry is written with identity geometry and a
        :class:`~mridip.io.export.GeometryWarning`.
    """
    if to not in ex.EXPORT_FORMATS:
        raise ResultError(
            f"unknown export format {to!r}; choose from {', '.join(ex.EXPORT_FORMATS)}"
        )
    out = Path(output)
    ex.check_target(to, out)
    r = read_recon(recon)
    if to == "nifti":
        return ex.write_nifti(
            out, r.image, r.geometry, r.frame_times, complex_values=complex_values
        )
    if to == "dicom":
        ex.write_dicom(out, r.image, r.geometry, r.frame_times, method=r.method)
        return out
    if to == "mrd":
        return ex.write_mrd(
            out, r.image, r.geometry, r.frame_times, method=r.method, complex_values=complex_values
        )
    return ex.write_mp4(out, r.image, r.frame_times, geometry=r.geometry)
