"""Classical reconstructions on the same data and operators as the DIP methods.

Every function takes a :class:`~mridip.kspace.DynamicKSpace` and coil maps ``(C, Ny, Nx)``
and returns a :class:`~mridip.output.MethodOutput`: an image series ``(T, Ny, Nx)`` complex64
on the data's device, its history and the settings resolved from the data. Each is a thin
composition of an operator (:mod:`mridip.operators`) and a solver (:mod:`mridip.solvers`).

Beside ``zf`` and CG-SENSE stand the compressed-sensing methods users compare against:
temporal (and spatial) total variation by ADMM (:func:`total_variation`), spatial wavelets of
the temporal Fourier transform by POGM (:func:`wavelet_fourier`, k-t SPARSE) and low rank plus
sparse by POGM (:func:`low_rank_plus_sparse`, Otazo et al. 2015; Lin & Fessler 2019).

Their regularisation weights are *relative*: ``λ_abs = lam · s`` with ``s`` computed from the
data and the operator (:func:`~mridip.solvers.regularization_scale`), so one default works
whatever the data's scale (prewhitened scanner data, simulated files of any noise level), the
coil maps' normalisation and the trajectory. :mod:`mridip.lam` chooses ``lam`` from the data
(``--lam auto``, docs/baselines.md).
Inner iterations use the operator's ``normal`` (the Toeplitz embedding for non-Cartesian data),
never a NUFFT, and every frame is processed in one tensor.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace
from mridip.operators import DynamicSense, for_kspace
from mridip.output import MethodOutput
from mridip.solvers import (
    L1Term,
    Wavelet2D,
    admm_l1,
    casorati_singular_values,
    conjugate_gradient,
    finite_difference,
    finite_difference_adjoint,
    largest_singular_value,
    operator_gains,
    pogm,
    regularization_scale,
    singular_value_threshold,
    soft_threshold,
    temporal_fft,
    temporal_ifft,
    wavelet_soft_threshold,
)

#: The result type of every baseline (one type for every method: :class:`MethodOutput`).
BaselineResult = MethodOutput


def _coil_energy(maps: torch.Tensor) -> torch.Tensor:
    e = (maps.abs() ** 2).sum(0)
    return torch.where(e > 1e-6 * e.max(), e, torch.ones_like(e))


def zero_filled(kspace: DynamicKSpace, maps: torch.Tensor) -> MethodOutput:
    """Density-compensated adjoint, combined with the coil maps: ``Σ_c S_c* (Aᴴ_c D y_c) / Σ|S|²``.

    Cartesian data are zero-filled (no compensation); non-Cartesian data use ``kspace.dcf``.
    """
    op = for_kspace(kspace, maps, toeplitz=False)
    y = kspace.data if kspace.dcf is None else kspace.data * kspace.dcf
    x = op.adjoint(y) / _coil_energy(op.maps)
    return MethodOutput(x.to(torch.complex64))


def cg_sense(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    iters: int = 10,
    lam: float = 0.0,
    density_weighted: bool = True,
    operator: DynamicSense | None = None,
) -> MethodOutput:
    """CG-SENSE: conjugate gradients on ``(Aᴴ W A + λ I) x = Aᴴ W y``, every frame at once.

    Parameters
    ----------
    kspace, maps
        Data and coil sensitivities ``(C, Ny, Nx)``.
    iters
        CG iterations; with few samples per frame the iteration count regularises (early
        stopping), so keep it moderate.
    lam
        Tikhonov weight relative to the mean eigenvalue of ``AᴴWA`` (estimated once), so that
        it means the same whatever the scale of the maps (prewhitened maps are far from unit
        norm) and of the density compensation.
    density_weighted
        Non-Cartesian only: ``W`` = density compensation (faster, well-conditioned) or ones
        (the plain least-squares problem).
    operator
        A prebuilt operator for ``kspace`` (its weights are used as they are).
    """
    if iters < 1:
        raise ConfigError(f"CG-SENSE needs at least one iteration, got {iters}")
    if lam < 0:
        raise ConfigError(f"lam must be ≥ 0, got {lam}")
    op = operator or for_kspace(kspace, maps, density_weighted=density_weighted)
    rhs = op.weighted_adjoint(kspace.data)
    lam_abs = lam * operator_gains(op.normal, rhs, iters=1)[0] if lam > 0 else 0.0

    def normal(x: torch.Tensor) -> torch.Tensor:
        out = op.normal(x)
        return out + lam_abs * x if lam_abs > 0 else out

    x, res = conjugate_gradient(normal, rhs, iters=iters)
    return MethodOutput(x.to(torch.complex64), {"relative_residual": res})


# -- compressed sensing: shared pieces ----------------------------------------------------------
@dataclass(frozen=True)
class _Problem:
    """What every regularised method derives from the data before it iterates."""

    op: DynamicSense
    rhs: torch.Tensor  # AᴴWy
    scale: float  # s: the unit of relative weights
    gain: float  # tr(AᴴWA)/n over ‖AᴴWA‖
    lipschitz: float  # ‖AᴴWA‖ with a 2% margin


#: ``operator_gains`` of prebuilt operators, by seed: a caller that solves many times with one
#: operator (:mod:`mridip.lam`'s cross-validation fits) runs the 15 power iterations (15
#: ``normal``\ s; L+S runs 50 in a solve) once, not once per solve.
_GAINS: weakref.WeakKeyDictionary[DynamicSense, dict[tuple[int, tuple[int, ...]], Any]] = (
    weakref.WeakKeyDictionary()
)


def _setup(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    operator: DynamicSense | None,
    density_weighted: bool,
    seed: int,
) -> _Problem:
    op = operator or for_kspace(kspace, maps, density_weighted=density_weighted)
    rhs = op.weighted_adjoint(kspace.data)
    if operator is None:
        mean_gain, max_gain = operator_gains(op.normal, rhs, seed=seed)
    else:  # the gains depend on the operator, the seed and the unknown's shape only
        known = _GAINS.setdefault(operator, {})
        key = (seed, tuple(rhs.shape))
        if key not in known:
            known[key] = operator_gains(op.normal, rhs, seed=seed)
        mean_gain, max_gain = known[key]
    s = regularization_scale(rhs, mean_gain, max_gain)
    return _Problem(op, rhs, s, mean_gain / max_gain, 1.02 * max_gain)


def _check_common(lam: float, iters: int, name: str) -> None:
    if iters < 1:
        raise ConfigError(f"{name} needs at least one iteration, got {iters}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ConfigError(f"lam must be a finite number ≥ 0, got {lam}")


#: Extra margin on the power iteration's ``‖AᴴWA‖`` for POGM's step (whose iterates diverge
#: once the step exceeds ``1/L``). Fifteen power iterations from a random start reached only
#: 0.943 of the norm (400 iterations) on a 32² radial cine with 10% of its samples held out,
#: below the 2% margin of :class:`_Problem`, and L+S diverged there (mridip.lam's
#: cross-validation); 1.08 on top covers it at the price of a slightly shorter step.
POGM_MARGIN = 1.08


# -- total variation -----------------------------------------------------------------------------
#: Default relative weight of temporal TV (see docs/baselines.md for how it was chosen).
TV_LAM = 0.1


def total_variation(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float = TV_LAM,
    lam_spatial: float = 0.0,
    iters: int = 30,
    cg_iters: int = 4,
    rho: float = 0.1,
    circular: bool = False,
    relaxation: float = 1.0,
    density_weighted: bool = False,
    operator: DynamicSense | None = None,
    seed: int = 0,
    on_iter: Callable[[int, torch.Tensor], None] | None = None,
) -> MethodOutput:
    """Temporal (optionally plus spatial) total variation by ADMM.

    Solves ``min_x ½‖Ax − y‖²_W + λ_t ‖D_t x‖₁ + λ_s (‖D_y x‖₁ + ‖D_x x‖₁)`` for the whole
    series ``x`` ``(T, Ny, Nx)``, with finite differences ``D`` and complex magnitudes inside
    the ℓ1 norms (anisotropic in space, as BART's ``-R T:3:0:λ``).

    ADMM with the splitting ``z = Dx``: the ``x``-step solves
    ``(AᴴWA + ρDᴴD) x = AᴴWy + ρDᴴ(z − u)`` by ``cg_iters`` warm-started conjugate-gradient
    steps (each one ``normal`` of all frames), the ``z``-step soft-thresholds.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam
        Temporal weight, relative: ``λ_t = lam · s`` with ``s`` from
        :func:`~mridip.solvers.regularization_scale`.
    lam_spatial
        Spatial weight, relative in the same way (0: temporal TV only).
    iters
        ADMM iterations.
    cg_iters
        Conjugate-gradient steps per ADMM iteration.
    rho
        ADMM penalty, relative to the largest eigenvalue ``L`` of ``AᴴWA`` (``ρ = rho · L``);
        it changes the speed of convergence, not the solution.
    circular
        Periodic differences (a cine over one cardiac cycle; BART's convention).
    relaxation
        ADMM over-relaxation ``α`` in ``[1, 2)`` (Boyd et al. 2011, §3.4.3); BART's ADMM uses
        1.6.
    density_weighted
        Non-Cartesian: weight the data term with the density compensation.
    operator
        A prebuilt operator for ``kspace``.
    seed
        Seed of the power iteration.
    on_iter
        Called after each ADMM iteration ``k`` (1-based) with ``k`` and the image series
        ``(T, Ny, Nx)`` a run of ``k`` iterations returns (:mod:`mridip.lam` scores it).

    Returns
    -------
    MethodOutput
        History ``primal_residual`` (``‖Dx − z‖ / ‖Dx‖``) and ``relative_change`` per
        iteration; ``info`` with ``lam``, ``lam_spatial``, ``lam_abs``, ``lam_spatial_abs``,
        ``scale``, ``lipschitz``, ``rho_abs``.

    Raises
    ------
    ConfigError
        On negative weights, fewer than one iteration, all-zero data.
    """
    _check_common(lam, iters, "TV")
    if not (lam_spatial >= 0 and math.isfinite(lam_spatial)):
        raise ConfigError(f"lam_spatial must be a finite number ≥ 0, got {lam_spatial}")
    if cg_iters < 1 or not rho > 0:
        raise ConfigError(f"cg_iters must be ≥ 1 and rho > 0, got {cg_iters} and {rho}")
    if not 0 < relaxation < 2:
        raise ConfigError(f"relaxation must be in (0, 2), got {relaxation}")
    pb = _setup(kspace, maps, operator, density_weighted, seed)
    op, rhs, s, lip = pb.op, pb.rhs, pb.scale, pb.lipschitz
    lam_t, lam_s = lam * s, lam_spatial * s
    rho_abs = rho * lip
    dims = [0] + ([1, 2] if lam_s > 0 else [])
    terms = [_difference_term(d, circular, lam_t if d == 0 else lam_s) for d in dims]
    x, hist = admm_l1(op.normal, rhs, terms, rho_abs, iters, cg_iters, relaxation, on_iter=on_iter)
    info = {
        "lam": lam,
        "lam_spatial": lam_spatial,
        "lam_abs": lam_t,
        "lam_spatial_abs": lam_s,
        "scale": s,
        "lipschitz": lip,
        "rho_abs": rho_abs,
        "circular": circular,
        "relaxation": relaxation,
    }
    return MethodOutput(x.to(torch.complex64), hist, info)


def _difference_term(dim: int, circular: bool, weight: float) -> L1Term:
    return L1Term(
        lambda x: finite_difference(x, dim, circular),
        lambda z: finite_difference_adjoint(z, dim, circular),
        weight,
    )


# -- spatial wavelets of the temporal Fourier transform (k-t SPARSE) -----------------------------
WAVELET_LAM = 0.05


def wavelet_fourier(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float = WAVELET_LAM,
    iters: int = 60,
    levels: int = 3,
    wavelet: str = "db2",
    temporal_fourier: bool = True,
    cycle_spinning: bool = True,
    density_weighted: bool = False,
    operator: DynamicSense | None = None,
    seed: int = 0,
    on_iter: Callable[[int, torch.Tensor], None] | None = None,
) -> MethodOutput:
    """ℓ1 of spatial wavelet coefficients of the temporal Fourier transform, by POGM.

    Solves ``min_x ½‖Ax − y‖²_W + λ ‖Ψ F_t x‖₁`` (Lustig et al.'s k-t SPARSE transform):
    ``F_t`` is the unitary FFT along time, so a static background lands in one temporal
    frequency and a beating heart in a few; ``Ψ`` an orthonormal 2-D wavelet transform of each
    temporal frequency. The transform is orthonormal, so its prox is exact soft thresholding.
    With ``cycle_spinning`` the wavelet grid is shifted by a random offset each iteration (as
    BART does), which removes the blocky artefacts of a fixed grid. Images whose size is not a
    multiple of ``2**levels`` are solved on a zero-padded grid and cropped.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam
        Relative weight: ``λ = lam · s`` (:func:`~mridip.solvers.regularization_scale`).
    iters
        POGM iterations (one ``normal`` each).
    levels, wavelet
        Decomposition levels and ``"db2"`` or ``"haar"``.
    temporal_fourier
        False: spatial wavelets of each frame only.
    cycle_spinning
        Random shifts of the wavelet grid (seeded).
    density_weighted, operator, seed
        As for :func:`total_variation`.
    on_iter
        Called after each iteration ``k`` (1-based) with ``k`` and the image series
        ``(T, Ny, Nx)`` of that iterate (POGM's last step differs from the others, so a run
        of ``k`` iterations returns a slightly different image).

    Returns
    -------
    MethodOutput
        History ``relative_change``; ``info`` with ``lam``, ``lam_abs``, ``scale``, ``lipschitz``.
    """
    _check_common(lam, iters, "wavelet")
    pb = _setup(kspace, maps, operator, density_weighted, seed)
    op, rhs, s, lip = pb.op, pb.rhs, pb.scale, pb.lipschitz
    lam_abs = lam * s
    psi = Wavelet2D(levels, wavelet)
    ny, nx = op.matrix
    m = 2**levels
    py, px = (-ny) % m, (-nx) % m

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, px, 0, py)) if (py or px) else x

    def crop(x: torch.Tensor) -> torch.Tensor:
        return x[..., :ny, :nx]

    rhs_p = pad(rhs)
    gen = torch.Generator().manual_seed(seed)

    def grad(x: torch.Tensor) -> torch.Tensor:
        return pad(op.normal(crop(x))) - rhs_p

    def prox(v: torch.Tensor, gamma: float) -> torch.Tensor:
        sy, sx = 0, 0
        if cycle_spinning:
            sy, sx = (int(i) for i in torch.randint(0, m, (2,), generator=gen))
        v = torch.roll(v, (sy, sx), dims=(-2, -1))
        out = wavelet_soft_threshold(
            temporal_fft(v) if temporal_fourier else v, gamma * lam_abs, psi
        )
        out = temporal_ifft(out) if temporal_fourier else out
        return torch.roll(out, (-sy, -sx), dims=(-2, -1))

    hist: dict[str, list[float]] = {"relative_change": []}
    last = [torch.zeros_like(rhs_p)]

    def record(x: torch.Tensor) -> None:
        hist["relative_change"].append(float((x - last[0]).norm() / x.norm().clamp(min=1e-30)))
        last[0] = x
        if on_iter is not None:
            on_iter(len(hist["relative_change"]), crop(x))

    x = pogm(grad, prox, torch.zeros_like(rhs_p), POGM_MARGIN * lip, iters, record)
    info = {"lam": lam, "lam_abs": lam_abs, "scale": s, "lipschitz": lip, "levels": levels}
    return MethodOutput(crop(x).to(torch.complex64), hist, info)


# -- low rank plus sparse ------------------------------------------------------------------------
LPS_LAM = 0.1
LPS_LAM_LOWRANK = 0.1


def low_rank_plus_sparse(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float = LPS_LAM,
    lam_lowrank: float = LPS_LAM_LOWRANK,
    iters: int = 50,
    density_weighted: bool = False,
    operator: DynamicSense | None = None,
    seed: int = 0,
    on_iter: Callable[[int, torch.Tensor], None] | None = None,
) -> MethodOutput:
    """Low rank plus sparse (L+S, Otazo et al. 2015) by POGM (Lin & Fessler 2019).

    Solves ``min_{L,S} ½‖A(L + S) − y‖²_W + λ_L ‖L‖_* + λ_S ‖F_t S‖₁``: ``L`` a low-rank
    background (nuclear norm of the Casorati matrix ``(Ny·Nx, T)``, prox = singular-value
    thresholding), ``S`` the sparse dynamics in the temporal Fourier domain (prox = soft
    thresholding). The image is ``L + S``. Both blocks share the gradient ``AᴴW(A(L+S) − y)``,
    so one ``normal`` per iteration serves both; the Lipschitz constant is ``2L``.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam
        Sparse weight, relative: ``λ_S = lam · s`` (:func:`~mridip.solvers.regularization_scale`).
    lam_lowrank
        Low-rank weight, relative to the largest singular value of ``AᴴWy``'s Casorati
        matrix: ``λ_L = lam_lowrank · σ₁``.
    iters
        POGM iterations.
    density_weighted, operator, seed
        As for :func:`total_variation`.
    on_iter
        As for :func:`wavelet_fourier`, with the image ``L + S``.

    Returns
    -------
    MethodOutput
        History ``relative_change`` and ``rank`` (of ``L``); ``info`` with ``lam``,
        ``lam_lowrank``, ``lam_abs``, ``lam_lowrank_abs``, ``scale``, ``sigma1``, ``lipschitz``;
        ``info["lowrank"]`` and ``info["sparse"]`` are the two components.
    """
    _check_common(lam, iters, "L+S")
    if not (lam_lowrank >= 0 and math.isfinite(lam_lowrank)):
        raise ConfigError(f"lam_lowrank must be a finite number ≥ 0, got {lam_lowrank}")
    pb = _setup(kspace, maps, operator, density_weighted, seed)
    op, rhs, s, lip = pb.op, pb.rhs, pb.scale, pb.lipschitz
    sigma1 = largest_singular_value(rhs) * pb.gain
    lam_s, lam_l = lam * s, lam_lowrank * sigma1

    def grad(ls: torch.Tensor) -> torch.Tensor:
        g = op.normal(ls[0] + ls[1]) - rhs
        return torch.stack([g, g])

    def prox(v: torch.Tensor, gamma: float) -> torch.Tensor:
        low = singular_value_threshold(v[0], gamma * lam_l)
        sparse = temporal_ifft(soft_threshold(temporal_fft(v[1]), gamma * lam_s))
        return torch.stack([low, sparse])

    hist: dict[str, list[float]] = {"relative_change": [], "rank": []}
    last = [torch.zeros_like(rhs)]

    def record(ls: torch.Tensor) -> None:
        img = ls[0] + ls[1]
        hist["relative_change"].append(float((img - last[0]).norm() / img.norm().clamp(min=1e-30)))
        last[0] = img
        sv = casorati_singular_values(ls[0])
        hist["rank"].append(float((sv > 1e-5 * sv.max().clamp(min=1e-150)).sum()))
        if on_iter is not None:
            on_iter(len(hist["rank"]), img)

    x0 = torch.zeros(2, *rhs.shape, dtype=rhs.dtype, device=rhs.device)
    ls = pogm(grad, prox, x0, 2 * POGM_MARGIN * lip, iters, record)
    info = {
        "lam": lam,
        "lam_lowrank": lam_lowrank,
        "lam_abs": lam_s,
        "lam_lowrank_abs": lam_l,
        "scale": s,
        "sigma1": sigma1,
        "lipschitz": lip,
        "lowrank": ls[0].to(torch.complex64),
        "sparse": ls[1].to(torch.complex64),
    }
    return MethodOutput((ls[0] + ls[1]).to(torch.complex64), hist, info)


# -- data consistency (mridip.lam chooses λ with it) -------------------------------------------
def data_consistency(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    image: torch.Tensor,
    noise_var: float = 1.0,
) -> dict[str, float]:
    """How well an image series explains the measured data.

    One forward transform (a NUFFT for non-Cartesian data) of ``image``; the residual is
    unweighted, since prewhitened noise is white.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    image
        ``(T, Ny, Nx)`` in the data's units (the unscaled output of a method).
    noise_var
        Variance of the complex noise per sample: 1 for data prewhitened by :func:`mridip.load`.

    Returns
    -------
    dict
        ``relative_residual`` ``‖Ax − y‖ / ‖y‖``, ``chi2`` ``‖Ax − y‖² / (M σ²)`` over the ``M``
        measured complex samples (about 1 when the residual is the noise alone), ``samples`` M.
    """
    op = for_kspace(kspace, maps.to(kspace.device), toeplitz=False)
    pred = op.forward(image.to(kspace.device, op.dtype))
    if kspace.mask is not None:
        m = kspace.mask[:, None].expand_as(pred)
        resid = (pred - kspace.data)[m]
        y = kspace.data[m]
    else:
        resid = (pred - kspace.data).flatten()
        y = kspace.data.flatten()
    samples = int(resid.numel())
    r2 = float(resid.abs().pow(2).sum())
    return {
        "relative_residual": math.sqrt(r2) / max(float(y.norm()), 1e-30),
        "chi2": r2 / (samples * noise_var),
        "samples": float(samples),
    }
