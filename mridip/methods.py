"""The methods a user can choose by name, and the one-line :func:`reconstruct`.

A method is a function ``(kspace, maps, options) -> MethodOutput`` registered in
:data:`METHODS`; the command line and :func:`reconstruct` only go through this table, so a
new method becomes available everywhere by registering it here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace


@dataclass
class MethodOutput:
    """What a method returns: the image series ``(T, Ny, Nx)`` and its history."""

    image: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to run it and how to describe it."""

    name: str
    run: Callable[[DynamicKSpace, torch.Tensor, dict[str, Any]], MethodOutput]
    description: str
    family: str  # "baseline" or "dip"
    default_iters: int | None = None


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct`.

    Attributes
    ----------
    image
        ``(T, Ny, Nx)`` complex64 on the CPU.
    maps
        Coil maps used, ``(C, Ny, Nx)``.
    method, seconds, history, config
        Name, wall time of the method (not of loading), per-iteration history, settings used.
    """

    image: torch.Tensor
    maps: torch.Tensor
    method: str
    seconds: float
    history: dict[str, list[float]]
    config: dict[str, Any]
    frame_times: torch.Tensor | None = None


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method to :data:`METHODS` (a later registration under the same name replaces it)."""
    METHODS[spec.name] = spec
    return spec


def _run_zf(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    from mridip.baselines import zero_filled

    return MethodOutput(zero_filled(kspace, maps).image)


def _run_cgsense(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    from mridip.baselines import cg_sense

    lam = opts.get("lam")
    r = cg_sense(
        kspace,
        maps,
        iters=int(opts.get("iters") or 20),
        lam=0.01 if lam is None else float(lam),
        density_weighted=bool(opts.get("density_weighted", False)),
    )
    return MethodOutput(r.image, r.history)


register(
    MethodSpec(
        "zf",
        _run_zf,
        "zero-filled: density-compensated adjoint, coil-combined with the maps",
        "baseline",
    )
)
register(
    MethodSpec(
        "cgsense",
        _run_cgsense,
        "CG-SENSE: conjugate gradients on the normal equations, Tikhonov λ = 0.01",
        "baseline",
        default_iters=20,
    )
)

#: Methods that DESIGN.md names and later versions add (shown as "planned").
PLANNED = ("tv", "lps", "wavelet", "bart", "dip", "tddip", "gip", "mridip")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``; raise :class:`ConfigError` when CUDA is absent."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda, not {device!r}")
    return dev


def reconstruct(
    kspace: DynamicKSpace,
    method: str = "cgsense",
    maps: torch.Tensor | None = None,
    *,
    device: str | torch.device | None = "cpu",
    seed: int = 0,
    iters: int | None = None,
    **options: Any,
) -> Reconstruction:
    """Reconstruct a dynamic series with the named method.

    Parameters
    ----------
    kspace
        The data of one slice.
    method
        A key of :data:`METHODS` (``mridip methods`` lists them).
    maps
        Coil maps ``(C, Ny, Nx)``; estimated from the time-averaged data when None.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; data, maps and operators are moved there.
    seed
        Seed of every random choice of the method.
    iters
        Iterations (method-specific default when None).
    **options
        Method options (e.g. ``lam`` for ``cgsense``).

    Returns
    -------
    Reconstruction

    Raises
    ------
    ConfigError
        Unknown method, CUDA asked for but absent, bad option values.
    """
    from mridip.coils import estimate_maps

    if method not in METHODS:
        known = ", ".join(sorted(METHODS))
        hint = " (planned, not in this version)" if method in PLANNED else ""
        raise ConfigError(f"unknown method {method!r}{hint}; available: {known}")
    if iters is not None and iters < 1:
        raise ConfigError(f"--iters must be ≥ 1, got {iters}")
    spec = METHODS[method]
    dev = resolve_device(device)
    torch.manual_seed(seed)
    ks = kspace.to(dev)
    maps = estimate_maps(ks) if maps is None else maps.to(dev)
    opts = dict(options, iters=iters, seed=seed)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = spec.run(ks, maps, opts)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    config = {
        "method": method,
        "device": str(dev),
        "seed": seed,
        "iters": iters if iters is not None else spec.default_iters,
        **{k: v for k, v in options.items() if not isinstance(v, torch.Tensor)},
        **out.info,
    }
    return Reconstruction(
        image=out.image.detach().to("cpu", torch.complex64),
        maps=maps.detach().cpu(),
        method=method,
        seconds=seconds,
        history=out.history,
        config=config,
        frame_times=kspace.frame_times,
    )
