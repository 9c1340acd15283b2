"""The methods a user can choose by name, and the one-line :func:`reconstruct`.

A method is a function ``(kspace, maps, options) -> MethodOutput`` registered in
:data:`METHODS`; the command line and :func:`reconstruct` only go through this table, so a
new method becomes available everywhere by registering it here.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mridip.baselines import (
    cg_sense,
    low_rank_plus_sparse,
    total_variation,
    wavelet_fourier,
    zero_filled,
)
from mridip.coils import estimate_maps
from mridip.errors import ConfigError
from mridip.geometry import Geometry
from mridip.kspace import DynamicKSpace
from mridip.lam import DEFAULT_RULE, choose_lam
from mridip.output import MethodOutput
from mridip.recon import FitConfig, Reconstructor
from mridip.sampling import cartesian_density_weights


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
    frame_times, geometry
        The k-space's frame times ``(T,)`` in seconds and scanner geometry (or None), for
        the result files.
    options
        The method options as they were given (``config`` also holds what the method chose).
    """

    image: torch.Tensor
    maps: torch.Tensor
    method: str
    seconds: float
    history: dict[str, list[float]]
    config: dict[str, Any]
    frame_times: torch.Tensor | None = None
    geometry: Geometry | None = None
    options: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method to :data:`METHODS` (a later registration under the same name replaces it)."""
    METHODS[spec.name] = spec
    return spec


def _run_zf(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    return zero_filled(kspace, maps)


def _run_cgsense(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    kw: dict[str, Any] = {
        "iters": int(opts.get("iters") or 20),
        "density_weighted": bool(opts.get("density_weighted", False)),
    }
    choice = _auto_lam("cgsense", kspace, maps, opts, kw)
    r = cg_sense(kspace, maps, **kw)
    return MethodOutput(r.image, r.history, {"lam": kw["lam"], **choice})


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
        "CG-SENSE: conjugate gradients on the normal equations, Tikhonov λ from the data",
        "baseline",
        default_iters=20,
    )
)


# -- compressed sensing (mridip/baselines.py, mridip/bart.py; docs/baselines.md) ------------------
#: The options each baseline passes on to its solver, besides ``lam`` (:data:`LAM_OPTIONS`):
#: :func:`method_options` and the check in :func:`reconstruct` read this table, so an option
#: a method would not use is refused, not ignored.
CS_OPTIONS: dict[str, tuple[str, ...]] = {
    "zf": (),
    "cgsense": ("density_weighted",),
    "tv": ("lam_spatial", "cg_iters", "rho", "circular", "density_weighted"),
    "wavelet": ("levels", "wavelet", "temporal_fourier", "cycle_spinning", "density_weighted"),
    "lps": ("lam_lowrank", "density_weighted"),
    "bart": ("lam_spatial", "lam_wavelet", "cg_iters", "rho", "gpu"),
}


def _cs_kwargs(opts: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The method's own options that were given (None means: the method's default)."""
    kw = {k: opts[k] for k in names if opts.get(k) is not None}
    if opts.get("iters") is not None:
        kw["iters"] = int(opts["iters"])
    kw["seed"] = int(opts.get("seed") or 0)
    return kw


def _auto_lam(
    name: str, kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any], kw: dict[str, Any]
) -> dict[str, Any]:
    """Set ``kw["lam"]``: the given number, or (``"auto"`` or None) the choice of
    :func:`mridip.lam.choose_lam` by ``opts["lam_rule"]`` (and ``kw["iters"]`` with it where the
    rule chooses the iteration count too); returns the choice's record."""
    lam = opts.get("lam")
    if lam is not None and lam != "auto":
        kw["lam"] = float(lam)
        return {}
    choice = choose_lam(
        kspace,
        maps,
        name,
        rule=opts.get("lam_rule") or DEFAULT_RULE,
        holdout_unit=opts.get("lam_holdout_unit"),
        **{k: v for k, v in kw.items() if k != "seed"},
        seed=int(opts.get("seed") or 0),
    )
    kw["lam"] = choice.lam
    if choice.iters is not None:  # chosen with λ when no --iters was given (mridip.lam)
        kw["iters"] = choice.iters
        return {"lam_choice": choice.record(), "iters": choice.iters}
    return {"lam_choice": choice.record()}


def _cs_output(r: Any, choice: dict[str, Any]) -> MethodOutput:
    info = {k: v for k, v in r.info.items() if not isinstance(v, torch.Tensor)}
    return MethodOutput(r.image, r.history, {**info, **choice})


def _run_tv(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    kw = _cs_kwargs(opts, CS_OPTIONS["tv"])
    choice = _auto_lam("tv", kspace, maps, opts, kw)
    return _cs_output(total_variation(kspace, maps, **kw), choice)


def _run_wavelet(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    kw = _cs_kwargs(opts, CS_OPTIONS["wavelet"])
    choice = _auto_lam("wavelet", kspace, maps, opts, kw)
    return _cs_output(wavelet_fourier(kspace, maps, **kw), choice)


def _run_lps(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    kw = _cs_kwargs(opts, CS_OPTIONS["lps"])
    choice = _auto_lam("lps", kspace, maps, opts, kw)
    return _cs_output(low_rank_plus_sparse(kspace, maps, **kw), choice)


def _run_bart(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
    from mridip.bart import bart_tv

    kw = _cs_kwargs(opts, CS_OPTIONS["bart"])
    choice = _auto_lam("bart", kspace, maps, opts, kw)
    kw.pop("seed")
    return _cs_output(bart_tv(kspace, maps, **kw), choice)


register(
    MethodSpec(
        "tv",
        _run_tv,
        "temporal (+ spatial) total variation by ADMM, λ relative to the data",
        "baseline",
        default_iters=30,
    )
)
register(
    MethodSpec(
        "wavelet",
        _run_wavelet,
        "ℓ1 of spatial wavelets of the temporal Fourier transform (k-t SPARSE) by POGM",
        "baseline",
        default_iters=60,
    )
)
register(
    MethodSpec(
        "lps",
        _run_lps,
        "low rank + sparse (Otazo 2015): SVT + temporal-Fourier ℓ1, by POGM (Lin & Fessler)",
        "baseline",
        default_iters=50,
    )
)
register(
    MethodSpec(
        "bart",
        _run_bart,
        "BART pics with temporal TV on the same data (needs `bart` on the PATH)",
        "baseline",
        default_iters=30,
    )
)

#: Methods that DESIGN.md names and later versions add (shown as "planned").
PLANNED: tuple[str, ...] = ()


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
        Method options (e.g. ``lam`` for ``cgsense``). A DIP method's ``blend_partners``: a
        mapping from CS method name to a :class:`Reconstruction` of the same data with
        ``lam="auto"`` and default options, reused by the blend instead of solving again.

    Returns
    -------
    Reconstruction

    Raises
    ------
    ConfigError
        Unknown method, CUDA asked for but absent, bad option values, an option the method
        does not take (:func:`method_options`).
    """
    if method not in METHODS:
        known = ", ".join(sorted(METHODS))
        hint = " (planned, not in this version)" if method in PLANNED else ""
        raise ConfigError(f"unknown method {method!r}{hint}; available: {known}")
    if iters is not None and iters < 1:
        raise ConfigError(f"--iters must be ≥ 1, got {iters}")
    spec = METHODS[method]
    check_method_options(method, options)
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
        **{
            k: v
            for k, v in options.items()
            if not isinstance(v, torch.Tensor) and not callable(v) and k != "blend_partners"
        },
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
        geometry=kspace.geometry,
        options=dict(options, iters=iters),
    )


#: Options every method takes: how it reports progress (the command line sets it for all).
RUNTIME_OPTIONS = frozenset({"progress"})
#: Options a DIP method takes besides its fit, generator and blend options: checkpoints, the
#: step monitor of ``mridip bench`` and the CS images its blend may reuse.
DIP_RUNTIME_OPTIONS = frozenset(
    {"monitor", "checkpoint", "checkpoint_every", "resume", "blend_partners"}
)
#: How a CS method's λ is chosen when ``lam`` is ``"auto"`` (:func:`_auto_lam`).
LAM_OPTIONS = frozenset({"lam", "lam_rule", "lam_holdout_unit"})


def method_options(method: str) -> frozenset[str] | None:
    """The option names the registered method reads (None: a method registered elsewhere,
    whose options are not known here). Runtime options (:data:`RUNTIME_OPTIONS`,
    :data:`DIP_RUNTIME_OPTIONS`) are not included: a study cannot set them."""
    spec = METHODS[method]
    if spec.family == "dip":
        fit = set(FitConfig.__dataclass_fields__) - {"seed", "max_steps"}
        return frozenset(fit | set(FIT_OPTIONS) | set(GENERATOR_OPTIONS) | set(BLEND_OPTIONS))
    if method not in CS_OPTIONS:
        return None
    lam = LAM_OPTIONS if method != "zf" else frozenset()
    return frozenset(CS_OPTIONS[method]) | lam


def check_method_options(
    method: str, options: Mapping[str, Any], label: Callable[[str], str] = repr
) -> None:
    """Refuse an option the method would ignore (a DIP flag given to ``tv``, a CS weight given
    to a DIP method): one :class:`ConfigError` naming the option (as ``label`` writes it: the
    command line names its flag) and whose option it is, or the method's own."""
    if method not in METHODS:
        return  # reconstruct() names the unknown method
    known = method_options(method)
    if known is None:
        return
    allowed = known | RUNTIME_OPTIONS
    if METHODS[method].family == "dip":
        allowed |= DIP_RUNTIME_OPTIONS
    for key, value in options.items():
        if key in allowed or value is None:
            continue
        others = [
            m
            for m, spec in METHODS.items()
            if key in (method_options(m) or ())
            or (spec.family == "dip" and key in DIP_RUNTIME_OPTIONS)
        ]
        if others:  # a flag of the other family: say whose it is
            raise ConfigError(
                f"method {method!r} has no option {label(key)}: it is an option of "
                f"{', '.join(others)}"
            )
        own = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"method {method!r} has no option {label(key)}; its options are: {own}")


# -- deep image prior methods ---------------------------------------------------------------------
#: Options of the DIP methods that go to :class:`mridip.recon.FitConfig`.
FIT_OPTIONS = (
    "lr",
    "frames_per_step",
    "holdout",
    "patience",
    "eval_every",
    "min_steps",
    "final",
    "warm_start_steps",
    "admm_iters",
    "admm_rho",
    "admm_net_steps",
    "density_weighted",
    "amp",
    "amp_cpu",
    "channels_last",
)
#: Options that go to the generator (:func:`mridip.models.build_generator`).
GENERATOR_OPTIONS = (
    "latent",
    "cycles",
    "period",
    "resp_period",
    "width",
    "k",
    "knn_every",
    "rank",
    "temporal",
)
#: Options of the DIP methods' blend with a CS image (:func:`_blend`).
BLEND_OPTIONS = (
    "blend",
    "blend_weight",
    "blend_lam",
    "blend_band",
    "blend_rings",
    "blend_outside",
)
#: CS methods a DIP image may be blended with.
BLEND_METHODS = ("wavelet", "tv", "lps")
#: How a blend partner's λ is set: ``scan`` (default), the λ the method chooses for itself;
#: ``refine`` starts there and moves it by factors of :data:`BLEND_LAM_FACTOR` while the blend
#: predicts the held-out samples better (:func:`_refine_lam`; off: measured in
#: docs/reconstructor.md, it lifts the rat cine and costs PINCAT 1 dB).
BLEND_LAM_RULES = ("scan", "refine")
#: Step of the partner's λ search, and the most steps it takes in one direction.
BLEND_LAM_FACTOR = 2.0
BLEND_LAM_STEPS = 3
#: Blend of each preset when none is asked for (docs/reconstructor.md: the CS image whose blend
#: best predicts the held-out spokes, at the weight that does; ``lrdip`` measured on four
#: series and three seeds in docs/benchmarks.md, ``mridip`` on two series).
BLEND_DEFAULTS: dict[str, str] = {"mridip": "auto", "lrdip": "auto"}


def _blend_settings(opts: dict[str, Any], preset: str = "") -> tuple[str, float | None]:
    """``(method, weight)`` of the blend asked for or the preset's default
    (:data:`BLEND_DEFAULTS`; ``"none"``: no blend); weight None: chosen from the scan
    (``"auto"``, the default). Checked before a fit starts, so that a bad value costs
    nothing (``blend_lam`` too)."""
    method = opts.get("blend") or BLEND_DEFAULTS.get(preset, "none")
    if method not in ("none", "auto", "stack", *BLEND_METHODS):
        raise ConfigError(
            f"blend must be none, auto, stack or one of {', '.join(BLEND_METHODS)}, not {method!r}"
        )
    if (opts.get("blend_lam") or "scan") not in BLEND_LAM_RULES:
        raise ConfigError(
            f"blend lam must be {' or '.join(BLEND_LAM_RULES)}, not {opts['blend_lam']!r}"
        )
    if (opts.get("blend_band") or "all") not in BLEND_BANDS:
        raise ConfigError(
            f"blend band must be {' or '.join(BLEND_BANDS)}, not {opts['blend_band']!r}"
        )
    if (opts.get("blend_outside") or "dip") not in BLEND_OUTSIDE:
        raise ConfigError(
            f"blend outside must be {' or '.join(BLEND_OUTSIDE)}, not {opts['blend_outside']!r}"
        )
    rings = opts.get("blend_rings")
    if rings is not None:
        _check_rings(rings)
    weight = opts.get("blend_weight")
    if weight is None or weight == "auto":
        return method, None
    if method == "stack":
        raise ConfigError(
            "blend stack chooses all its weights from the held-out samples: leave blend "
            "weight at auto"
        )
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise ConfigError(f"blend weight must be auto or a number, got {weight!r}") from None
    if not 0 <= weight <= 1:
        raise ConfigError(f"blend weight must be between 0 and 1, got {weight}")
    return method, weight


def _heldout_curve(
    held: Any, blind_image: torch.Tensor, blind_cs: torch.Tensor
) -> tuple[float, float, float]:
    """Held-out residuals ``(r(0), r(½), r(1))`` of the blend ``(1 − w)·G + w·C``.

    Both images must be blind to the held-out samples: the DIP's ``blind_image`` (the returned
    image's counterpart fitted to the fitted samples only, :class:`mridip.recon.Reconstructor`)
    and the CS image solved again at its chosen λ on the fitted samples (the image of all data
    has seen the held-out ones and would always win). ``held`` is :func:`_held_judge`'s score.
    The residual is a quadratic in ``w``: these three values give it exactly
    (:func:`_quadratic`)."""
    g = blind_image.to(torch.complex64)
    c = blind_cs.to(g.device, g.dtype)
    return held(g), held(0.5 * (g + c)), held(c)


def _blind_cs(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    method: str,
    fit_w: torch.Tensor,
    lam: float,
    iters: int | None,
    seed: int,
) -> torch.Tensor:
    """The CS image solved again at its chosen λ on the fitted samples only (the image of all
    data has seen the held-out ones and would always win)."""
    from mridip.lam import solve
    from mridip.operators import for_kspace

    op_fit = for_kspace(kspace, maps, weights=fit_w)
    return solve(method, kspace, maps, lam, operator=op_fit, iters=iters, seed=seed).image


def _held_judge(kspace: DynamicKSpace, maps: torch.Tensor, held_w: torch.Tensor) -> Any:
    """The held-out score the blends minimise (``mridip.lam._HeldOut``)."""
    from mridip.lam import _HeldOut

    if kspace.dcf is not None:
        # weighted by the density compensation, the held-out residual measures the error over
        # k-space evenly, as the image-domain error does (Parseval); unweighted, the densely
        # sampled centre dominates it and it prefers the smoother CS image (rat: w 0.9, where
        # the truth and the weighted residual agree on 0.4)
        held_w = held_w * kspace.dcf
    elif kspace.is_cartesian and kspace.mask is not None:
        # the same for Cartesian lines: a variable-density pattern's few centre lines hold most
        # of the energy, and unweighted they made the judge prefer the smoothest image (PINCAT
        # at R = 8: tv at w 0.84, 25.19 dB; weighted, a stack of wavelet and tv, 25.61;
        # docs/reconstructor.md)
        held_w = held_w * cartesian_density_weights(kspace.mask).to(held_w)
    return _HeldOut(kspace, maps, held_w)


def _simplex_weights(gram: torch.Tensor) -> torch.Tensor:
    """``c ≥ 0, Σc = 1`` minimising ``cᵀ M c`` (M symmetric positive semidefinite, a handful
    of images): the best of the stationary points on every support that are feasible, which
    include the global minimum of this convex problem; a single image is always feasible."""
    n = gram.shape[0]
    best, best_q = None, math.inf
    for k in range(1, n + 1):
        for support in itertools.combinations(range(n), k):
            idx = list(support)
            kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64)
            kkt[:k, :k] = gram[idx][:, idx]
            kkt[:k, k] = kkt[k, :k] = 1.0
            rhs = torch.zeros(k + 1, dtype=torch.float64)
            rhs[k] = 1.0
            sol = torch.linalg.lstsq(kkt, rhs[:, None]).solution[:k, 0]
            if not torch.isfinite(sol).all() or sol.min() < -1e-9:
                continue
            c = torch.zeros(n, dtype=torch.float64)
            c[idx] = sol.clamp_min(0)
            c /= c.sum()
            q = float(c @ gram @ c)
            if q < best_q:
                best, best_q = c, q
    assert best is not None  # every single-image support is feasible
    return best


def _quadratic(r0: float, rh: float, r1: float, weight: float | None) -> tuple[float, float]:
    """``(w, r(w))`` of the parabola through ``(0, r0)``, ``(½, rh)``, ``(1, r1)``: at the given
    weight, or (None) at its minimum over ``[0, 1]``."""
    a = 2 * (r0 + r1 - 2 * rh)
    b = r1 - r0 - a
    if weight is None:
        weight = min(max(-b / (2 * a), 0.0), 1.0) if a > 0 else (1.0 if r1 < r0 else 0.0)
    return weight, a * weight**2 + b * weight + r0


def _partner_holdout_unit(kspace: DynamicKSpace) -> str:
    """What a blend partner's ``--lam auto`` holds out: whole Cartesian lines, but single
    samples of non-Cartesian data, the rule every blend was chosen and measured with, although
    ``lps`` and ``wavelet`` alone now hold out whole spokes
    (:func:`mridip.lam.default_holdout_unit`). With the partners chosen by whole spokes
    (larger weights, better alone: PINCAT's ``lps`` 28.99 → 30.14 dB) the held-out judge gave
    them more of the blend than the truth would: the graph preset at 48², PINCAT seeds 0–2
    32.51 / 32.58 / 32.43 → 31.90 / 32.25 / 31.90 dB (``lps`` at w 0.04–0.27 → 0.55–0.69;
    the DIP images alone 32.53–32.57), the rat 38.62 / 38.43 / 38.32 → 38.58 / 38.31 / 38.20
    (docs/reconstructor.md)."""
    return "readout" if kspace.is_cartesian else "sample"


def _partner(
    partners: Mapping[str, Reconstruction] | None, method: str, kspace: DynamicKSpace, seed: int
) -> Reconstruction | None:
    """The caller's reconstruction by ``method`` when it is what the blend would compute itself:
    same method, seed and image shape, ``lam`` chosen from the scan by the default rule with
    the partners' hold-out (:func:`_partner_holdout_unit`) and no other option changed; else
    None (the blend solves it)."""
    known = (partners or {}).get(method)
    if known is None:
        return None
    given = {k: v for k, v in known.options.items() if v is not None}
    unit = (known.config.get("lam_choice") or {}).get("holdout_unit")
    same = (
        known.method == method
        and known.config.get("seed") == seed
        and given.get("lam", "auto") == "auto"  # None: chosen from the scan too
        and given.get("lam_rule", DEFAULT_RULE) == DEFAULT_RULE
        and set(given) <= {"lam", "lam_rule", "lam_holdout_unit"}
        and unit == _partner_holdout_unit(kspace)
        and tuple(known.image.shape) == (kspace.n_frames, *kspace.matrix)
    )
    return known if same else None


@dataclass
class _CSPartner:
    """A blend partner: a CS method's image of all data (λ chosen from the scan), its record,
    whether it is the caller's (``reused``), and, when weights are to be chosen, the same
    method solved at that λ on the fitted samples only (``blind``)."""

    method: str
    image: torch.Tensor
    info: dict[str, Any]
    reused: bool
    blind: torch.Tensor | None = None


def _cs_partner(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    method: str,
    seed: int,
    partners: Mapping[str, Reconstruction] | None,
    fit_w: torch.Tensor | None = None,
) -> _CSPartner:
    """A blend partner's image and record, λ chosen from the scan: the caller's reconstruction
    when it is that one (:func:`_partner`), else solved here; with ``fit_w`` (the fitted
    samples' weights) also its blind image (:func:`_blind_cs`)."""
    known = _partner(partners, method, kspace, seed)
    if known is not None:
        cs = _CSPartner(method, known.image, known.config, True)
    else:
        opts = {"seed": seed, "lam": "auto", "lam_holdout_unit": _partner_holdout_unit(kspace)}
        out = METHODS[method].run(kspace, maps, opts)
        cs = _CSPartner(method, out.image, out.info, False)
    lam = cs.info.get("lam")
    if fit_w is not None and lam is not None:
        cs.blind = _blind_cs(kspace, maps, method, fit_w, float(lam), cs.info.get("iters"), seed)
    return cs


#: Most rings of spatial frequency a blend's weight may be split into (:func:`_ring_weights`).
BLEND_RINGS_MAX = 4
#: Rings of each preset when none are asked for (else 1, one weight for all frequencies).
BLEND_RINGS_DEFAULTS: dict[str, int] = {}


def _check_rings(rings: Any) -> int:
    """The number of rings asked for, or :class:`ConfigError`."""
    if isinstance(rings, bool) or not isinstance(rings, int | float) or rings != int(rings):
        raise ConfigError(f"blend rings must be a whole number, got {rings!r}")
    if not 1 <= int(rings) <= BLEND_RINGS_MAX:
        raise ConfigError(f"blend rings must be between 1 and {BLEND_RINGS_MAX}, got {rings}")
    return int(rings)


def _ring_masks(kspace: DynamicKSpace, n: int) -> torch.Tensor:
    """``(n, Ny, Nx)`` masks in :func:`torch.fft.fft2`'s order that split the grid's spatial
    frequencies into ``n`` rings of equal width up to the largest radius the trajectory reaches
    (Cartesian data: the grid's edge, half a cycle per voxel); the last ring also holds all
    beyond (the grid's corners). Every frequency is in exactly one ring."""
    ny, nx = kspace.matrix
    fy = torch.fft.fftfreq(ny, device=kspace.device)[:, None]
    fx = torch.fft.fftfreq(nx, device=kspace.device)[None, :]
    radius = (fy**2 + fx**2).sqrt()
    kmax = 0.5
    if kspace.traj is not None:
        kmax = float(kspace.traj.pow(2).sum(1).sqrt().max()) / (2 * math.pi)
    ring = (radius / (kmax / n) * (1 - 1e-6)).floor().clamp(0, n - 1).long()
    return ring[None] == torch.arange(n, device=ring.device)[:, None, None]


def _ring_parts(x: torch.Tensor, rings: torch.Tensor) -> list[torch.Tensor]:
    """``x`` (frames × Ny × Nx) split into the rings' parts (batched over frames); they sum
    to ``x``."""
    f = torch.fft.fft2(x)
    return [torch.fft.ifft2(f * r.to(x.device)).to(x.dtype) for r in rings]


def _box_weights(m: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``w ∈ [0, 1]ⁿ`` minimising ``vᵀ M v`` with ``v = (1, w)`` (M symmetric positive
    semidefinite, ``n + 1`` square, n small), and that minimum: the best of the stationary
    points of every choice of weights held at 0, at 1 or free that are feasible, which include
    the global minimum of this convex problem."""
    n = m.shape[0] - 1
    best, best_q = torch.zeros(n, dtype=torch.float64), float(m[0, 0])
    for fixed in itertools.product((None, 0.0, 1.0), repeat=n):
        w = torch.tensor([0.0 if f is None else f for f in fixed], dtype=torch.float64)
        free = [i for i, f in enumerate(fixed) if f is None]
        if free:
            a = m[1:, 1:][free][:, free]
            b = m[1:, 0][free] + m[1:, 1:][free] @ w
            sol = -torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
            if not torch.isfinite(sol).all() or sol.min() < -1e-9 or sol.max() > 1 + 1e-9:
                continue
            w[free] = sol.clamp(0, 1)
        v = torch.cat([torch.ones(1, dtype=torch.float64), w])
        q = float(v @ m @ v)
        if q < best_q:
            best, best_q = w, q
    return best, best_q


def _ring_weights(
    held: Any, blind_image: torch.Tensor, blind_cs: torch.Tensor, rings: torch.Tensor
) -> tuple[list[float], float]:
    """One blend weight per ring of spatial frequency (:func:`_ring_masks`), each in
    ``[0, 1]``: the blend ``G + Σₖ wₖ·Rₖ(C − G)`` (``Rₖ`` keeps ring k) of the blind images
    whose held-out residual is least, and that residual.

    The residual of ``G + Σ wₖ Dₖ`` is ``r_G + Σ wₖ·A Dₖ``, a quadratic in the weights: the
    Gram matrix (:meth:`mridip.lam._HeldOut.gram`) of the images ``G`` and ``G + Dₖ`` gives it
    exactly, and :func:`_box_weights` minimises it. One ring is the single weight of
    :func:`_quadratic`."""
    g = blind_image.to(torch.complex64)
    c = blind_cs.to(g.device, g.dtype)
    parts = _ring_parts(c - g, rings)
    gram = held.gram([g, *(g + d for d in parts)])
    n = len(parts)
    to_diff = torch.eye(n + 1, dtype=torch.float64)
    to_diff[1:, 0] = -1.0  # rows: r_G, r_{G+D_k} − r_G
    w, q = _box_weights(to_diff @ gram @ to_diff.T)
    return [float(v) for v in w], q


def _mix(
    image: torch.Tensor, cs_image: torch.Tensor, record: dict[str, Any], kspace: DynamicKSpace
) -> torch.Tensor:
    """The blend the record describes: ``(1 − w)·G + w·C``, or with ring weights
    ``G + Σₖ wₖ·Rₖ(C − G)``."""
    c = cs_image.to(image.device, image.dtype)
    ws = record.get("ring_weights")
    if ws is None:
        w = record["weight"]
        return (1 - w) * image + w * c
    parts = _ring_parts(c - image, _ring_masks(kspace, len(ws)))
    return image + sum((w * d for w, d in zip(ws, parts, strict=True)), torch.zeros_like(image))


def _blend_with(
    cs: _CSPartner,
    weight: float | None,
    fitted: Reconstructor | None,
    held: Any = None,
    rings: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One CS partner: its image and the blend's record. With ``held`` (:func:`_held_judge`)
    and the partner's blind image the blend is judged on the held-out samples, its weight
    chosen there unless one is given; without them the given weight or the even average.
    With ``rings`` (more than one, :func:`_ring_masks`) and a weight chosen on the held-out
    samples, each ring gets its own (:func:`_ring_weights`; ``ring_weights`` in the record,
    ``heldout_blend`` their residual, ``weight`` still the single weight's)."""
    record: dict[str, Any] = {"method": cs.method, "lam": cs.info.get("lam")}
    if cs.reused:
        record["reused"] = True
    if cs.info.get("iters") is not None:
        record["iters"] = cs.info["iters"]
    g = None if fitted is None else fitted.blind_image
    if held is None or g is None or cs.blind is None:
        if weight is not None:
            record["weight_rule"], record["weight"] = "given", weight
            return cs.image, record
        # nothing held out (or a refit saw it all): the even average
        even = (
            "even (no hold-out)"
            if fitted is None or fitted.split is None
            else "even (no blind image)"
        )
        record["weight_rule"], record["weight"] = even, 0.5
        return cs.image, record
    r = _heldout_curve(held, g, cs.blind)
    record["weight_rule"] = "given" if weight is not None else "heldout"
    record["weight"], record["heldout_blend"] = _quadratic(*r, weight)
    record["heldout_residual"] = {"dip": r[0], "half": r[1], "cs": r[2]}
    if rings is not None and len(rings) > 1 and weight is None:
        ws, q = _ring_weights(held, g, cs.blind, rings)
        record["heldout_one_ring"] = record["heldout_blend"]
        record["ring_weights"], record["heldout_blend"] = ws, q
    return cs.image, record


def _refine_lam(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    cs: _CSPartner,
    record: dict[str, Any],
    fitted: Reconstructor,
    held: Any,
    seed: int,
    rings: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The blend partner's λ moved for the blend: from the method's own choice ``λ₀`` up by
    factors of :data:`BLEND_LAM_FACTOR` while the blend (at its best weight) predicts the
    held-out samples better, at most :data:`BLEND_LAM_STEPS` steps; down the same way if the
    first step up did not help. Each step is one solve on the fitted samples (the blind
    image); the partner's image of all data is solved once more, at the λ kept.

    A CS method's own choice is the λ at which it is best alone; averaged with the DIP image,
    part of its noise cancels and part of its bias does not, so the blend may want a stronger
    prior. Only the partner already chosen at ``λ₀`` is moved: across methods the held-out
    residual at larger λ is no reliable judge. Off by default (``blend_lam="scan"``): on the
    rat cine it moves ``wavelet`` to 2·λ₀ (+0.04 to +0.2 dB, SSIM +0.017), on PINCAT its
    held-out residual keeps falling to 8·λ₀ while the image loses 1 dB: the held-out spokes
    do not see what a stronger prior smooths away between them (docs/reconstructor.md)."""
    assert fitted.split is not None and fitted.blind_image is not None
    lam0 = float(cs.info["lam"])
    iters = cs.info.get("iters")
    path = [{"factor": 1.0, "weight": record["weight"], "heldout_blend": record["heldout_blend"]}]
    best_f, best_r, blinds = 1.0, record["heldout_blend"], {1.0: cs.blind}
    for step in (BLEND_LAM_FACTOR, 1 / BLEND_LAM_FACTOR):
        f = 1.0
        for _ in range(BLEND_LAM_STEPS):
            f *= step
            b = _blind_cs(kspace, maps, cs.method, fitted.split[0], lam0 * f, iters, seed)
            w, r = _quadratic(*_heldout_curve(held, fitted.blind_image, b), None)
            path.append({"factor": f, "weight": w, "heldout_blend": r})
            if r >= best_r:
                break
            best_f, best_r, blinds[f] = f, r, b
        if best_f != 1.0:
            break
    if best_f == 1.0:
        return cs.image, {**record, "lam_rule": "refine", "lam_path": path}
    lam = lam0 * best_f
    opts: dict[str, Any] = {"seed": seed, "lam": lam}
    if iters is not None:
        opts["iters"] = iters
    out = METHODS[cs.method].run(kspace, maps, opts)
    moved = _CSPartner(cs.method, out.image, {**cs.info, "lam": lam}, False, blinds[best_f])
    image, new = _blend_with(moved, None, fitted, held, rings)
    new.update(lam_rule="refine", lam_scan=lam0, lam_factor=best_f, lam_path=path)
    return image, new


#: ``blend auto`` combines all the images as ``blend stack`` does when the best single blend
#: keeps less than this share of the DIP image: the DIP then adds nothing a CS image lacks, and
#: the CS images averaged with each other predict the held-out samples better than any one
#: (docs/reconstructor.md: the textured cine, +0.8 and +1.4 dB over its single blend).
STACK_BELOW = 0.1


#: Where a blend replaces the DIP image: ``all``, everywhere; ``measured``, the spatial
#: frequencies inside the largest radius a non-Cartesian trajectory reaches (beyond it, in the
#: corners of the grid, nothing is measured, no held-out sample judges the blend, and the DIP
#: image is kept, unless the blend keeps almost none of it). Cartesian data measure the whole
#: grid's extent: the same.
BLEND_BANDS = ("all", "measured")
#: Band of each preset when none is asked for (else ``all``): measured in docs/reconstructor.md,
#: ``measured`` lifts the graph preset's SSIM on every rat scan (+0.010 to +0.018) and its PSNR
#: on the rat and PINCAT, and costs its perfusion fits 0.12 and 0.43 dB; on ``lrdip``, whose
#: decoder puts less detail in the corners, it cost the rat 0.15 dB.
BLEND_BAND_DEFAULTS: dict[str, str] = {"mridip": "measured"}

#: What a blend returns where no coil sees (the coil maps are zero, and a fit with
#: ``mask_support`` leaves the DIP image zero): ``dip``, the blend of that zero with the CS
#: image; ``partner``, the CS image alone (a stack's CS images in their stacked proportions).
#: No measured sample, held out or fitted, sees those voxels: the DIP's zero there is the
#: absence of an estimate, the CS image's value its prior's extrapolation across the support's
#: edge, which it pays for in its λ-weighted term.
#: Off for every preset (docs/benchmarks.md: +0.010 to +0.014 SSIM with ``wavelet`` as the
#: partner, the only one that puts anything there; −0.36 dB with ``lps``).
BLEND_OUTSIDE = ("dip", "partner")


def _measured_band(kspace: DynamicKSpace) -> torch.Tensor | None:
    """``(Ny, Nx)`` mask in :func:`torch.fft.fft2`'s order of the grid's spatial frequencies
    within the largest radius the trajectory reaches; None where that is all of them
    (Cartesian data, or a trajectory that reaches the corners)."""
    if kspace.traj is None:
        return None
    kmax = float(kspace.traj.pow(2).sum(1).sqrt().max()) / (2 * math.pi)  # cycles per voxel
    ny, nx = kspace.matrix
    fy = torch.fft.fftfreq(ny, device=kspace.device)[:, None]
    fx = torch.fft.fftfreq(nx, device=kspace.device)[None, :]
    inside = (fy**2 + fx**2).sqrt() <= kmax * (1 + 1e-6)
    return None if bool(inside.all()) else inside


def _keep_dip_outside(
    blended: torch.Tensor, image: torch.Tensor, kspace: DynamicKSpace
) -> tuple[torch.Tensor, float]:
    """The blend within the measured band (:func:`_measured_band`) and the DIP ``image``
    beyond it: ``G + F⁻¹(band · F(B − G))`` frame by frame (batched FFTs); also the band's
    share of the grid (1.0: nothing changed)."""
    band = _measured_band(kspace)
    if band is None:
        return blended, 1.0
    band = band.to(image.device)
    diff = torch.fft.fft2(blended - image) * band
    return image + torch.fft.ifft2(diff).to(image.dtype), float(band.float().mean())


def _blend_images(
    image: torch.Tensor,
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    method: str,
    weight: float | None,
    seed: int,
    fitted: Reconstructor | None = None,
    partners: Mapping[str, Reconstruction] | None = None,
    lam_rule: str = "scan",
    rings: int = 1,
) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor | None]:
    """``(1 − w)·DIP + w·CS``: the DIP image averaged with a CS image of the same data, the CS
    method's weight chosen from the scan (``lam="auto"``). Two priors whose errors are not
    the same: the average is closer to the truth than either where both are good
    (docs/reconstructor.md, measured there). ``partners``: reconstructions of the same data
    by CS methods with ``lam="auto"`` (what ``mridip demo`` has already computed), used
    instead of solving again.

    ``weight`` None: ``w`` is the minimum over ``[0, 1]`` of the blend's residual on the fit's
    held-out samples (:func:`_heldout_curve`; needs ``fitted``, the fit's reconstructor with a
    hold-out, else ½). ``method="auto"``: every method of :data:`BLEND_METHODS` is tried and
    the blend whose held-out residual is lowest is kept (without a hold-out: ``wavelet``); if
    that blend keeps less than :data:`STACK_BELOW` of the DIP image, all images are stacked
    instead. ``method="stack"``: the DIP image and all of them at once (:func:`_stack`;
    without a hold-out as ``auto``). ``lam_rule="refine"``: a single partner whose weight is
    chosen on the held-out samples has its λ moved for the blend (:func:`_refine_lam`).
    ``rings`` > 1: a single partner's weight chosen on the held-out samples is one weight per
    ring of spatial frequency (:func:`_ring_weights`); ``stack`` is not split.

    Returns the blend, its record and the CS estimate it blended in (a stack's CS images in
    their stacked proportions; None where the stack kept none of them)."""
    heldout = not (fitted is None or fitted.split is None or fitted.blind_image is None)
    if method in ("auto", "stack") and not heldout:
        method = "wavelet"
    held = fit_w = None
    if heldout and (weight is None or method in ("auto", "stack")):
        assert fitted is not None and fitted.split is not None
        fit_w, held = fitted.split[0], _held_judge(kspace, maps, fitted.split[1])
    masks = _ring_masks(kspace, rings) if rings > 1 else None
    if method not in ("auto", "stack"):
        cs = _cs_partner(kspace, maps, method, seed, partners, fit_w)
        cs_image, record = _blend_with(cs, weight, fitted, held, masks)
        if lam_rule == "refine" and weight is None and "heldout_blend" in record:
            assert fitted is not None
            cs_image, record = _refine_lam(kspace, maps, cs, record, fitted, held, seed, masks)
        return _mix(image, cs_image, record, kspace), record, cs_image
    assert fitted is not None and held is not None
    found = [_cs_partner(kspace, maps, m, seed, partners, fit_w) for m in BLEND_METHODS]
    if method == "stack":
        return _stack(image, fitted, found, held)
    tried = [_blend_with(cs, weight, fitted, held, masks) for cs in found]
    best = min(range(len(tried)), key=lambda i: tried[i][1]["heldout_blend"])
    cs_image, record = tried[best]
    summary = {
        r["method"]: {
            "weight": r["weight"],
            "heldout_blend": r["heldout_blend"],
            **({"ring_weights": r["ring_weights"]} if "ring_weights" in r else {}),
            **({"reused": True} if r.get("reused") else {}),
        }
        for _, r in tried
    }
    w = record["weight"]
    if weight is None and 1 - w < STACK_BELOW:
        out, stacked, cs_only = _stack(image, fitted, found, held)
        stacked["weight_rule"] = (
            f"heldout; stacked: the best single blend ({record['method']}, w {w:.2f}) kept "
            f"less than {STACK_BELOW:g} of the DIP image"
        )
        stacked["single"] = dict(record, tried=summary)
        return out, stacked, cs_only
    if weight is None and lam_rule == "refine":
        cs_image, record = _refine_lam(kspace, maps, found[best], record, fitted, held, seed, masks)
    record["tried"] = summary
    return _mix(image, cs_image, record, kspace), record, cs_image


def _blend(
    image: torch.Tensor,
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    method: str,
    weight: float | None,
    seed: int,
    fitted: Reconstructor | None = None,
    partners: Mapping[str, Reconstruction] | None = None,
    lam_rule: str = "scan",
    band: str = "all",
    rings: int = 1,
    outside: str = "dip",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The blend of :func:`_blend_images`; with ``band="measured"`` only within the spatial
    frequencies the trajectory reaches, the DIP image kept beyond them
    (:func:`_keep_dip_outside`; recorded as ``band`` and ``band_share``) — unless the blend
    keeps less than :data:`STACK_BELOW` of the DIP image: a DIP image the held-out samples
    found no use for is no better guess beyond them either (measured on the textured cine and
    perfusion, docs/reconstructor.md). A preset's default band: :data:`BLEND_BAND_DEFAULTS`.

    ``outside="partner"``: where no coil sees and the fit masked the DIP image to zero, the
    CS estimate alone (:data:`BLEND_OUTSIDE`; recorded as ``outside`` and ``outside_share``,
    the share of the field of view replaced)."""
    out, record, cs_only = _blend_images(
        image, kspace, maps, method, weight, seed, fitted, partners, lam_rule, rings
    )
    if band == "measured" and 1 - record["weight"] >= STACK_BELOW:
        out, share = _keep_dip_outside(out, image, kspace)
        record.update(band="measured", band_share=share)
    else:
        record["band"] = "all"
    record["outside"] = "dip"
    masked = fitted is None or fitted.config.mask_support
    if outside == "partner" and cs_only is not None and masked:
        unseen = maps.abs().pow(2).sum(0).to(out.device) == 0
        out = torch.where(unseen, cs_only.to(out.device, out.dtype), out)
        record.update(outside="partner", outside_share=float(unseen.float().mean()))
    return out, record


def _stack(
    image: torch.Tensor,
    fitted: Reconstructor,
    found: list[_CSPartner],
    held: Any,
) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor | None]:
    """``c₀·G + Σ cₘ·CSₘ`` over the partners ``found`` (every method of
    :data:`BLEND_METHODS`, each with its blind image), the weights ``c ≥ 0, Σc = 1``
    minimising the held-out residual of the same combination of the blind images (the DIP's
    and each CS image solved on the fitted samples): an exact quadratic
    (:meth:`mridip.lam._HeldOut.gram`), minimised over the simplex (:func:`_simplex_weights`).
    Also ``Σ cₘ·CSₘ / Σ cₘ``, the CS images in their stacked proportions (None if ``Σ cₘ``
    is zero)."""
    assert fitted.blind_image is not None
    g = fitted.blind_image.to(torch.complex64)
    names, full, blind = ["dip"], [image], [g]
    used: dict[str, dict[str, Any]] = {}
    for cs in found:
        assert cs.blind is not None
        used[cs.method] = {"lam": float(cs.info["lam"]), **({"reused": True} if cs.reused else {})}
        names.append(cs.method)
        full.append(cs.image.to(image.device, image.dtype))
        blind.append(cs.blind.to(g.device, g.dtype))
    gram = held.gram(blind)
    c = _simplex_weights(gram)
    out = sum((float(ci) * x for ci, x in zip(c, full, strict=True)), torch.zeros_like(image))
    cs_share = float(c[1:].sum())
    cs_only = (
        sum((float(ci) * x for ci, x in zip(c[1:], full[1:], strict=True)), torch.zeros_like(image))
        / cs_share
        if cs_share > 1e-6
        else None
    )
    weights = {n: float(ci) for n, ci in zip(names, c, strict=True)}
    for m in used:
        used[m]["weight"] = weights[m]
    record = {
        "method": "stack",
        "weight": 1.0 - weights["dip"],  # the CS images' share
        "weights": weights,
        "weight_rule": "heldout",
        "heldout_blend": float(c @ gram @ c),
        "heldout_residual": {n: float(gram[i, i]) for i, n in enumerate(names)},
        "tried": used,
    }
    return out, record, cs_only


#: Seed offset between the generators of an ensemble's fits (``FitConfig.ensemble``).
ENSEMBLE_SEED_STEP = 1000
#: The refusal of checkpoints for an ensemble (a checkpoint holds one fit).
NO_ENSEMBLE_CHECKPOINT = (
    "an ensemble of fits keeps no checkpoints: use --ensemble 1 with --checkpoint-every"
)


def _ensemble(
    rec: Reconstructor, res: Any, more: list[tuple[Any, Any]]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The average of an ensemble's images: the first fit's (``rec``, ``res``) and ``more``,
    ``(result, blind image)`` of each further fit.

    The fits share their hold-out, so the images they fitted without it average into the
    ensemble's blind image, which is set on ``rec`` for the blend's judge."""
    results = [res, *(f for f, _ in more)]
    blinds = [rec.blind_image, *(b for _, b in more)]
    image = sum((f.image for f in results[1:]), results[0].image.clone()) / len(results)
    if all(b is not None for b in blinds):
        rec.blind_image = sum(blinds[1:], blinds[0].clone()) / len(blinds)  # type: ignore[union-attr]
    record = {
        "fits": len(results),
        "seed_step": ENSEMBLE_SEED_STEP,
        "steps_run": [f.info["steps_run"] for f in results],
        "stopped_early": [f.info["stopped_early"] for f in results],
        "seconds": [round(f.seconds, 1) for f in results],
    }
    return image, record


def _run_dip(preset: str) -> Callable[[DynamicKSpace, torch.Tensor, dict[str, Any]], MethodOutput]:
    def run(kspace: DynamicKSpace, maps: torch.Tensor, opts: dict[str, Any]) -> MethodOutput:
        from mridip.models import PRESETS, build_generator  # torch_geometric: only when asked

        seed = int(opts.get("seed") or 0)
        blend, blend_weight = _blend_settings(opts, preset)
        fit_kw = dict(PRESETS[preset].fit_defaults)
        # every FitConfig field is an option, so that new ones reach studies and Python callers
        names = (set(FIT_OPTIONS) | set(FitConfig.__dataclass_fields__)) - {"seed", "max_steps"}
        fit_kw.update({k: opts[k] for k in names if opts.get(k) is not None})
        if opts.get("iters"):
            fit_kw["max_steps"] = int(opts["iters"])
        config = FitConfig(seed=seed, **fit_kw)
        gen_kw = {k: opts[k] for k in GENERATOR_OPTIONS if opts.get(k) is not None}
        if config.ensemble > 1 and (opts.get("checkpoint") or opts.get("resume")):
            raise ConfigError(NO_ENSEMBLE_CHECKPOINT)
        assert kspace.frame_times is not None
        times = kspace.frame_times.to(torch.float32)

        def fit(member: int) -> tuple[Reconstructor, Any, Any]:
            generator = build_generator(
                preset,
                matrix=kspace.matrix,
                frame_times=times,
                seed=seed + ENSEMBLE_SEED_STEP * member,
                **gen_kw,
            )
            rec = Reconstructor(
                kspace,
                maps,
                generator,
                config,
                device=kspace.device,
                checkpoint=opts.get("checkpoint"),
                checkpoint_every=int(opts.get("checkpoint_every") or 0),
                progress=bool(opts.get("progress", True)),
                monitor=opts.get("monitor"),
            )
            return rec, generator, rec.fit(resume=bool(opts.get("resume", False)))

        rec, generator, res = fit(0)
        info = dict(res.info, parameters=generator.param_count(), preset=preset, **gen_kw)
        info["iters"] = config.max_steps  # the step limit it ran with (presets set their own)
        image = res.image
        if config.ensemble > 1:
            more = []
            for member in range(1, config.ensemble):  # one fit after another: each is batched
                other, _, found = fit(member)
                more.append((found, other.blind_image))
                del other  # its operators and generator are not needed again
            image, info["ensemble"] = _ensemble(rec, res, more)
        if blend != "none":
            image, info["blend"] = _blend(
                image,
                kspace,
                maps,
                blend,
                blend_weight,
                seed,
                fitted=rec,
                partners=opts.get("blend_partners"),
                lam_rule=opts.get("blend_lam") or "scan",
                band=opts.get("blend_band") or BLEND_BAND_DEFAULTS.get(preset, "all"),
                rings=int(opts.get("blend_rings") or BLEND_RINGS_DEFAULTS.get(preset, 1)),
                outside=opts.get("blend_outside") or "dip",
            )
        return MethodOutput(image, res.history, info)

    return run


def _register_dip() -> None:
    descriptions = {
        "dip": "deep image prior: fixed noise per frame → one shared CNN decoder (Ulyanov 2018)",
        "tddip": "time-dependent DIP: time manifold → MapNet → shared CNN decoder (Yoo 2021)",
        "gip": "graph image prior: per-frame CNNs → graph network over frames (Li 2024)",
        "mridip": "time manifold + MapNet → per-frame CNNs → graph network over frames (default)",
        "lrdip": "low-rank DIP: CNN spatial bases × MLP temporal coefficients of the time manifold",
    }
    for name, text in descriptions.items():
        register(MethodSpec(name, _run_dip(name), text, "dip", default_iters=_dip_default_steps()))


def _dip_default_steps() -> int:
    """Default step limit of the DIP fits (a preset may set its own: the fit records the limit
    it ran with as ``iters``)."""
    return FitConfig().max_steps


_register_dip()
