"""Retrospective studies: datasets × sampling × acceleration × methods × seeds from a TOML file.

A study takes fully sampled (or simulated) image series, undersamples them in many ways,
reconstructs every case with many methods and writes the table and figures of a paper::

    cfg = load_study("study.toml")           # parse and check; ConfigError names the bad key
    result = run(cfg, "out/study", jobs=2)   # results.csv, summary.md, figures/, cells/

Each combination is a *cell*. A cell is identified by a hash of everything that determines its
result (dataset, sampling, acceleration, method and options, seed, device, and the size and
time of the data file), and its outcome is written atomically to ``OUT/cells/<id>.json`` (with
``<id>.npz``: the magnitude series and the cell's mask or trajectory) as soon as it finishes.
A rerun reuses every cell finished without error and runs only the cells that are new or
whose configuration changed, or that failed before. A cell that raises is recorded with its
one-line error; the others go on.

Image series are scanned without the "inverse crime": the object lives on a grid twice the
reconstruction matrix, its k-space is taken there (FFT, or NUFFT at the same physical k), and
the truth is its band-limited image at the matrix, as in :mod:`mridip.simulate`. The file
format is documented in ``docs/study.md``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mridip import batch, phantoms, sampling
from mridip.errors import ConfigError, MridipError
from mridip.io.atomic import atomic_path
from mridip.kspace import DynamicKSpace
from mridip.methods import METHODS, method_options, reconstruct
from mridip.metrics import evaluate
from mridip.operators.cartesian import fft2c, ifft2c

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "CELL_VERSION",
    "PATTERNS",
    "StudyConfig",
    "StudyResult",
    "cell_inputs",
    "expand_cells",
    "load_study",
    "parse_study",
    "run",
    "run_cell",
]

#: Bumped when the way a cell is computed changes, so that old cells are not reused.
CELL_VERSION = 1
#: Sampling patterns and whether they are Cartesian.
PATTERNS = {
    "golden-radial": False,
    "uniform-radial": False,
    "spiral": False,
    "cartesian-vd": True,
    "poisson": True,
    "vista": True,
}
DATASET_KINDS = ("images", "phantom", "raw")

# -- the file format -----------------------------------------------------------------------------
# key → (type name, default); "req" marks a required key. Types: int, float, str, bool,
# list[int], list[float], list[str], box (four ints), table.
_REQ = object()
_STUDY_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("str", "study"),
    "seeds": ("list[int]", [0]),
    "device": ("str", "cpu"),
    "frame": ("int", None),
}
_DATASET_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("str", _REQ),
    "kind": ("str", _REQ),
    "path": ("str", None),
    "key": ("str", None),
    "time_axis": ("int", None),
    "frames": ("int", None),
    "crop": ("box", None),
    "magnitude": ("bool", True),
    "phantom": ("str", "cine"),
    "matrix": ("int", None),
    "coils": ("int", 8),
    "coil_width": ("float", 0.9),
    "phase": ("float", 1.0),
    "texture": ("float", 0.0),
    "breathing": ("float", 0.0),
    "noise": ("float", 0.01),
    "maps": ("str", None),
    "slice": ("int", 0),
    "roi": ("box", None),
    "profile_row": ("int", None),
}
_SAMPLING_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("str", _REQ),
    "pattern": ("str", _REQ),
    "accelerations": ("list[float]", None),
    "spokes": ("list[int]", None),
    "interleaves": ("list[int]", None),
    "center": ("int", None),
    "power": ("float", None),
    "turns": ("float", 2.0),
    "density": ("float", 1.5),
    "rotation": ("str", "golden"),
    "datasets": ("list[str]", None),
}
_METHOD_KEYS: dict[str, tuple[str, Any]] = {
    "method": ("str", _REQ),
    "label": ("str", None),
    "iters": ("int", None),
    "options": ("table", {}),
    "grid": ("table", {}),
    "datasets": ("list[str]", None),
}


@dataclass(frozen=True)
class StudyConfig:
    """A parsed and checked study file.

    Attributes
    ----------
    name, seeds, device, frame
        ``[study]``: a title, the seeds every cell is repeated with (noise, random masks and
        the method's own seed), the device of the reconstructions, and the frame shown in the
        figures (default: the middle one).
    datasets, samplings, methods
        ``[[dataset]]``, ``[[sampling]]`` and ``[[method]]`` tables with every default filled
        in; a method with a ``grid`` is expanded into one entry per combination (its
        ``label`` names the values).
    source
        The file it came from, if any.
    """

    name: str
    seeds: list[int]
    device: str
    frame: int | None
    datasets: list[dict[str, Any]]
    samplings: list[dict[str, Any]]
    methods: list[dict[str, Any]]
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The configuration as plain data (written to ``OUT/study.json``)."""
        return {
            "study": {
                "name": self.name,
                "seeds": self.seeds,
                "device": self.device,
                "frame": self.frame,
            },
            "dataset": self.datasets,
            "sampling": self.samplings,
            "method": self.methods,
            "source": self.source,
        }


@dataclass
class StudyResult:
    """What :func:`run` did.

    Attributes
    ----------
    out
        The output folder.
    rows
        One dict per cell, in grid order, as in ``results.csv``.
    ran, reused, failed
        Cells computed now, taken from ``OUT/cells``, and recorded as failed.
    """

    out: Path
    rows: list[dict[str, Any]]
    ran: int = 0
    reused: int = 0
    failed: int = 0
    files: list[Path] = field(default_factory=list)


def _type_ok(kind: str, value: Any) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    return {
        "int": is_int(value),
        "float": is_num(value),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "list[int]": isinstance(value, list) and bool(value) and all(map(is_int, value)),
        "list[float]": isinstance(value, list) and bool(value) and all(map(is_num, value)),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "box": isinstance(value, list) and len(value) == 4 and all(map(is_int, value)),
        "table": isinstance(value, dict),
    }[kind]


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "list[int]": "a non-empty list of integers",
    "list[float]": "a non-empty list of numbers",
    "list[str]": "a list of strings",
    "box": "four integers [y0, y1, x0, x1]",
    "table": "a table",
}


def _check_table(table: Any, schema: dict[str, tuple[str, Any]], where: str) -> dict[str, Any]:
    """Check one table against its schema; fill defaults. Raises ConfigError naming the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    for key in table:
        if key not in schema:
            raise ConfigError(f"{where}.{key}: unknown key; known: {', '.join(sorted(schema))}")
    out: dict[str, Any] = {}
    for key, (kind, default) in schema.items():
        if key not in table:
            if default is _REQ:
                raise ConfigError(f"{where}.{key}: missing (required)")
            out[key] = default
            continue
        value = table[key]
        if not _type_ok(kind, value):
            raise ConfigError(f"{where}.{key}: expected {_TYPE_WORDS[kind]}, got {value!r}")
        out[key] = float(value) if kind == "float" else value
        if kind == "list[float]":
            out[key] = [float(v) for v in value]
    return out


def _method_option_names(method: str) -> set[str] | None:
    """Options a method accepts in a study (None: not known here, anything goes)."""
    known = method_options(method)
    return None if known is None else set(known) | {"iters"}


def _check_options(method: str, options: dict[str, Any], where: str) -> None:
    known = _method_option_names(method)
    for key, value in options.items():
        if known is not None and key not in known:
            raise ConfigError(
                f"{where}.{key}: not an option of {method}; known: {', '.join(sorted(known))}"
            )
        ok = isinstance(value, bool | int | float | str) or (
            isinstance(value, list) and all(isinstance(v, int | float) for v in value)
        )
        if not ok:
            raise ConfigError(f"{where}.{key}: expected a number, string, boolean or list")
        if key == "iters" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}.{key}: expected an integer, got {value!r}")


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _expand_method(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One entry per combination of the method's grid."""
    name = m["method"]
    if name not in METHODS:
        raise ConfigError(
            f"{where}.method: unknown method {name!r}; available: {', '.join(sorted(METHODS))}"
        )
    _check_options(name, m["options"], f"{where}.options")
    for key, values in m["grid"].items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.grid.{key}: expected a non-empty list of values")
        for v in values:
            _check_options(name, {key: v}, f"{where}.grid")
    base = m["label"] or name
    keys = list(m["grid"])
    out = []
    for combo in itertools.product(*(m["grid"][k] for k in keys)):
        opts = dict(m["options"], **dict(zip(keys, combo, strict=True)))
        iters = opts.pop("iters", m["iters"])
        if iters is not None and iters < 1:
            raise ConfigError(f"{where}.iters: must be ≥ 1, got {iters}")
        label = base + "".join(f" {k}={_fmt(v)}" for k, v in zip(keys, combo, strict=True))
        entry = {"method": name, "label": label, "iters": iters, "options": opts}
        if m["datasets"] is not None:  # which datasets it applies to (not part of a cell's id)
            entry["datasets"] = list(m["datasets"])
        out.append(entry)
    return out


def parse_study(doc: dict[str, Any], source: str | None = None) -> StudyConfig:
    """Check a study given as plain data (a parsed TOML document).

    Parameters
    ----------
    doc
        ``{"study": {...}, "dataset": [...], "sampling": [...], "method": [...]}``.
    source
        Where it came from; relative data paths are taken from that file's folder.

    Returns
    -------
    StudyConfig

    Raises
    ------
    ConfigError
        One line naming the offending key: unknown keys, wrong types, unknown methods,
        patterns, dataset kinds or dataset names, impossible combinations.
    """
    for key in doc:
        if key not in ("study", "dataset", "sampling", "method"):
            raise ConfigError(f"{key}: unknown section; known: study, dataset, sampling, method")
    st = _check_table(doc.get("study", {}), _STUDY_KEYS, "study")
    if st["device"] not in ("cpu", "cuda", "auto") and not st["device"].startswith("cuda:"):
        raise ConfigError(f"study.device: must be cpu, cuda or auto, not {st['device']!r}")
    base = Path(source).resolve().parent if source else Path.cwd()
    datasets: list[dict[str, Any]] = []
    for section in ("dataset", "sampling", "method"):
        if not isinstance(doc.get(section), list) or not doc[section]:
            raise ConfigError(f"{section}: at least one [[{section}]] table is needed")
    for i, raw in enumerate(doc["dataset"]):
        where = f"dataset[{i}]"
        d = _check_table(raw, _DATASET_KEYS, where)
        if d["kind"] not in DATASET_KINDS:
            raise ConfigError(f"{where}.kind: must be one of {', '.join(DATASET_KINDS)}")
        if d["kind"] in ("images", "raw"):
            if d["path"] is None:
                raise ConfigError(f"{where}.path: missing (required for kind {d['kind']})")
            d["path"] = str((base / os.path.expanduser(d["path"])).resolve())
        if d["kind"] == "images" and d["key"] is None and not d["path"].endswith(".npy"):
            raise ConfigError(f"{where}.key: missing (the array's name in {d['path']})")
        if d["kind"] == "phantom":
            if d["phantom"] not in ("cine", "perfusion"):
                raise ConfigError(f"{where}.phantom: must be cine or perfusion")
            d["matrix"] = d["matrix"] or 64
            d["frames"] = d["frames"] or 12
        cine = d["kind"] == "phantom" and d["phantom"] == "cine"
        if not 0 <= d["texture"] <= 1 or (d["texture"] and not cine):
            raise ConfigError(f"{where}.texture: between 0 and 1, for the cine phantom only")
        if not d["texture"]:
            del d["texture"]  # absent unless used: the cells of older studies keep their ids
        if not 0 <= d["breathing"] <= 0.2 or (d["breathing"] and not cine):
            raise ConfigError(f"{where}.breathing: between 0 and 0.2, for the cine phantom only")
        if not d["breathing"]:
            del d["breathing"]
        if d["matrix"] is not None and not 8 <= d["matrix"] <= 512:
            raise ConfigError(f"{where}.matrix: must be between 8 and 512, got {d['matrix']}")
        if d["frames"] is not None and d["frames"] < 1:
            raise ConfigError(f"{where}.frames: must be ≥ 1, got {d['frames']}")
        if not 1 <= d["coils"] <= 64:
            raise ConfigError(f"{where}.coils: must be between 1 and 64, got {d['coils']}")
        if d["noise"] < 0:
            raise ConfigError(f"{where}.noise: must be ≥ 0, got {d['noise']}")
        maps = d["maps"] or ("estimate" if d["kind"] == "raw" else "true")
        if maps not in ("true", "estimate") or (d["kind"] == "raw" and maps == "true"):
            allowed = "estimate" if d["kind"] == "raw" else "true or estimate"
            raise ConfigError(f"{where}.maps: must be {allowed}, not {d['maps']!r}")
        d["maps"] = maps
        if any(d["name"] == other["name"] for other in datasets):
            raise ConfigError(f"{where}.name: {d['name']!r} is used twice")
        datasets.append(d)
    names = [d["name"] for d in datasets]
    samplings: list[dict[str, Any]] = []
    for i, raw in enumerate(doc["sampling"]):
        where = f"sampling[{i}]"
        s = _check_table(raw, _SAMPLING_KEYS, where)
        pattern = s["pattern"]
        if pattern not in PATTERNS:
            raise ConfigError(f"{where}.pattern: must be one of {', '.join(PATTERNS)}")
        levels = [k for k in ("accelerations", "spokes", "interleaves") if s[k] is not None]
        if len(levels) != 1:
            raise ConfigError(
                f"{where}.accelerations: give exactly one of accelerations, spokes "
                "(radial) or interleaves (spiral)"
            )
        if s["spokes"] is not None and not pattern.endswith("radial"):
            raise ConfigError(f"{where}.spokes: only for golden-radial and uniform-radial")
        if s["interleaves"] is not None and pattern != "spiral":
            raise ConfigError(f"{where}.interleaves: only for spiral")
        values = s[levels[0]]
        if any(v < 1 for v in values):
            raise ConfigError(f"{where}.{levels[0]}: every value must be ≥ 1")
        if s["rotation"] not in ("golden", "uniform", "none"):
            raise ConfigError(f"{where}.rotation: must be golden, uniform or none")
        for name in s["datasets"] or []:
            if name not in names:
                raise ConfigError(f"{where}.datasets: no dataset named {name!r}")
        for d in datasets:
            applies = s["datasets"] is None or d["name"] in s["datasets"]
            if applies and d["kind"] == "raw" and not PATTERNS[pattern]:
                raise ConfigError(
                    f"{where}.pattern: {pattern} cannot resample the Cartesian k-space of raw "
                    f"dataset {d['name']!r}; list the image datasets in {where}.datasets"
                )
        samplings.append(s)
    methods: list[dict[str, Any]] = []
    for i, raw in enumerate(doc["method"]):
        where = f"method[{i}]"
        m = _check_table(raw, _METHOD_KEYS, where)
        for name in m["datasets"] or []:
            if name not in names:
                raise ConfigError(f"{where}.datasets: no dataset named {name!r}")
        methods.extend(_expand_method(m, where))
    # a label names one method entry per dataset: two entries may share it when they apply to
    # different datasets (e.g. one option for the cines, another for a perfusion series)
    for d in names:
        here = [m["label"] for m in methods if m.get("datasets") is None or d in m["datasets"]]
        for lab in here:
            if here.count(lab) > 1:
                raise ConfigError(f"method: label {lab!r} is used twice; give each a label")
    return StudyConfig(
        name=st["name"],
        seeds=st["seeds"],
        device=st["device"],
        frame=st["frame"],
        datasets=datasets,
        samplings=samplings,
        methods=methods,
        source=source,
    )


def load_study(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and check a study file (TOML, format in ``docs/study.md``).

    Raises
    ------
    ConfigError
        The file is missing or not TOML, or :func:`parse_study` rejects it.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the study file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_study(doc, source=str(p))


# -- datasets ------------------------------------------------------------------------------------
@dataclass
class _Series:
    """A dataset ready to scan: the object on the fine grid, or fully sampled raw k-space."""

    truth: torch.Tensor  # (T, N, N) complex64 at the reconstruction matrix
    fine: torch.Tensor | None = None  # (T, C, 2N, 2N) coil images on the fine grid
    maps: torch.Tensor | None = None  # (C, N, N) true maps at the matrix
    full: DynamicKSpace | None = None  # raw: fully sampled Cartesian k-space
    frame_times: torch.Tensor | None = None


def _read_images(d: dict[str, Any]) -> np.ndarray:
    """The series of an ``images`` dataset as ``(T, H, W)``."""
    from mridip.errors import RawDataError
    from mridip.io.importers import read_mat

    path = d["path"]
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RawDataError(f"{path}: cannot read ({exc})") from None
        default_axis = 0
    else:
        arrays = read_mat(path, [d["key"]])
        if d["key"] not in arrays:
            raise RawDataError(f"{path} has no array {d['key']!r}")
        arr = arrays[d["key"]]
        default_axis = -1  # MATLAB series are stored (H, W, T)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.number):
        raise RawDataError(f"{path}: expected a numeric 3-D series, got {arr.dtype} {arr.shape}")
    axis = default_axis if d["time_axis"] is None else d["time_axis"]
    if not -3 <= axis <= 2:
        raise ConfigError(f"time_axis {axis} does not exist in a 3-D array")
    arr = np.moveaxis(arr, axis, 0)
    if d["frames"] is not None:
        if d["frames"] > arr.shape[0]:
            raise ConfigError(f"frames = {d['frames']} but {path} has {arr.shape[0]}")
        arr = arr[: d["frames"]]
    if d["crop"] is not None:
        y0, y1, x0, x1 = d["crop"]
        if not (0 <= y0 < y1 <= arr.shape[1] and 0 <= x0 < x1 <= arr.shape[2]):
            raise ConfigError(f"crop {d['crop']} is outside the {arr.shape[1:]} images")
        arr = arr[:, y0:y1, x0:x1]
    if not np.all(np.isfinite(arr)):
        raise RawDataError(f"{path}: the series holds NaN or Inf")
    return arr


def _resample(x: torch.Tensor, matrix: tuple[int, int]) -> torch.Tensor:
    """Complex series resampled to ``matrix`` in k-space (centre crop or zero padding)."""
    k = fft2c(x.to(torch.complex128))
    for axis, want in ((-2, matrix[0]), (-1, matrix[1])):
        have = k.shape[axis]
        if want < have:
            k = k.narrow(axis, have // 2 - want // 2, want)
        elif want > have:
            before = want // 2 - have // 2
            pad = [0, 0, 0, 0]
            pad[2 * (-1 - axis)], pad[2 * (-1 - axis) + 1] = before, want - have - before
            k = torch.nn.functional.pad(k, pad)
    return ifft2c(k) * math.sqrt(matrix[0] * matrix[1] / (x.shape[-2] * x.shape[-1]))


def _object(d: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The object on the fine grid ``(T, 2N, 2N)`` complex64 and its frame times."""
    n = d["matrix"]
    fine = (2 * n, 2 * n)
    if d["kind"] == "phantom":
        if d["phantom"] == "cine":
            ph = phantoms.cine_phantom(
                fine,
                d["frames"],
                phase_strength=d["phase"],
                seed=0,
                texture=d.get("texture", 0.0),
                breathing=d.get("breathing", 0.0),
            )
        else:
            ph = phantoms.perfusion_phantom(fine, d["frames"], phase_strength=d["phase"], seed=0)
        return ph.image, ph.frame_times
    arr = _read_images(d)
    x = torch.from_numpy(np.ascontiguousarray(arr))
    if d["magnitude"] or not x.is_complex():
        ph = phantoms.from_images(x.abs() if x.is_complex() else x.float(), fine, seed=0)
        # from_images gives a background phase of strength 1; it is linear in the strength
        extra = phantoms.background_phase(fine, d["phase"] - 1.0, seed=0)
        return (ph.image * torch.exp(1j * extra)).to(torch.complex64), ph.frame_times
    img = _resample(x, fine)
    img = img / img.abs().max()
    img = img * torch.exp(1j * phantoms.background_phase(fine, d["phase"], seed=0))
    return img.to(torch.complex64), torch.arange(x.shape[0], dtype=torch.float64) * 0.04


def _down(x: torch.Tensor, n: int) -> torch.Tensor:
    """Band-limited image at ``n`` of a fine-grid image at ``2n`` (orthonormal FFTs)."""
    lo = n // 2
    return ifft2c(fft2c(x)[..., lo : lo + n, lo : lo + n]) / 2.0


@functools.lru_cache(maxsize=4)
def _series(key: str) -> _Series:
    """Prepared dataset (cached per process: cells of one dataset share it)."""
    d = json.loads(key)
    if d["kind"] == "raw":
        return _raw_series(d)
    if d["matrix"] is None:
        arr = _read_images(d)
        if arr.shape[1] != arr.shape[2]:
            raise ConfigError(f"dataset {d['name']!r}: set matrix (the images are not square)")
        d["matrix"] = int(arr.shape[1])
    n = d["matrix"]
    obj, times = _object(d)
    fine_maps = phantoms.coil_maps((2 * n, 2 * n), d["coils"], width=d["coil_width"], seed=0)
    maps = phantoms.coil_maps((n, n), d["coils"], width=d["coil_width"], seed=0)
    truth = _down(obj, n).to(torch.complex64)
    fine = obj[:, None] * fine_maps[None]
    return _Series(truth=truth, fine=fine, maps=maps, frame_times=times)


def _raw_series(d: dict[str, Any]) -> _Series:
    from mridip.coils import estimate_maps
    from mridip.preprocess import load

    scan = load(d["path"], slice_index=d["slice"])
    ks = scan.kspace
    if not ks.is_cartesian or ks.acceleration > 1.05:
        raise ConfigError(
            f"dataset {d['name']!r}: {d['path']} is not fully sampled Cartesian k-space "
            f"({ks.describe()})"
        )
    if d["frames"] is not None:
        if d["frames"] > ks.n_frames:
            raise ConfigError(f"dataset {d['name']!r}: frames = {d['frames']} > {ks.n_frames}")
        ks = ks.select_frames(slice(0, d["frames"]))
    maps = estimate_maps(ks)
    coil_imgs = ifft2c(ks.data)
    energy = (maps.abs() ** 2).sum(0).clamp_min(1e-12)
    truth = ((maps.conj()[None] * coil_imgs).sum(1) / energy).to(torch.complex64)
    return _Series(truth=truth, maps=maps, full=ks, frame_times=ks.frame_times)


def _series_key(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)


def _check_data(cfg: StudyConfig) -> None:
    """Read every dataset once, so that unreadable data fails before anything is written."""
    for i, d in enumerate(cfg.datasets):
        try:
            s = _series(_series_key(d))
        except MridipError as exc:
            raise ConfigError(f"dataset[{i}] ({d['name']}): {exc}") from None
        t, ny, nx = s.truth.shape
        if d["roi"] is not None:
            y0, y1, x0, x1 = d["roi"]
            if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
                raise ConfigError(f"dataset[{i}].roi: {d['roi']} is outside the {ny}×{nx} matrix")
        if d["profile_row"] is not None and not 0 <= d["profile_row"] < ny:
            raise ConfigError(f"dataset[{i}].profile_row: must be in [0, {ny})")
        if cfg.frame is not None and not 0 <= cfg.frame < t:
            raise ConfigError(f"study.frame: {cfg.frame} is not a frame of {d['name']} ({t})")


# -- cells ---------------------------------------------------------------------------------------
def _file_stamp(path: str | None) -> list[int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:  # reported by _check_data before any cell runs
        return None
    return None if st is None else [st.st_size, st.st_mtime_ns]


def expand_cells(cfg: StudyConfig) -> list[dict[str, Any]]:
    """Every cell of the study, in grid order: dataset, sampling, level, method, seed.

    A cell is a plain, picklable dict; ``cell["id"]`` is the hash of everything else in it.
    """
    cells = []
    for d in cfg.datasets:
        stamp = _file_stamp(d["path"])
        for s in cfg.samplings:
            if s["datasets"] is not None and d["name"] not in s["datasets"]:
                continue
            level_key = next(k for k in ("accelerations", "spokes", "interleaves") if s[k])
            spec = {
                k: v
                for k, v in s.items()
                if k not in ("accelerations", "spokes", "interleaves", "datasets")
            }
            for level in s[level_key]:
                for m in cfg.methods:
                    if m.get("datasets") is not None and d["name"] not in m["datasets"]:
                        continue
                    for seed in cfg.seeds:
                        cell = {
                            "version": CELL_VERSION,
                            "dataset": d,
                            "data_file": stamp,
                            "sampling": spec,
                            "level": {level_key: level},
                            # which datasets an entry applies to does not change its cells
                            "method": {k: v for k, v in m.items() if k != "datasets"},
                            "seed": seed,
                            "device": cfg.device,
                        }
                        blob = json.dumps(cell, sort_keys=True).encode()
                        cell["id"] = hashlib.sha256(blob).hexdigest()[:16]
                        cells.append(cell)
    return cells


@dataclass
class CellInputs:
    """What a cell reconstructs and is judged against.

    Attributes
    ----------
    kspace
        The undersampled data.
    maps
        Coil maps for the reconstruction, or None (estimated from the data by
        :func:`mridip.reconstruct`).
    reference
        ``(T, N, N)`` complex64 truth before undersampling.
    roi
        ``(N, N)`` bool region, or None.
    acceleration
        Nominal acceleration of the cell's sampling (see ``docs/study.md``).
    samples
        ``{"mask": (T, N, N) bool}`` or ``{"traj": (T, 2, K), "dcf": (T, 1, K)}`` arrays.
    """

    kspace: DynamicKSpace
    maps: torch.Tensor | None
    reference: torch.Tensor
    roi: torch.Tensor | None
    acceleration: float
    samples: dict[str, np.ndarray]


def _pattern(s: dict[str, Any], level: dict[str, float], n: int, t: int, seed: int):
    """The cell's sampling: (mask or None, traj, dcf, nominal acceleration)."""
    pattern = s["pattern"]
    r = float(level.get("accelerations") or 1.0)
    if pattern.endswith("radial"):
        spokes = int(level["spokes"]) if "spokes" in level else max(1, round(math.pi / 2 * n / r))
        make = (
            sampling.golden_angle_radial if pattern == "golden-radial" else sampling.uniform_radial
        )
        traj, _ = make(n, spokes, t)
        return None, traj, sampling.radial_ramp_dcf(traj, (n, n)), math.pi / 2 * n / spokes
    if pattern == "spiral":
        nyq = sampling.spiral_nyquist_interleaves(n, s["turns"], s["density"])
        il = int(level["interleaves"]) if "interleaves" in level else max(1, round(nyq / r))
        traj, _ = sampling.spiral_trajectory(
            n, il, t, turns=s["turns"], density=s["density"], rotation=s["rotation"]
        )
        return None, traj, sampling.spiral_dcf(traj, (n, n), il), nyq / il
    assert r is not None
    if pattern == "cartesian-vd":
        mask = sampling.variable_density_mask(
            (n, n), t, r, center_lines=s["center"], power=s["power"] or 2.0, seed=seed
        )
    elif pattern == "poisson":
        mask = sampling.poisson_disc_mask((n, n), t, r, calib=s["center"], seed=seed)
    else:
        mask = sampling.vista_mask(
            (n, n), t, r, center_lines=s["center"] or 0, power=s["power"] or 1.0
        )
    return mask, None, None, float(mask.numel() / mask.sum())


@functools.lru_cache(maxsize=2)
def _fine_nufft(n: int) -> Any:
    """NUFFT on the fine grid (its interpolation tables take a second to build: kept)."""
    import torchkbnufft as tkbn

    return tkbn.KbNufft(im_size=(2 * n, 2 * n), grid_size=(4 * n, 4 * n))


def cell_inputs(cell: dict[str, Any]) -> CellInputs:
    """Build a cell's undersampled k-space, maps, reference and ROI (deterministic).

    Noise, random masks and the method share the cell's seed. Image series: the coil images
    on the fine grid are Fourier transformed there (FFT cropped to the matrix, or a NUFFT at
    half the radians per voxel) and complex Gaussian noise of standard deviation ``noise``
    is added to every sample; raw data: the fully sampled k-space is masked.

    Raises
    ------
    MridipError
        Data that cannot be read or a sampling that cannot be made.
    """
    d, s = cell["dataset"], cell["sampling"]
    ser = _series(_series_key(d))
    t, n, _ = ser.truth.shape
    mask, traj, dcf, accel = _pattern(s, cell["level"], n, t, int(cell["seed"]))
    gen = torch.Generator().manual_seed(int(cell["seed"]) + 12345)

    def noise(shape: tuple[int, ...]) -> torch.Tensor:
        re = torch.randn(shape, generator=gen, dtype=torch.float32)
        im = torch.randn(shape, generator=gen, dtype=torch.float32)
        return (d["noise"] / math.sqrt(2)) * torch.complex(re, im)

    if ser.full is not None:
        assert mask is not None
        full = ser.full.data
        data = full + (noise(tuple(full.shape)) if d["noise"] > 0 else 0)
        ks = DynamicKSpace(
            data * mask[:, None],
            (n, n),
            mask=mask,
            frame_times=ser.frame_times,
            meta={"study_dataset": d["name"]},
        )
    elif mask is not None:
        assert ser.fine is not None
        full = _down(ser.fine, n)
        k = fft2c(full)
        k = (k + noise(tuple(k.shape))) * mask[:, None]
        ks = DynamicKSpace(
            k, (n, n), mask=mask, frame_times=ser.frame_times, meta={"study_dataset": d["name"]}
        )
    else:
        assert ser.fine is not None and traj is not None
        nufft = _fine_nufft(n)
        # same physical k at half the voxel size: half the radians per voxel; "ortho" divides
        # by the oversampled grid's √(4N·4N), so ×2 is the unitary DFT of the fine image and
        # ÷2 takes it to the matrix's scale (as mridip.simulate does)
        k = nufft(ser.fine, traj / 2, norm="ortho")
        k = k + noise(tuple(k.shape))
        ks = DynamicKSpace(
            k,
            (n, n),
            traj=traj,
            dcf=dcf,
            frame_times=ser.frame_times,
            meta={"study_dataset": d["name"], "readout_samples": 2 * n},
        )
    roi = None
    if d["roi"] is not None:
        y0, y1, x0, x1 = d["roi"]
        roi = torch.zeros(n, n, dtype=torch.bool)
        roi[y0:y1, x0:x1] = True
    samples = (
        {"mask": mask.numpy()} if mask is not None else {"traj": traj.numpy(), "dcf": dcf.numpy()}  # type: ignore[union-attr]
    )
    maps = ser.maps if d["maps"] == "true" else None
    return CellInputs(ks, maps, ser.truth, roi, accel, samples)


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Run one cell: build its data, reconstruct, measure. Never raises for a bad cell.

    Returns
    -------
    dict
        ``{"ok": True, "metrics": {...}, "image": (T, N, N) float32 magnitude,
        "samples": {...}}``, or ``{"ok": False, "error": "Type: one line"}``.
    """
    from mridip.bench import PeakMemory

    m = cell["method"]
    try:
        inp = cell_inputs(cell)
        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in m["options"].items()}
        if METHODS[m["method"]].family == "dip":
            opts["progress"] = False
        with PeakMemory(cell["device"] if cell["device"] != "auto" else "cpu") as mem:
            rec = reconstruct(
                inp.kspace,
                m["method"],
                inp.maps,
                device=cell["device"],
                seed=int(cell["seed"]),
                iters=m["iters"],
                **opts,
            )
        q = evaluate(rec.image, inp.reference)
        metrics: dict[str, Any] = {
            "acceleration_actual": inp.acceleration,
            "psnr": q["psnr"],
            "ssim": q["ssim"],
            "nrmse": q["nrmse"],
            "seconds": rec.seconds,
            "peak_mib": mem.peak_mib,
            "steps": rec.config.get("steps_run"),
        }
        if inp.roi is not None:
            qr = evaluate(rec.image, inp.reference, roi=inp.roi)
            metrics.update(psnr_roi=qr["psnr"], ssim_roi=qr["ssim"], nrmse_roi=qr["nrmse"])
        image = rec.image.abs().numpy().astype(np.float32) * np.float32(q["scale"])
        return {"ok": True, "metrics": metrics, "image": image, "samples": inp.samples}
    except Exception as exc:  # a failed cell is recorded, the study goes on
        return {"ok": False, "error": batch.one_line(exc)}


# -- running -------------------------------------------------------------------------------------
def _cell_path(out: Path, cell: dict[str, Any], ext: str) -> Path:
    return out / "cells" / f"{cell['id']}.{ext}"


def _save_cell(out: Path, cell: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Write a cell's outcome (arrays first, then the JSON that marks it done)."""
    record = {"cell": cell, "ok": bool(result.get("ok"))}
    if record["ok"]:
        with atomic_path(_cell_path(out, cell, "npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, image=result["image"], **result["samples"])
        record["metrics"] = result["metrics"]
    else:
        record["error"] = result.get("error") or "unknown error"
    with atomic_path(_cell_path(out, cell, "json")) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return record


def _finished(out: Path, cell: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded outcome of a cell finished without error, or None."""
    p = _cell_path(out, cell, "json")
    try:
        record = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if record.get("ok") and record.get("cell", {}).get("id") == cell["id"]:
        if _cell_path(out, cell, "npz").exists():
            return record
    return None


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _execute(
    todo: list[dict[str, Any]],
    jobs: int,
    ray_address: str | None,
    done: Callable[[dict[str, Any], dict[str, Any]], None],
) -> None:
    """Run the cells through one executor; ``done(cell, result)`` as each one finishes."""
    if ray_address is not None:
        seen: set[int] = set()

        def on_done(o: batch.TaskOutcome) -> None:
            seen.add(o.index)
            done(todo[o.index], o.value if o.ok else {"ok": False, "error": o.error})

        outcomes = batch.run_tasks(
            run_cell,
            todo,
            ray_address=None if ray_address == "local" else ray_address,
            jobs=jobs,
            on_done=on_done,
        )
        for o in outcomes:
            if o.index not in seen:
                on_done(o)
        return
    if jobs <= 1 or len(todo) <= 1:
        for cell in todo:
            done(cell, run_cell(cell))
        return
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")  # torch's thread pools do not survive fork
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(run_cell, cell): cell for cell in todo}
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except BrokenProcessPool:
                result = {"ok": False, "error": "worker process died (out of memory or killed)"}
            done(futures[fut], result)


_FIRST_COLUMNS = [
    "cell",
    "dataset",
    "kind",
    "matrix",
    "frames",
    "coils",
    "noise",
    "sampling",
    "pattern",
    "level",
    "acceleration",
    "acceleration_actual",
    "method",
    "label",
    "seed",
    "status",
    "psnr",
    "ssim",
    "nrmse",
    "psnr_roi",
    "ssim_roi",
    "nrmse_roi",
    "seconds",
    "peak_mib",
    "steps",
    "error",
]


def _level_text(level: dict[str, Any], sep: str) -> str:
    ((key, value),) = level.items()
    name = {"accelerations": "R", "spokes": "spokes", "interleaves": "interleaves"}[key]
    return f"{name}{sep}{_fmt(value)}"


def _row(cell: dict[str, Any], record: dict[str, Any], truth_shape: tuple[int, ...]) -> dict:
    d, s, m = cell["dataset"], cell["sampling"], cell["method"]
    ((level_key, level),) = cell["level"].items()
    n = truth_shape[-1]
    if level_key == "accelerations":
        accel = float(level)
    elif level_key == "spokes":
        accel = math.pi / 2 * n / level
    else:
        accel = sampling.spiral_nyquist_interleaves(n, s["turns"], s["density"]) / level
    row: dict[str, Any] = {
        "cell": cell["id"],
        "dataset": d["name"],
        "kind": d["kind"] if d["kind"] != "phantom" else f"phantom:{d['phantom']}",
        "matrix": n,
        "frames": truth_shape[0],
        "coils": d["coils"] if d["kind"] != "raw" else "",
        "noise": d["noise"],
        "sampling": s["name"],
        "pattern": s["pattern"],
        "level": _level_text(cell["level"], "="),
        "acceleration": round(accel, 4),
        "method": m["method"],
        "label": m["label"],
        "seed": cell["seed"],
        "status": "ok" if record["ok"] else "failed",
        "error": record.get("error", ""),
    }
    row.update({k: v for k, v in record.get("metrics", {}).items() if v is not None})
    row["iters"] = m["iters"] if m["iters"] is not None else ""
    for k, v in m["options"].items():
        row[f"opt_{k}"] = json.dumps(v) if isinstance(v, list) else v
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    extra = sorted({k for r in rows for k in r} - set(_FIRST_COLUMNS))
    columns = [c for c in _FIRST_COLUMNS if any(c in r for r in rows)] + extra
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})


def run(
    config: StudyConfig | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    jobs: int = 1,
    ray_address: str | None = None,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run a study: every cell not already finished, then the table, summary and figures.

    Parameters
    ----------
    config
        A :class:`StudyConfig` or the path of a study file.
    out
        Output folder: ``results.csv``, ``summary.md``, ``figures/*.png``, ``study.json``
        (the configuration used) and ``cells/`` (one result per cell, reused by a rerun).
    jobs
        Worker processes (1: run in this process); with ``ray_address``, Ray tasks in flight.
    ray_address
        Run the cells as Ray tasks through :func:`mridip.batch.run_tasks` (``"local"``
        starts a local Ray; ``"auto"`` or ``"HOST:PORT"`` joins a cluster).
    log
        Called with one line per finished cell (default: silent).

    Returns
    -------
    StudyResult

    Raises
    ------
    ConfigError
        A malformed study or unreadable data: raised before anything is written.
    """
    cfg = config if isinstance(config, StudyConfig) else load_study(config)
    if jobs < 1:
        raise ConfigError(f"--jobs must be ≥ 1, got {jobs}")
    _check_data(cfg)
    cells = expand_cells(cfg)
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "study.json") as tmp:
        tmp.write_text(json.dumps(cfg.as_dict(), indent=1))
    records: dict[str, dict[str, Any]] = {}
    for cell in cells:
        rec = _finished(out, cell)
        if rec is not None:
            records[cell["id"]] = rec
    result = StudyResult(out=out, rows=[], reused=len(records))
    todo = [c for c in cells if c["id"] not in records]
    t_start = time.perf_counter()

    def done(cell: dict[str, Any], res: dict[str, Any]) -> None:
        rec = _save_cell(out, cell, res)
        records[cell["id"]] = rec
        result.ran += 1
        if log is not None:
            m = rec.get("metrics", {})
            what = f"{m['psnr']:.2f} dB" if rec["ok"] else f"FAILED {rec['error']}"
            log(
                f"[{result.ran}/{len(todo)}] {cell['dataset']['name']} "
                f"{cell['sampling']['name']} {_level_text(cell['level'], '=')} "
                f"{cell['method']['label']} seed {cell['seed']}: {what} "
                f"({time.perf_counter() - t_start:.0f} s)"
            )

    _execute(todo, jobs, ray_address or None, done)
    shapes = {d["name"]: tuple(_series(_series_key(d)).truth.shape) for d in cfg.datasets}
    result.rows = [_row(c, records[c["id"]], shapes[c["dataset"]["name"]]) for c in cells]
    result.failed = sum(r["status"] == "failed" for r in result.rows)
    _write_csv(out / "results.csv", result.rows)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(summary_markdown(cfg, result))
    result.files = [out / "results.csv", out / "summary.md", *_figures(cfg, cells, records, out)]
    return result


# -- summary and figures -------------------------------------------------------------------------
def _condition(r: dict[str, Any]) -> str:
    if r["level"].startswith("R="):
        return f"{r['sampling']} {r['level']}"
    return f"{r['sampling']} {r['level']} (R≈{r['acceleration']:.3g})"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std()) if a.size > 1 else 0.0


def _labels(cfg: StudyConfig, dataset: str) -> list[str]:
    """The method labels that apply to a dataset, each once, in the file's order."""
    applies = [m for m in cfg.methods if m.get("datasets") is None or dataset in m["datasets"]]
    return list(dict.fromkeys(m["label"] for m in applies))


def summary_markdown(cfg: StudyConfig, result: StudyResult) -> str:
    """``summary.md``: mean ± std over seeds per method × condition, best per condition bold."""
    rows = result.rows
    lines = [f"# {cfg.name}", ""]
    n_ok = sum(r["status"] == "ok" for r in rows)
    lines.append(
        f"{len(rows)} cells: {n_ok} finished, {result.failed} failed "
        f"({result.ran} run now, {result.reused} reused from cells/). Seeds: "
        f"{', '.join(map(str, cfg.seeds))}; mean ± standard deviation over the seeds."
    )
    lines.append("")
    metrics = [
        ("psnr", "PSNR (dB)", True, 2),
        ("ssim", "SSIM", True, 3),
        ("nrmse", "NRMSE", False, 3),
    ]
    if any("psnr_roi" in r for r in rows):
        metrics += [
            ("psnr_roi", "PSNR in the ROI (dB)", True, 2),
            ("ssim_roi", "SSIM in the ROI", True, 3),
        ]
    metrics += [("seconds", "seconds", False, 1)]
    for d in cfg.datasets:
        labels = _labels(cfg, d["name"])
        drows = [r for r in rows if r["dataset"] == d["name"]]
        conds = list(dict.fromkeys(_condition(r) for r in drows))
        for key, title, higher, digits in metrics:
            if not any(key in r for r in drows):
                continue
            lines += [f"## {d['name']}: {title}", ""]
            lines.append("| condition | " + " | ".join(labels) + " |")
            lines.append("|---|" + "---|" * len(labels))
            for cond in conds:
                stats: dict[str, tuple[float, float]] = {}
                for lab in labels:
                    vals = [
                        r[key]
                        for r in drows
                        if _condition(r) == cond
                        and r["label"] == lab
                        and r["status"] == "ok"
                        and key in r
                    ]
                    if vals:
                        stats[lab] = _mean_std(vals)
                best = None
                if stats and key != "seconds":
                    pick = max if higher else min
                    best = pick(stats, key=lambda lab: stats[lab][0])
                cells = []
                for lab in labels:
                    if lab not in stats:
                        cells.append("failed")
                        continue
                    mu, sd = stats[lab]
                    text = f"{mu:.{digits}f} ± {sd:.{digits}f}"
                    cells.append(f"**{text}**" if lab == best else text)
                lines.append(f"| {cond} | " + " | ".join(cells) + " |")
            lines.append("")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["## Failed cells", ""]
        for r in failed:
            lines.append(
                f"- {r['dataset']} · {_condition(r)} · {r['label']} · seed "
                f"{r['seed']}: {r['error']}"
            )
        lines.append("")
    return "\n".join(lines)


def _savefig(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _figures(
    cfg: StudyConfig, cells: list[dict[str, Any]], records: dict[str, dict[str, Any]], out: Path
) -> list[Path]:
    """Quality against acceleration, one frame of every method with its error, x–t profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    for d in cfg.datasets:
        labels = _labels(cfg, d["name"])
        truth = _series(_series_key(d)).truth.abs().numpy()
        t, n, _ = truth.shape
        frame = cfg.frame if cfg.frame is not None else t // 2
        row_y = d["profile_row"]
        if row_y is None:  # the row through the most motion
            row_y = int(truth.std(axis=0).sum(axis=1).argmax())
        for s in cfg.samplings:
            mine = [
                c
                for c in cells
                if c["dataset"]["name"] == d["name"] and c["sampling"]["name"] == s["name"]
            ]
            if not mine:
                continue
            # quality against acceleration
            rows = [_row(c, records[c["id"]], truth.shape) for c in mine]
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
            for lab in labels:
                ok = [r for r in rows if r["label"] == lab and r["status"] == "ok"]
                accs = sorted({r["acceleration"] for r in ok})
                for ax, key in zip(axes, ("psnr", "ssim"), strict=True):
                    stats = [
                        _mean_std([r[key] for r in ok if r["acceleration"] == a]) for a in accs
                    ]
                    ax.errorbar(
                        accs,
                        [m for m, _ in stats],
                        yerr=[sd for _, sd in stats],
                        marker="o",
                        capsize=3,
                        label=lab,
                    )
            for ax, name in zip(axes, ("PSNR (dB)", "SSIM"), strict=True):
                ax.set_xlabel("acceleration R")
                ax.set_ylabel(name)
                ax.grid(alpha=0.3)
            axes[1].legend(fontsize=7)
            fig.suptitle(f"{d['name']} · {s['name']} ({s['pattern']})")
            fig.tight_layout()
            written.append(_savefig(fig, figdir / f"quality_{d['name']}_{s['name']}.png"))
            # one frame of every method, error maps, x–t profiles (first seed)
            for level in dict.fromkeys(json.dumps(c["level"]) for c in mine):
                pick = [
                    c
                    for c in mine
                    if json.dumps(c["level"]) == level
                    and c["seed"] == cfg.seeds[0]
                    and records[c["id"]]["ok"]
                ]
                if not pick:
                    continue
                images = {
                    c["method"]["label"]: np.load(_cell_path(out, c, "npz"))["image"] for c in pick
                }
                tag = _level_text(json.loads(level), "")
                peak = float(np.percentile(truth, 99.5))  # a few bright voxels would darken all
                cols = len(images) + 1
                fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.6), squeeze=False)
                axes[0, 0].imshow(truth[frame], cmap="gray", vmin=0, vmax=peak)
                axes[0, 0].set_title("reference", fontsize=8)
                axes[1, 0].axis("off")
                for j, (lab, img) in enumerate(images.items(), start=1):
                    axes[0, j].imshow(img[frame], cmap="gray", vmin=0, vmax=peak)
                    axes[0, j].set_title(lab, fontsize=8)
                    axes[1, j].imshow(
                        np.abs(img[frame] - truth[frame]), cmap="inferno", vmin=0, vmax=0.2 * peak
                    )
                    axes[1, j].set_title("|error| (×5)", fontsize=7)
                for ax in axes.flat:
                    ax.set_xticks([])
                    ax.set_yticks([])
                fig.suptitle(f"{d['name']} · {s['name']} {tag} · frame {frame}", fontsize=9)
                fig.tight_layout()
                written.append(_savefig(fig, figdir / f"frames_{d['name']}_{s['name']}_{tag}.png"))
                fig, axes = plt.subplots(1, cols, figsize=(2.2 * cols, 2.6), squeeze=False)
                for j, (lab, img) in enumerate([("reference", truth), *images.items()]):
                    axes[0, j].imshow(
                        img[:, row_y, :], cmap="gray", vmin=0, vmax=peak, aspect="auto"
                    )
                    axes[0, j].set_title(lab, fontsize=8)
                    axes[0, j].set_xlabel("x")
                    axes[0, j].set_yticks([])
                axes[0, 0].set_ylabel("frame")
                fig.suptitle(
                    f"x–t profile, row {row_y}: {d['name']} · {s['name']} {tag}", fontsize=9
                )
                fig.tight_layout()
                written.append(_savefig(fig, figdir / f"xt_{d['name']}_{s['name']}_{tag}.png"))
    return written
