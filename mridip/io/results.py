"""Result files: ``recon.h5`` with the image series, configuration and history, plus pictures.

``recon.h5`` layout: ``/image`` ``(T, Ny, Nx)`` complex64; ``/frame_times`` ``(T,)`` seconds;
``/maps`` ``(C, Ny, Nx)`` complex64 when given; ``/history/<name>`` 1-D arrays (loss curves);
root attributes ``method``, ``config`` (JSON), ``mridip_version``, ``seconds``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mridip.errors import ResultError
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
) -> dict[str, Path]:
    """Write ``recon.h5``, ``cine.gif`` and ``montage.png`` (and ``loss.png`` with a history).

    All files are written under temporary names and renamed together at the end, so either
    every output exists complete or none of them was replaced.

    Returns
    -------
    dict
        Paths of the files written, by kind.
    """
    from mridip import __version__
    from mridip.io import pictures as pics

    out = Path(outdir)
    image = np.asarray(image)
    if image.ndim != 3 or not np.iscomplexobj(image):
        raise ResultError(f"image must be complex (T, Ny, Nx), got {image.dtype} {image.shape}")
    targets = {"h5": out / "recon.h5"}
    if pictures:
        targets["gif"] = out / "cine.gif"
        targets["montage"] = out / "montage.png"
        if history and any(len(v) > 1 for v in history.values()):
            targets["loss"] = out / "loss.png"
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in targets.items()}
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
            f.attrs["method"] = method
            f.attrs["config"] = json.dumps(config, default=str, sort_keys=True)
            f.attrs["mridip_version"] = __version__
            if seconds is not None:
                f.attrs["seconds"] = float(seconds)
        if pictures:
            pics.write_gif(tmp["gif"], image, frame_times)
            pics.write_montage(tmp["montage"], image, frame_times, title=method)
            if "loss" in tmp and history:
                pics.write_loss(tmp["loss"], history)
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
