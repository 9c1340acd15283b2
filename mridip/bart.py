"""A bridge to BART (the Berkeley Advanced Reconstruction Toolbox): ``.cfl`` files and ``pics``.

BART is an external program (``bart`` on the PATH, e.g. ``apt-get install bart``); mridip does
not depend on it. This module writes the same data that mridip's own methods see into BART's
file format and conventions, runs ``bart pics`` in a temporary folder, and reads the result
back as an image series ``(T, Ny, Nx)``.

BART's conventions (checked against BART 0.8 on simulated data whose truth is known, see
``tests/test_bart.py``):

- arrays have 16 dimensions stored column-major (dimension 0 varies fastest); image space is
  dimensions 0–2 (x, y, z), coils are dimension 3, sets of maps dimension 4, time dimension 10.
  A C-ordered mridip array ``(T, C, Ny, Nx)`` therefore has exactly BART's memory layout for
  the dimensions ``[Nx, Ny, 1, C, 1, …, T]``: nothing is copied or transposed.
- non-Cartesian samples run along dimension 1 (dimension 0 is 1), the trajectory is
  ``[3, samples, …]`` in units of the k-space step ``1/FOV`` (the edge of k-space at ``±N/2``),
  coordinate 0 along image dimension 0 (x).
- Cartesian k-space is centred (the centre at index ``N//2``) and the FFT is unitary, as
  mridip's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mridip.baselines import TV_LAM, _setup
from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace

#: BART's number of dimensions and the indices that matter here.
DIMS = 16
COIL_DIM = 3
TIME_DIM = 10
#: ``-R T:1024:0:λ``: total variation along the time dimension only.
TIME_FLAG = 1 << TIME_DIM


def bart_executable() -> str | None:
    """Path of the ``bart`` executable, or None when it is not on the PATH (or ``$BART``)."""
    env = os.environ.get("BART")
    if env and Path(env).is_file() and os.access(env, os.X_OK):
        return env
    return shutil.which("bart")


def require_bart() -> str:
    """Path of ``bart``; raise :class:`ConfigError` with what to do when it is absent."""
    exe = bart_executable()
    if exe is None:
        raise ConfigError(
            "BART is not installed: no `bart` executable on the PATH. Install it (Debian/Ubuntu: "
            "`apt-get install bart`) or set $BART to its path, or choose another --method "
            "(mridip's own `tv` solves the same problem)"
        )
    return exe


def bart_version() -> str | None:
    """BART's version string (``v0.8.00``), or None when BART is absent or does not answer."""
    exe = bart_executable()
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# -- .cfl / .hdr ---------------------------------------------------------------------------------
def write_cfl(base: str | os.PathLike[str], array: np.ndarray, dims: Sequence[int]) -> None:
    """Write ``base.hdr`` and ``base.cfl``: complex64 data with BART's dimensions ``dims``.

    Parameters
    ----------
    base
        Path without extension.
    array
        Any array whose C-ordered memory is the column-major BART array (see the module
        docstring): its number of elements must equal ``prod(dims)``.
    dims
        BART's dimensions, dimension 0 first (padded with ones to 16).

    Raises
    ------
    ConfigError
        When ``dims`` does not describe ``array``.
    """
    d = [int(v) for v in dims] + [1] * (DIMS - len(dims))
    if len(d) > DIMS or any(v < 1 for v in d):
        raise ConfigError(f"BART dimensions must be 16 positive sizes, got {list(dims)}")
    data = np.ascontiguousarray(array, dtype=np.complex64)
    if data.size != int(np.prod(d)):
        raise ConfigError(f"array of {data.size} elements does not fit BART dimensions {d}")
    base = Path(base)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, d)) + " \n")
    data.reshape(-1).tofile(base.with_suffix(".cfl"))


def read_cfl(base: str | os.PathLike[str]) -> tuple[np.ndarray, list[int]]:
    """Read ``base.hdr`` and ``base.cfl``.

    Returns
    -------
    data, dims
        The flat complex64 data (column-major order, dimension 0 fastest) and the 16 dimensions.

    Raises
    ------
    ConfigError
        When the header is missing or does not match the data file.
    """
    base = Path(base)
    try:
        lines = base.with_suffix(".hdr").read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read BART header {base}.hdr: {exc.strerror or exc}") from exc
    dims: list[int] | None = None
    for i, line in enumerate(lines):
        if line.strip().startswith("# Dimensions") and i + 1 < len(lines):
            dims = [int(v) for v in lines[i + 1].split()]
            break
    if not dims:
        raise ConfigError(f"{base}.hdr has no '# Dimensions' line")
    dims = dims + [1] * (DIMS - len(dims))
    data = np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64)
    if data.size != int(np.prod(dims)):
        raise ConfigError(f"{base}.cfl holds {data.size} values, its header says {dims}")
    return data, dims


# -- conversion to BART's conventions --------------------------------------------------------------
@dataclass
class BartInputs:
    """The arrays of one ``pics`` call, each with its BART dimensions."""

    kspace: tuple[np.ndarray, list[int]]
    maps: tuple[np.ndarray, list[int]]
    traj: tuple[np.ndarray, list[int]] | None = None
    pattern: tuple[np.ndarray, list[int]] | None = None
    matrix: tuple[int, int] = (0, 0)
    frames: int = 0


def _time_dims(first: list[int], t: int) -> list[int]:
    d = first + [1] * (DIMS - len(first))
    d[TIME_DIM] = t
    return d


def to_bart(kspace: DynamicKSpace, maps: torch.Tensor, scale: float = 1.0) -> BartInputs:
    """Convert mridip data and coil maps into BART's arrays.

    Parameters
    ----------
    kspace
        Cartesian ``(T, C, Ny, Nx)`` + mask, or non-Cartesian ``(T, C, K)`` + trajectory.
    maps
        ``(C, Ny, Nx)`` coil sensitivities.
    scale
        k-space is divided by this factor (BART's ``pics`` regularisation weights act on the
        scaled data; see :func:`pics`).

    Returns
    -------
    BartInputs
        k-space ``[1, K, 1, C, …, T]`` with the trajectory ``[3, K, 1, …, T]`` (radians per
        voxel times ``N/2π``, coordinate 0 = k_x), or Cartesian k-space ``[Nx, Ny, 1, C, …, T]``
        with the sampling pattern ``[Nx, Ny, 1, 1, …, T]``; maps ``[Nx, Ny, 1, C]``.
    """
    ny, nx = kspace.matrix
    t, c = kspace.n_frames, kspace.n_coils
    data = (kspace.data.detach().cpu() / scale).numpy()
    m = maps.detach().cpu().to(torch.complex64).numpy()
    if m.shape != (c, ny, nx):
        raise ConfigError(f"coil maps must be {(c, ny, nx)}, got {m.shape}")
    out = BartInputs(kspace=(data, []), maps=(m, [nx, ny, 1, c]), matrix=(ny, nx), frames=t)
    if kspace.is_cartesian:
        assert kspace.mask is not None
        out.kspace = (data, _time_dims([nx, ny, 1, c], t))
        pat = kspace.mask.detach().cpu().numpy().astype(np.complex64)
        out.pattern = (pat, _time_dims([nx, ny, 1, 1], t))
    else:
        assert kspace.traj is not None
        k = data.shape[-1]
        out.kspace = (data, _time_dims([1, k, 1, c], t))
        tr = kspace.traj.detach().cpu().to(torch.float64)  # (T, 2, K) rows (k_y, k_x)
        coords = torch.stack(
            [tr[:, 1] * nx / (2 * np.pi), tr[:, 0] * ny / (2 * np.pi), torch.zeros_like(tr[:, 0])],
            dim=-1,
        )  # (T, K, 3): coordinate fastest, then sample, then frame
        out.traj = (coords.numpy().astype(np.complex64), _time_dims([3, k], t))
    return out


def from_bart_image(data: np.ndarray, dims: list[int], matrix: tuple[int, int]) -> torch.Tensor:
    """BART image ``[Nx, Ny, 1, 1, 1(maps), …, T]`` → mridip series ``(T, Ny, Nx)`` complex64.

    Raises
    ------
    ConfigError
        When the dimensions are not those of one set of 2-D frames of ``matrix``.
    """
    ny, nx = matrix
    t = dims[TIME_DIM]
    others = [d for i, d in enumerate(dims) if i not in (0, 1, TIME_DIM)]
    if dims[0] != nx or dims[1] != ny or any(d != 1 for d in others):
        raise ConfigError(f"BART returned an image of dimensions {dims}, expected {nx}×{ny}×T")
    return torch.from_numpy(data.reshape(t, ny, nx).copy())


# -- pics ------------------------------------------------------------------------------------------
@dataclass
class PicsResult:
    """Image ``(T, Ny, Nx)`` complex64 (in the data's units), the command and BART's log."""

    image: torch.Tensor
    command: list[str]
    log: str = ""
    seconds: float = 0.0
    info: dict[str, object] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)


def pics(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    regularizers: Sequence[str],
    *,
    iters: int = 100,
    scale: float = 1.0,
    admm_rho: float | None = None,
    admm_cg_iters: int | None = None,
    extra_args: Sequence[str] = (),
    gpu: bool = False,
    timeout_s: float | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> PicsResult:
    """Run ``bart pics`` on mridip data and read the result back.

    Parameters
    ----------
    kspace, maps
        The data and coil maps ``(C, Ny, Nx)``, as for mridip's own methods.
    regularizers
        ``-R`` terms in BART's syntax, e.g. ``["T:1024:0:0.01"]`` (temporal TV); their weights
        act on the data divided by ``scale``.
    iters
        ``-i``: iterations of BART's solver.
    scale
        The data are divided by ``scale`` before BART sees them (``-w 1`` then switches BART's
        own rescaling off) and the image is multiplied by it afterwards, so the result is in
        the data's units. A weight ``λ_bart`` then equals ``λ_abs / scale`` for
        ``½‖Ax − y‖² + λ_abs R(x)`` in the data's units.
    admm_rho, admm_cg_iters
        ``-u`` and ``-C`` of BART's ADMM (BART's defaults when None).
    extra_args
        More ``pics`` options.
    gpu
        ``-g`` (a BART built with CUDA).
    timeout_s
        Give up after this many seconds.
    workdir
        Folder for the ``.cfl`` files (a temporary folder, removed afterwards, when None).

    Returns
    -------
    PicsResult

    Raises
    ------
    ConfigError
        When BART is absent, or fails (its last message is included).
    """
    import time

    exe = require_bart()
    if iters < 1:
        raise ConfigError(f"BART pics needs at least one iteration, got {iters}")
    if not scale > 0:
        raise ConfigError(f"the data scale for BART must be > 0, got {scale}")
    inputs = to_bart(kspace, maps, scale)
    with tempfile.TemporaryDirectory(prefix="mridip-bart-", dir=workdir) as tmp:
        d = Path(tmp)
        write_cfl(d / "ksp", *inputs.kspace)
        write_cfl(d / "sens", *inputs.maps)
        cmd = [exe, "pics", "-i", str(int(iters)), "-w", "1"]
        if inputs.traj is not None:
            write_cfl(d / "traj", *inputs.traj)
            cmd += ["-t", str(d / "traj")]
        if inputs.pattern is not None:
            write_cfl(d / "pat", *inputs.pattern)
            cmd += ["-p", str(d / "pat")]
        for reg in regularizers:
            cmd += ["-R", reg]
        if admm_rho is not None:
            cmd += ["-u", repr(float(admm_rho))]
        if admm_cg_iters is not None:
            cmd += ["-C", str(int(admm_cg_iters))]
        if gpu:
            cmd.append("-g")
        cmd += [*extra_args, str(d / "ksp"), str(d / "sens"), str(d / "out")]
        t0 = time.perf_counter()
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ConfigError(f"bart pics did not finish within {timeout_s} s") from exc
        seconds = time.perf_counter() - t0
        log = (run.stdout or "") + (run.stderr or "")
        if run.returncode != 0:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", log)  # BART colours its errors
            last = [ln.strip() for ln in plain.splitlines() if ln.strip()]
            why = last[-1] if last else "no message"
            raise ConfigError(f"bart pics failed (exit {run.returncode}): {why}")
        data, dims = read_cfl(d / "out")
    image = from_bart_image(data, dims, inputs.matrix) * scale
    shown = [Path(a).name if a.startswith(str(d)) else a for a in cmd]
    shown[0] = "bart"
    return PicsResult(image.to(torch.complex64), shown, log, seconds)


def bart_tv(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float | None = None,
    lam_spatial: float = 0.0,
    lam_wavelet: float = 0.0,
    iters: int = 30,
    cg_iters: int = 4,
    rho: float = 0.1,
    gpu: bool = False,
    timeout_s: float | None = None,
) -> PicsResult:
    """BART ``pics`` with temporal TV, weights matched to :func:`mridip.baselines.total_variation`.

    The weights are relative exactly as in mridip's ``tv`` (``λ = lam · s``, see
    :func:`mridip.solvers.regularization_scale`), and so is the ADMM penalty
    (``ρ = rho · ‖AᴴA‖``), so that ``bart`` and ``tv`` with the same settings solve the same
    problem, ``½‖Ax − y‖² + λ_t ‖D_t x‖₁ + λ_s (‖D_y x‖₁ + ‖D_x x‖₁) + λ_w ‖Ψ x‖₁``, with
    BART's periodic differences (``tv``'s ``circular=True``). The data are handed to BART
    divided by ``s`` with its own rescaling off (``-w 1``), so BART's weights are ``lam``
    themselves: ``-R T:1024:0:lam`` (time is BART's dimension 10), ``-R T:3:0:lam_spatial``,
    ``-R W:3:0:lam_wavelet``.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam, lam_spatial, lam_wavelet
        Relative weights of temporal TV (default that of ``tv``), spatial TV and spatial
        wavelets (0: off).
    iters, cg_iters, rho
        ADMM iterations (``-i``), CG steps per iteration (``-C``), relative penalty (``-u``).
    gpu
        Run BART on the GPU (``-g``; needs a BART built with CUDA).
    timeout_s
        Give up after this many seconds.

    Returns
    -------
    PicsResult
        ``image`` in the data's units; ``info`` with the weights, ``scale``, ``command`` and
        ``bart_version``.

    Raises
    ------
    ConfigError
        When BART is absent or fails, or on invalid weights.
    """
    require_bart()
    lam = TV_LAM if lam is None else float(lam)
    for name, v in (("lam", lam), ("lam_spatial", lam_spatial), ("lam_wavelet", lam_wavelet)):
        if not (v >= 0 and np.isfinite(v)):
            raise ConfigError(f"{name} must be a finite number ≥ 0, got {v}")
    pb = _setup(kspace, maps, None, False, 0)
    regs = [f"T:{TIME_FLAG}:0:{lam:.6g}"]
    if lam_spatial > 0:
        regs.append(f"T:3:0:{lam_spatial:.6g}")
    if lam_wavelet > 0:
        regs.append(f"W:3:0:{lam_wavelet:.6g}")
    rho_abs = rho * pb.lipschitz
    # BART sees y/s, whose normal operator is unchanged: the penalty keeps its value
    res = pics(
        kspace,
        maps,
        regs,
        iters=iters,
        scale=pb.scale,
        admm_rho=rho_abs,
        admm_cg_iters=cg_iters,
        extra_args=["-m"],
        gpu=gpu,
        timeout_s=timeout_s,
    )
    res.info = {
        "lam": lam,
        "lam_spatial": lam_spatial,
        "lam_wavelet": lam_wavelet,
        "lam_abs": lam * pb.scale,
        "scale": pb.scale,
        "lipschitz": pb.lipschitz,
        "rho_abs": rho_abs,
        "command": " ".join(res.command),
        "bart_version": bart_version(),
        "bart_seconds": res.seconds,
    }
    return res
