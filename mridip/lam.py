"""Regularisation weights chosen from the scan itself (``--lam auto``).

The compressed-sensing methods (:mod:`mridip.baselines`, :mod:`mridip.bart`) take a relative
weight ``lam`` (``λ = lam · s``, :func:`mridip.baselines.regularization_scale`). No default
carries over between scans (docs/baselines.md), and a user has no truth to sweep against, so
:func:`choose_lam` picks ``lam`` from the measured data alone, by one of two rules:

``"cv"`` (the default)
    k-space cross-validation: a random part of the measured samples is held out
    (:func:`mridip.sampling.holdout_weights`, the split the DIP's stopping rule uses; 20% of
    the readouts, whole, or 10% of single samples: :func:`default_holdout_unit`), the method
    is fitted to the rest for each candidate ``lam``, and the ``lam`` whose image best
    predicts the held-out samples wins. A golden-section-like search on ``log lam`` keeps the
    cost to a few solves.
    Where the iteration count is part of the method (``tv``'s ADMM regularises by stopping
    early, docs/baselines.md) and the caller gives none, each fit runs to a cap and the
    held-out residual is measured every few iterations on the way (one forward transform per
    check): ``lam`` and the iteration count are chosen together, as the pair with the lowest
    held-out residual (:data:`ITER_CAP`).
``"discrepancy"``
    Morozov's discrepancy principle for prewhitened data: the largest ``lam`` whose residual
    ``‖Ax − y‖²`` is at most ``tau`` times its noise expectation ``M σ²`` (``M`` measured
    complex samples, ``σ² = 1`` after prewhitening with the noise scans), i.e. ``χ²`` per
    degree of freedom at most ``tau``.

:func:`lam_sweep` runs a method for a list of weights and reports data consistency (and the
quality against a truth when one is known); :func:`discrepancy_choice` picks from such a sweep.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mridip.baselines import (
    LPS_LAM,
    TV_LAM,
    WAVELET_LAM,
    BaselineResult,
    cg_sense,
    data_consistency,
    low_rank_plus_sparse,
    total_variation,
    wavelet_fourier,
)
from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace
from mridip.operators import DynamicSense, for_kspace
from mridip.sampling import holdout_weights, readouts_divisible

#: Methods whose ``lam`` a sweep can vary and ``--lam auto`` can choose.
SWEEPABLE = ("tv", "wavelet", "lps", "bart", "cgsense")
#: Rules of :func:`choose_lam`.
RULES = ("cv", "discrepancy")
#: The rule ``--lam auto`` uses (docs/baselines.md: measured against a truth-swept best).
DEFAULT_RULE = "cv"
#: Starting weight of the search per method (the former fixed defaults).
START = {"tv": TV_LAM, "wavelet": WAVELET_LAM, "lps": LPS_LAM, "cgsense": 0.01, "bart": TV_LAM}
#: CG-SENSE's iterations and weighting when the caller gives none (as ``mridip recon``).
CGSENSE_ITERS = 20
#: Methods whose iteration count ``cv`` chooses with ``lam`` when the caller gives none, and
#: the most iterations a fit runs: the method's default, so the fits cost what they cost with
#: a fixed count and only the checks come on top; running to 60 would have gained at most
#: 0.28 dB (docs/benchmarks.md "Choosing λ from the scan").
ITER_CAP = {"tv": 30}
#: Iterations between two checks of the held-out residual.
ITER_EVERY = 5
#: Fits the ``cv`` choice may run where it chooses the iteration count too: the three that
#: bracket the start and one more beyond an edge; the vertex of the parabola is not fitted
#: (docs/benchmarks.md "Choosing λ from the scan": with up to five fits the cost was above 5×
#: one solve on some 64² scans; without the fifth the choices moved by at most 0.05 dB).
ITER_SOLVES = 4


def _bart_tv(*args: Any, **kw: Any) -> Any:
    from mridip.bart import bart_tv  # BART is optional: imported when asked for

    return bart_tv(*args, **kw)


def _cgsense(
    kspace: DynamicKSpace, maps: torch.Tensor, *, iters: int | None = None, **kw: Any
) -> BaselineResult:
    kw.setdefault("density_weighted", False)
    return cg_sense(kspace, maps, iters=iters or CGSENSE_ITERS, **kw)


_SOLVERS: dict[str, Callable[..., Any]] = {
    "tv": total_variation,
    "wavelet": wavelet_fourier,
    "lps": low_rank_plus_sparse,
    "cgsense": _cgsense,
    "bart": _bart_tv,
}
_SIGNATURES: dict[str, Callable[..., Any]] = {
    "tv": total_variation,
    "wavelet": wavelet_fourier,
    "lps": low_rank_plus_sparse,
    "cgsense": cg_sense,
}


def _check_method(method: str) -> None:
    if method not in SWEEPABLE:
        raise ConfigError(
            f"choosing λ needs a regularised method ({', '.join(SWEEPABLE)}), not {method!r}"
        )


def solve(
    method: str,
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float,
    operator: DynamicSense | None = None,
    **options: Any,
) -> Any:
    """Run one regularised method at a fixed relative weight.

    Parameters
    ----------
    method
        One of :data:`SWEEPABLE`.
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam
        Relative weight (the method's ``lam``).
    operator
        A prebuilt operator (e.g. one whose weights leave out held-out samples); not for
        ``bart``.
    **options
        The method's own options; None values and options the method does not take are
        dropped, so one options dict serves every method.

    Returns
    -------
    BaselineResult or RegularizedResult
        As the method returns it (``image`` ``(T, Ny, Nx)``).
    """
    _check_method(method)
    fn = _SOLVERS[method]
    if method == "bart":
        from mridip.bart import bart_tv

        names = set(inspect.signature(bart_tv).parameters)
    else:
        names = set(inspect.signature(_SIGNATURES[method]).parameters)
    kw = {k: v for k, v in options.items() if v is not None and k in names and k != "lam"}
    if operator is not None:
        if method == "bart":
            raise ConfigError("BART builds its own operator")
        kw["operator"] = operator
    return fn(kspace, maps, lam=float(lam), **kw)


# -- scores ---------------------------------------------------------------------------------------
def _sample_weights(kspace: DynamicKSpace) -> torch.Tensor:
    """1 on measured samples, broadcastable to the data ``(T, C, …)``."""
    if kspace.mask is not None:
        return kspace.mask[:, None].to(torch.float32)
    return torch.ones((1, 1, 1), device=kspace.device)


class _Residual:
    """``Σ w |A x − y|²`` over the measured samples by one forward transform per image.

    Computed directly rather than through the normal operator: the differences between
    candidate weights are a few per cent of a residual that is itself a small fraction of
    ``‖y‖²``, too little for ``Re⟨x, AᴴAx⟩ − 2Re⟨x, Aᴴy⟩ + ‖y‖²`` in single precision.
    """

    def __init__(self, kspace: DynamicKSpace, maps: torch.Tensor) -> None:
        self.kspace = kspace
        self.op = for_kspace(kspace, maps, toeplitz=False)
        self.measured = _sample_weights(kspace)

    def __call__(self, image: torch.Tensor, weights: torch.Tensor | None = None) -> float:
        r = self.op.forward(image.to(self.kspace.device, self.op.dtype)) - self.kspace.data
        w = self.measured if weights is None else self.measured * _coil_axis(weights)
        return float((r.abs().pow(2) * w).sum(dtype=torch.float64))

    def energy(self, weights: torch.Tensor | None = None) -> float:
        w = self.measured if weights is None else self.measured * _coil_axis(weights)
        return float((self.kspace.data.abs().pow(2) * w).sum(dtype=torch.float64))

    def samples(self, weights: torch.Tensor | None = None) -> float:
        w = self.measured if weights is None else self.measured * _coil_axis(weights)
        full = torch.ones_like(self.kspace.data.real) * w
        return float(full.sum(dtype=torch.float64))


class _HeldOut:
    """``Σ_held |A x − y|² / Σ_held |y|²``, the ``cv`` score of an image series.

    Non-Cartesian data are transformed at the held-out samples only (a NUFFT's cost grows with
    its samples: 0.24 s instead of 0.65 s on a 64² radial cine, 8 coils and frames), each
    frame's list padded to the longest with zero-weighted repeats.
    """

    def __init__(self, kspace: DynamicKSpace, maps: torch.Tensor, held: torch.Tensor) -> None:
        self.weights: torch.Tensor | None = held
        if kspace.traj is not None:
            keep = held[:, 0] > 0  # (T, K)
            counts = keep.sum(1)
            n = int(counts.max())
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n]
            valid = torch.arange(n, device=held.device)[None] < counts[:, None]
            idx = torch.where(valid, order, order[:, :1])  # (T, n): held-out first, then pads
            take = idx[:, None]
            kspace = dataclasses.replace(
                kspace,
                data=torch.gather(kspace.data, 2, take.expand(-1, kspace.data.shape[1], -1)),
                traj=torch.gather(kspace.traj, 2, take.expand(-1, 2, -1)),
                dcf=None if kspace.dcf is None else torch.gather(kspace.dcf, 2, take),
            )
            self.weights = (torch.gather(held[:, 0], 1, idx) * valid)[:, None]
        self.residual = _Residual(kspace, maps)
        self.energy = self.residual.energy(self.weights)

    def __call__(self, image: torch.Tensor) -> float:
        return self.residual(image, self.weights) / self.energy

    def gram(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """``M[i, j] = Σ_held Re(conj(rᵢ)·rⱼ) / Σ_held |y|²`` with ``rᵢ = A xᵢ − y``, float64.

        For weights ``c`` that sum to one, ``A(Σ cᵢxᵢ) − y = Σ cᵢrᵢ``, so the held-out score of
        the combination is ``cᵀMc`` exactly (the diagonal is each image's own score)."""
        r = self.residual
        w = r.measured if self.weights is None else r.measured * _coil_axis(self.weights)
        res = [r.op.forward(x.to(r.kspace.device, r.op.dtype)) - r.kspace.data for x in images]
        m = torch.zeros(len(res), len(res), dtype=torch.float64)
        for i, ri in enumerate(res):
            wi = ri.conj() * w
            for j in range(i, len(res)):
                m[i, j] = m[j, i] = (wi * res[j]).real.sum(dtype=torch.float64)
        return m / self.energy


def _coil_axis(weights: torch.Tensor) -> torch.Tensor:
    """Operator weights ``(T, Ny, Nx)`` or ``(T, 1, K)`` → broadcastable to ``(T, C, …)``."""
    return weights[:, None] if weights.ndim == 3 and weights.shape[1] != 1 else weights


# -- the choice -----------------------------------------------------------------------------------
@dataclass
class LamChoice:
    """Result of :func:`choose_lam`.

    Attributes
    ----------
    lam
        The relative weight chosen.
    rule
        ``"cv"`` or ``"discrepancy"``.
    score
        What the rule measured: ``"heldout_residual"`` (``Σ_held |Ax − y|² / Σ_held |y|²``) or
        ``"chi2"`` (``‖Ax − y‖² / (M σ²)``).
    lams, scores
        Every weight tried and its score, sorted by weight (the curve drawn in ``lam.png``).
    seconds
        Wall time of the choice (without the final solve on all samples).
    solves
        Solves the choice ran.
    target
        The discrepancy rule's bound on ``chi2`` (NaN for ``cv``).
    holdout
        Fraction of samples held out (0 for the discrepancy rule).
    holdout_unit
        What was held out: ``"sample"`` or ``"readout"`` (``""`` for the discrepancy rule).
    result
        The discrepancy rule's solve at ``lam`` on all samples (reused instead of a final
        solve); None for ``cv``.
    iters
        The iteration count chosen with ``lam`` (None: not chosen; the method runs the
        iterations the caller gave, or its default).
    iter_counts, iter_scores
        When ``iters`` was chosen: the iteration counts checked and, per weight of ``lams``,
        the held-out residual after each (``scores`` holds the lowest of each row).
    lam_fitted
        False when ``lam`` is the vertex of the parabola through the best weight fitted and
        its neighbours, chosen without a fit of its own (then not in ``lams``).
    spare_centre
        True when the Cartesian lines every frame measures were kept out of the hold-out.
    """

    lam: float
    rule: str
    score: str
    lams: list[float]
    scores: list[float]
    seconds: float
    solves: int
    target: float = float("nan")
    holdout: float = 0.0
    holdout_unit: str = ""
    result: Any = field(default=None, repr=False)
    iters: int | None = None
    iter_counts: list[int] = field(default_factory=list)
    iter_scores: list[list[float]] = field(default_factory=list)
    lam_fitted: bool = True
    spare_centre: bool = False

    def record(self) -> dict[str, Any]:
        """The choice as plain numbers, for ``recon.h5``'s configuration."""
        out: dict[str, Any] = {
            "lam": self.lam,
            "rule": self.rule,
            "score": self.score,
            "lams": list(self.lams),
            "scores": list(self.scores),
            "seconds": self.seconds,
            "solves": self.solves,
            "holdout": self.holdout,
        }
        if self.holdout_unit:
            out["holdout_unit"] = self.holdout_unit
        if math.isfinite(self.target):
            out["target"] = self.target
        if not self.lam_fitted:
            out["lam_fitted"] = False
        if self.spare_centre:
            out["spare_centre"] = True
        if self.iters is not None:
            out["iters"] = self.iters
            out["iter_counts"] = list(self.iter_counts)
            out["iter_scores"] = [list(row) for row in self.iter_scores]
        return out


def _search_min(
    f: Callable[[float], float],
    start: float,
    factor: float,
    max_evals: int,
    fit_vertex: bool = True,
) -> tuple[dict[float, float], float]:
    """Minimise ``f`` over ``lam > 0`` on a log scale with at most ``max_evals`` evaluations.

    Three points a factor apart bracket the start; while the best lies on an edge the grid is
    extended beyond it; once it is inside, the vertex of the parabola through the best point
    and its neighbours in ``log lam`` (clamped to half a step either side) is the estimate.
    With ``fit_vertex`` the vertex is evaluated too (when the budget allows) and the best
    point evaluated wins; without, the vertex is returned unevaluated, which saves a fit.

    Returns
    -------
    seen, lam
        Every point evaluated and its value; the estimate of the minimiser (the best point
        evaluated when it stays on an edge of the grid).
    """
    seen: dict[float, float] = {}

    def ev(v: float) -> None:
        if v not in seen and len(seen) < max_evals:
            seen[v] = f(v)

    def best_of() -> float:
        return min(seen, key=seen.__getitem__)

    for v in (start, start / factor, start * factor):
        ev(v)
    while len(seen) < max_evals:
        xs, best = sorted(seen), best_of()
        if best == xs[0]:
            ev(best / factor)
        elif best == xs[-1]:
            ev(best * factor)
        else:
            break
    xs, best = sorted(seen), best_of()
    if best in (xs[0], xs[-1]):
        return seen, best
    i = xs.index(best)
    a, b, c = (math.log(x) for x in xs[i - 1 : i + 2])
    fa, fb, fc = seen[xs[i - 1]], seen[best], seen[xs[i + 1]]
    den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
    step = 0.0
    if den != 0:
        step = -0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
    half = 0.5 * min(b - a, c - b)
    step = max(-half, min(half, step))
    if abs(step) < 1e-3:
        return seen, best
    if not fit_vertex:
        return seen, math.exp(b + step)
    ev(math.exp(b + step))
    return seen, best_of()


def _quadratic_at(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """The parabola through three points ``(xs, ys)`` (Lagrange form) at ``x``."""
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    return (
        y0 * (x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2))
        + y1 * (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2))
        + y2 * (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1))
    )


#: Methods whose ``cv`` rule spares the Cartesian lines every frame measures (a
#: variable-density pattern's centre) from the hold-out (:func:`mridip.sampling.holdout_weights`'
#: ``spare_centre``). ``lps``'s temporal model is judged on them out of all proportion: on
#: PINCAT at R = 8 (seed 2) one frame lost its three centre lines to the split and the choice
#: fell to λ 0.064 (22.78 dB); spared, 6.4 (26.46, the truth-swept best). ``tv`` and
#: ``wavelet`` were mixed (−1.49 to +1.22 dB) and keep every line (docs/baselines.md).
SPARE_CENTRE = ("lps",)

#: Fraction the ``cv`` rule holds out by default, per unit (:func:`choose_lam`).
HOLDOUT_FRACTION = {"sample": 0.1, "readout": 0.2}


#: Methods that hold out whole readouts of non-Cartesian data (spokes, interleaves) in the
#: ``cv`` rule (:func:`default_holdout_unit`); the others hold out single samples there.
READOUT_HOLDOUT = ("lps", "wavelet")


def default_holdout_unit(kspace: DynamicKSpace, method: str) -> str:
    """What the ``cv`` rule holds out when the caller does not say: whole lines of Cartesian
    data; whole spokes or interleaves of non-Cartesian data for the methods of
    :data:`READOUT_HOLDOUT` (when the readout length is known,
    :func:`mridip.sampling.readouts_divisible`); single samples otherwise.

    A lone held-out sample is predicted by the fitted samples beside it on its own readout
    (through the coils on a Cartesian line, the GRAPPA relation; by the 2× oversampling along
    a spoke), whatever the image does between the readouts, which is what the weight decides:
    its residual rewards fitting the data and the rule picks too small a weight. On PINCAT at
    Cartesian R = 8 (48²) ``lps`` at 0.03 (20.6 dB) where the truth's best is 1 (25.7); 20% of
    the lines chose 0.4 (25.6). Radially (13 spokes) whole spokes lifted ``wavelet`` on PINCAT
    at 48² from 27.71 to 29.78 dB and on the rat at full size (192²) from 35.24 to 36.76, and
    ``lps`` on PINCAT from 28.99 to 30.14. ``tv`` keeps single samples of radial data: whole
    spokes pushed its weight 2–4× above the truth's best and cost it 0.2–0.5 dB on the rat and
    the phantoms, 2.7 dB on the demo's textured cine (PINCAT gained 0.1–0.6). Measured in
    docs/baselines.md."""
    if kspace.is_cartesian:
        return "readout"
    if method in READOUT_HOLDOUT and readouts_divisible(kspace):
        return "readout"
    return "sample"


def choose_lam(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    method: str,
    rule: str = DEFAULT_RULE,
    *,
    start: float | None = None,
    holdout: float | None = None,
    holdout_unit: str | None = None,
    factor: float = 4.0,
    max_solves: int | None = None,
    noise_var: float | None = None,
    tau: float = 1.0,
    seed: int = 0,
    choose_iters: bool | None = None,
    iter_every: int = ITER_EVERY,
    fit_vertex: bool | None = None,
    spare_centre: bool | None = None,
    **options: Any,
) -> LamChoice:
    """Choose a method's relative weight ``lam`` from the data alone.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)`` on the device to compute on.
    method
        One of :data:`SWEEPABLE`. ``bart`` is chosen with the ``tv`` solver: BART solves the
        same problem with the same relative weight (docs/baselines.md), and mridip's own
        solver can leave samples out.
    rule
        ``"cv"`` (k-space cross-validation) or ``"discrepancy"`` (χ² per sample at most
        ``tau``).
    start
        First weight tried (the method's former default when None).
    holdout
        ``cv``: expected fraction of measured samples held out, in ``(0, 0.5)``. None: 0.2 of
        the readouts (a few lines a frame: 10% of them left the choice to one or two lines of
        the whole series on a 32² scan, docs/baselines.md), 0.1 of single samples.
    holdout_unit
        ``cv``: hold out single samples (``"sample"``) or whole readouts (``"readout"``,
        :func:`mridip.sampling.holdout_weights`). None: :func:`default_holdout_unit`.
    factor
        Ratio between neighbouring weights of the coarse grid.
    max_solves
        Solves the choice may run (its cost in units of one solve, less for ``cv``, whose
        fits share one operator). None: 5, or :data:`ITER_SOLVES` where the iteration count is
        chosen too.
    noise_var
        ``discrepancy``: noise variance per complex sample. None: 1 for data prewhitened
        with noise scans (``kspace.meta["prewhitened"]``, as :func:`mridip.load` leaves
        them), otherwise a :class:`ConfigError`.
    tau
        ``discrepancy``: the largest ``chi2`` allowed.
    seed
        Seed of the hold-out split (and of the method's own random choices).
    choose_iters
        ``cv``: choose the iteration count with ``lam`` (each fit runs to ``options["iters"]``
        or :data:`ITER_CAP`, the held-out residual is checked every ``iter_every``
        iterations and at the last, and the pair with the lowest wins). None: for the
        methods of :data:`ITER_CAP` when ``options`` gives no ``iters``.
    iter_every
        Iterations between two checks of the held-out residual.
    fit_vertex
        ``cv``: fit the weight at the vertex of the parabola through the best weight and its
        neighbours before choosing (one fit more), rather than choosing the vertex unfitted.
        None: fit it unless the iteration count is chosen too; then the vertex's iteration
        count is the one with the lowest held-out residual interpolated (the same parabola in
        ``log lam``, per count) from its neighbours' curves.
    spare_centre
        ``cv``, Cartesian data: never hold out the lines every frame measures
        (:func:`mridip.sampling.holdout_weights`). None: for the methods of
        :data:`SPARE_CENTRE`.
    **options
        The method's own options (``iters``, ``lam_spatial`` …).

    Returns
    -------
    LamChoice

    Raises
    ------
    ConfigError
        Unknown method or rule, a hold-out fraction outside ``(0, 0.5)``, ``max_solves`` < 3,
        a discrepancy rule without a known noise level, ``choose_iters`` for a method not in
        :data:`ITER_CAP` or with the discrepancy rule, ``iter_every`` < 1.
    """
    _check_method(method)
    if rule not in RULES:
        raise ConfigError(f"unknown λ rule {rule!r}; available: {', '.join(RULES)}")
    if choose_iters is None:
        choose_iters = rule == "cv" and method in ITER_CAP and options.get("iters") is None
    if fit_vertex is None:
        fit_vertex = not choose_iters
    if max_solves is None:
        max_solves = ITER_SOLVES if choose_iters else 5
    if max_solves < 3:
        raise ConfigError(f"choosing λ needs at least 3 solves, got {max_solves}")
    if not factor > 1:
        raise ConfigError(f"the grid factor must be > 1, got {factor}")
    solver = "tv" if method == "bart" else method
    lam0 = START[method] if start is None else float(start)
    if not (lam0 > 0 and math.isfinite(lam0)):
        raise ConfigError(f"the first λ must be a finite number > 0, got {lam0}")
    if choose_iters and (rule != "cv" or method not in ITER_CAP):
        raise ConfigError(
            f"the iteration count is chosen by the cv rule for {', '.join(ITER_CAP)} only"
        )
    if iter_every < 1:
        raise ConfigError(f"iter_every must be ≥ 1, got {iter_every}")
    options = dict(options, seed=seed)
    t0 = time.perf_counter()
    if rule == "cv":
        unit = default_holdout_unit(kspace, solver) if holdout_unit is None else holdout_unit
        if holdout is None:
            holdout = HOLDOUT_FRACTION.get(unit, 0.1)
        if not 0 < holdout < 0.5:
            raise ConfigError(f"holdout must be in (0, 0.5), got {holdout}")
        if spare_centre is None:
            spare_centre = solver in SPARE_CENTRE
        gen = torch.Generator().manual_seed(seed + 1)
        split = holdout_weights(kspace, holdout, gen, unit=unit, spare_centre=spare_centre)
        assert split is not None
        fit_w, held_w = split
        op_fit = for_kspace(
            kspace,
            maps,
            weights=fit_w,
            density_weighted=bool(options.get("density_weighted", False)),
        )
        held_out = _HeldOut(kspace, maps, held_w)
        cap = int(options.get("iters") or ITER_CAP.get(method, 0))
        curves: dict[float, dict[int, float]] = {}

        def cv_score(lam: float) -> float:
            if not choose_iters:
                out = solve(solver, kspace, maps, lam, operator=op_fit, **options)
                return held_out(out.image)
            curve: dict[int, float] = {}

            def check(k: int, image: torch.Tensor) -> None:
                if k % iter_every == 0 or k == cap:
                    curve[k] = held_out(image)

            opts = dict(options, iters=cap, on_iter=check)
            solve(solver, kspace, maps, lam, operator=op_fit, **opts)
            curves[lam] = curve
            return min(curve.values())

        seen, lam = _search_min(cv_score, lam0, factor, max_solves, fit_vertex)
        lams = sorted(seen)
        choice = LamChoice(
            lam=lam,
            rule=rule,
            score="heldout_residual",
            lams=lams,
            scores=[seen[v] for v in lams],
            seconds=time.perf_counter() - t0,
            solves=len(seen),
            holdout=holdout,
            holdout_unit=unit,
            spare_centre=bool(spare_centre and kspace.is_cartesian),
        )
        if choose_iters:
            counts = sorted(curves[lams[0]])
            if lam in curves:
                curve = curves[lam]
            else:  # the unfitted vertex: each count's held-out residual interpolated
                i = lams.index(min(seen, key=seen.__getitem__))  # inside the grid
                near = lams[i - 1 : i + 2]
                logs = [math.log(v) for v in near]
                curve = {
                    k: _quadratic_at(logs, [curves[v][k] for v in near], math.log(lam))
                    for k in counts
                }
                choice.lam_fitted = False
            choice.iters = min(counts, key=curve.__getitem__)  # the first of equals
            choice.iter_counts = counts
            choice.iter_scores = [[curves[v][k] for k in counts] for v in lams]
        return choice
    sigma2 = noise_var
    if sigma2 is None:
        if not kspace.meta.get("prewhitened", False):
            raise ConfigError(
                "the discrepancy rule needs the noise level: these data were not prewhitened "
                "with noise scans (give noise_var, or use the cv rule)"
            )
        sigma2 = 1.0
    if not (sigma2 > 0 and math.isfinite(sigma2)):
        raise ConfigError(f"noise_var must be a finite number > 0, got {sigma2}")
    if not tau > 0:
        raise ConfigError(f"tau must be > 0, got {tau}")
    residual = _Residual(kspace, maps)
    floor = residual.samples() * sigma2
    results: dict[float, Any] = {}

    def chi2(lam: float) -> float:
        out = solve(solver, kspace, maps, lam, **options)
        results[lam] = out
        return residual(out.image) / floor

    seen = _bracket_root(chi2, lam0, tau, factor, max_solves)
    fits = [v for v in seen if seen[v] <= tau]
    lam = max(fits) if fits else min(seen)
    lams = sorted(seen)
    return LamChoice(
        lam=lam,
        rule=rule,
        score="chi2",
        lams=lams,
        scores=[seen[v] for v in lams],
        seconds=time.perf_counter() - t0,
        solves=len(seen),
        target=tau,
        result=results[lam] if method != "bart" else None,
    )


def _bracket_root(
    f: Callable[[float], float], start: float, target: float, factor: float, max_evals: int
) -> dict[float, float]:
    """Evaluate an increasing ``f(lam)`` to find where it crosses ``target`` on a log scale.

    Steps a ``factor`` up (below the target) or down (above it) until the crossing is
    bracketed, then interpolates ``log lam`` linearly in ``f`` (regula falsi) with the
    evaluations left.
    """
    seen = {start: f(start)}
    while len(seen) < max_evals:
        below = [v for v in seen if seen[v] <= target]
        above = [v for v in seen if seen[v] > target]
        if not above:
            v = max(seen) * factor
        elif not below:
            v = min(seen) / factor
        else:
            lo, hi = max(below), min(above)
            if hi / lo < 1.05:
                break
            flo, fhi = seen[lo], seen[hi]
            w = (target - flo) / (fhi - flo) if fhi > flo else 0.5
            w = min(0.9, max(0.1, w))
            v = math.exp(math.log(lo) + w * (math.log(hi) - math.log(lo)))
        seen[v] = f(v)
    return seen


# -- sweeps ---------------------------------------------------------------------------------------
def lam_sweep(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    method: str,
    lams: Sequence[float],
    *,
    noise_var: float = 1.0,
    reference: Any = None,
    keep_images: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Run a regularised method for each relative weight and report its data consistency.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)`` (on the device to compute on).
    method
        One of :data:`SWEEPABLE`.
    lams
        Relative weights to try (the ``--lam`` of the method).
    noise_var
        Noise variance per complex sample (1 after prewhitening), for ``chi2``.
    reference
        Optional true series ``(T, Ny, Nx)``: adds ``psnr`` and ``ssim`` (:func:`mridip.evaluate`).
    keep_images
        Keep each image series (``image``) in its row.
    **options
        Further options of the method (``iters``, ``lam_spatial`` …; None: its default).

    Returns
    -------
    list of dict
        One row per ``lam``, in the order given: ``lam``, ``lam_abs`` (when the method reports
        it), ``relative_residual``, ``chi2``, ``seconds``, and ``psnr``/``ssim``/``image``
        as asked.

    Raises
    ------
    ConfigError
        Unknown method, no weights, a negative weight.
    """
    from mridip.metrics import evaluate

    _check_method(method)
    if not lams:
        raise ConfigError("a λ sweep needs at least one value")
    if any(not (float(v) >= 0 and math.isfinite(float(v))) for v in lams):
        raise ConfigError(f"λ values must be finite and ≥ 0, got {list(lams)}")
    rows: list[dict[str, Any]] = []
    for lam in lams:
        if kspace.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = solve(method, kspace, maps, float(lam), **options)
        if kspace.device.type == "cuda":
            torch.cuda.synchronize()
        row: dict[str, Any] = {"lam": float(lam), "seconds": time.perf_counter() - t0}
        info = getattr(out, "info", {})
        if "lam_abs" in info:
            row["lam_abs"] = float(info["lam_abs"])
        row.update(data_consistency(kspace, maps, out.image, noise_var))
        if reference is not None:
            q = evaluate(out.image, reference)
            row["psnr"], row["ssim"] = q["psnr"], q["ssim"]
        if keep_images:
            row["image"] = out.image
        rows.append(row)
    return rows


def discrepancy_choice(
    rows: Sequence[dict[str, Any]], tau: float = 1.1, noise_floor: float | None = None
) -> int:
    """Index of the row a discrepancy principle picks: the largest λ with ``chi2 ≤ tau · floor``.

    Morozov's principle regularises as much as the data allow: the residual may be as large
    as the noise, no larger. With ``noise_floor`` given (1 for prewhitened data and an exact
    model) that is the classic rule. Real and simulated data also carry model error (coil
    maps, the continuous object, off-grid physics), so by default the floor is measured: the
    smallest ``chi2`` of the sweep, i.e. the residual of its least regularised fit, and
    ``tau`` allows 10% more. Include a small λ in the sweep so that the floor is meaningful.

    Parameters
    ----------
    rows
        From :func:`lam_sweep`.
    tau
        Allowed residual relative to the floor.
    noise_floor
        ``chi2`` of the noise alone, when known.

    Raises
    ------
    ConfigError
        When ``rows`` is empty or ``tau`` < 1.
    """
    if not rows:
        raise ConfigError("no λ sweep results to choose from")
    if not tau >= 1:
        raise ConfigError(f"tau must be ≥ 1, got {tau}")
    floor = min(r["chi2"] for r in rows) if noise_floor is None else noise_floor
    fits = [i for i, r in enumerate(rows) if r["chi2"] <= tau * floor]
    if fits:
        return max(fits, key=lambda i: rows[i]["lam"])
    return min(range(len(rows)), key=lambda i: rows[i]["chi2"])
