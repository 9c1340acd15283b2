"""The Reconstructor: fit a generator to one scan's k-space, all frames jointly.

The data term goes through the normal operator (DESIGN §5): with ``T = AᴴWA`` (Toeplitz for
non-Cartesian data) and ``b = AᴴWy`` computed once, ``‖Ax − y‖²_W = Re⟨x, Tx⟩ − 2Re⟨x, b⟩ + c``,
so a step costs one generator pass and one ``normal``, with no NUFFT.

Stopping needs no reference: a small random part of the measured samples (``holdout``) is
left out of the fit; their residual is tracked every ``eval_every`` steps, the weights with the
lowest held-out residual are kept, and the fit stops ``patience`` steps after the last
improvement. Then the held-out samples rejoin through a final data-consistency step, kept only
when the held-out samples say that it helps (see :class:`FitConfig`, ``final``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mridip._allocator import keep_freed_memory
from mridip.baselines import cg_sense, low_rank_plus_sparse, total_variation, zero_filled
from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace
from mridip.operators import DynamicSense, for_kspace, normal_loss
from mridip.sampling import HOLDOUT_UNITS, holdout_weights
from mridip.solvers import (
    Wavelet2D,
    conjugate_gradient,
    data_scale,
    finite_difference,
    largest_singular_value,
    mean_eigenvalue,
    operator_gains,
    regularization_scale,
    temporal_fft,
)

#: Choices of :attr:`FitConfig.final`.
FINAL_STEPS = ("auto", "dc", "refit", "none")
#: Choices of :attr:`FitConfig.lr_schedule`.
LR_SCHEDULES = ("steps", "plateau")
#: Choices of :attr:`FitConfig.warm_start_from`.
WARM_START_TARGETS = ("cgsense", "tv", "lps")


#: Where Linux lists the CPU's instruction-set flags (:func:`cpu_has_bf16`).
CPUINFO = Path("/proc/cpuinfo")
#: x86 flags of native bfloat16 arithmetic: AVX512-BF16 and AMX-BF16.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX, from the ``flags`` of
    ``/proc/cpuinfo``) and PyTorch's oneDNN can use bfloat16, where ``FitConfig.amp_cpu``
    pays. PyTorch's own check (``_is_mkldnn_bf16_supported``) is true on any AVX-512 CPU,
    where oneDNN emulates bfloat16; without the flags (or without ``/proc/cpuinfo``: other
    systems) this says no, and ``--amp-cpu`` turns it on by hand."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        text = CPUINFO.read_text(errors="replace")
    except (AttributeError, RuntimeError, OSError):  # no oneDNN, older PyTorch, no cpuinfo
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split()[2:]}
    return bool(flags & BF16_FLAGS)


@dataclass(frozen=True)
class FitConfig:
    """Settings of a DIP fit; the defaults work on 64²–256² cines on CPU and GPU.

    Attributes
    ----------
    max_steps
        Upper bound of Adam steps (the stopping rule usually ends the fit earlier).
    lr
        Adam learning rate; halved at ``lr_halve_at`` fractions of ``max_steps``
        (``lr_schedule="steps"``) or when the held-out residual stalls (``"plateau"``).
    lr_schedule
        ``"steps"``: halve at fixed fractions of ``max_steps``. ``"plateau"`` (needs a
        hold-out): halve the rate when the held-out residual has not improved (by
        ``stop_margin``) for ``patience`` steps, at most ``plateau_halvings`` times; the next
        stall stops the fit. The fit then ends when it has converged, whatever ``max_steps``.
    plateau_halvings
        Halvings of the ``"plateau"`` schedule before a stall stops the fit.
    frames_per_step
        Fit a random subset of this many frames per step (None: all frames). Subsets are drawn
        without replacement within an epoch, so every frame is visited once per epoch.
    density_weighted
        Weight the data term by the density compensation (non-Cartesian): faster, better
        conditioned fits.
    holdout
        Fraction of each frame's samples held out for the stopping rule (0 disables stopping).
    holdout_unit
        What is held out: single samples (``"sample"``) or whole readouts (``"readout"``:
        radial spokes, Cartesian lines; :func:`mridip.sampling.holdout_weights`).
    holdout_spare_centre
        Cartesian data: never hold out a line that every frame measures (a variable-density
        pattern's centre). The returned image never has to predict those lines, and held out
        they outweigh every other held-out line in the stopping rule and the blend's judge.
    eval_every, patience
        Held-out residual every ``eval_every`` steps; stop ``patience`` steps after the best.
    min_steps
        Never stop before this step.
    final
        ``"auto"`` (default): decide with the hold-out whether the data-consistency step helps.
        The step is first solved on the fitted samples alone; when that image explains the
        held-out samples better than the generator's image ``G`` does, the step is taken on all
        data (``"dc"``), otherwise ``G`` is returned (``"none"``). At low noise the step adds
        detail the generator has not reached; on noisy data it adds noise. Without a hold-out
        ``"auto"`` is ``"dc"``. The choice is ``FitResult.info["final"]``.
        ``"dc"``: a data-consistency step on all data (held-out samples included):
        ``(AᴴWA + μI)x = AᴴWy + μG`` by ``final_iters`` CG iterations from ``G``;
        ``"refit"``: ``refit_steps`` more Adam steps on all data from the best weights;
        ``"none"``: the best generator output as it is.
    final_mu
        ``μ`` of the data-consistency step relative to the mean eigenvalue of ``AᴴWA``.
    warm_start_steps
        Before the fit, pretrain the generator towards the CG-SENSE image (image-domain MSE) for
        this many steps (0: off).
    warm_start_from
        Target of the warm start: ``"cgsense"`` or a CS baseline, ``"tv"`` or ``"lps"``
        (seconds of CPU, several dB above CG-SENSE on undersampled data).
    admm_iters
        Hard data consistency around the network (GIP's refinement) after the fit: at most this
        many outer ADMM iterations for ``min ½‖Ax − y‖²_W`` s.t. ``x = G``, each a CG image update
        on ``(AᴴWA + ρI)x = AᴴWy + ρG − Λ``, ``admm_net_steps`` network steps towards
        ``x + Λ/ρ`` and the multiplier update ``Λ ← Λ + ρ(x − G)`` (0: off). With a hold-out,
        ``x`` is fitted to the fitted samples only, the ``x`` that best predicts the held-out
        samples is kept, and the iterations stop ``admm_patience`` iterations after it; the
        held-out samples then rejoin through ``final``.
    mask_support
        Multiply the generator's output by the support of the coil maps (voxels where
        ``Σ_c |S_c|² > 0``). Outside it no coil sees, the data term cannot constrain the image
        and an unmasked generator is free to paint energy there.
    ema
        Return (and judge with the hold-out) an exponential moving average of the generator's
        output with this decay per step (0: off); the original DIP's smoothing of its iterates.
    code_noise
        Standard deviation of Gaussian noise added to the generator's input codes at every
        step, relative to the codes' own standard deviation (0: off; the original DIP's
        input perturbation).
    tv_weight
        Weight of temporal total variation in the fit's loss (0: off), in the units of the
        ``tv`` baseline's ``lam``: the loss is ``½‖Ax − y‖²_W + λ·s‖D_t x‖₁`` divided by
        ``½‖y‖²_W``, with ``s`` the data's unit of relative weights
        (:func:`mridip.baselines.regularization_scale`).
    tv_spatial_weight
        Weight of spatial total variation in the fit's loss (0: off), in the units of the
        ``tv`` baseline's ``lam_spatial``: ``λ·s(‖D_y x‖₁ + ‖D_x x‖₁)``, beside the temporal
        term (DIP-TV). Frame by frame, so that it works with frame subsets.
    lowrank_weight
        Weight of the nuclear norm of the Casorati matrix ``(T, Ny·Nx)`` in the fit's loss
        (0: off), in the units of the ``lps`` baseline's ``lam_lowrank``: ``λ·σ₁g‖X‖_*``
        (LR-DIP's explicit low-rank prior; needs all frames per step).
    wavelet_weight
        Weight of the ``wavelet`` baseline's prior in the fit's loss (0: off), in that
        baseline's ``lam`` units: ``λ·s‖Ψ F_t x‖₁``, the ℓ1 norm of the db2 wavelet coefficients
        (3 levels) of the temporal Fourier transform (k-t SPARSE), the wavelet grid shifted by a
        seeded random offset every step as the baseline's cycle spinning does; needs all frames
        per step.
    stop_margin
        Relative improvement of the held-out residual that counts for the stopping rule: the
        fit stops ``patience`` steps after the last evaluation that beat the best residual by
        this fraction (0: any improvement counts). The weights kept are still those of the
        lowest residual.
    halving_resets_patience
        ``lr_schedule="steps"``: each scheduled halving of the learning rate restarts the
        patience, so a stall must be seen at the rate in use before the fit stops (what the
        ``"plateau"`` schedule does after its own halvings). A residual that last improved
        before a halving then gets ``patience`` steps at the new rate; fits whose best lies
        after the last halving, or that stop before the first, are unchanged. Off here; the
        ``mridip`` preset turns it on (docs/reconstructor.md).
    ensemble
        Number of independent fits whose images are averaged (1: one fit). Read by the DIP
        methods (:mod:`mridip.methods`), not by one :class:`Reconstructor`: each further fit
        has the same configuration and hold-out and a generator initialised from another seed;
        the images after the final step are averaged, and so are the images fitted without
        the held-out samples that the blend is judged on. Each fit stops by its own rule.
    amp
        bfloat16 autocast of the generator on CUDA (the data term stays in float32).
    amp_cpu
        bfloat16 autocast of the generator on the CPU as well: True, False, or None (the
        default) for on where the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX,
        :func:`cpu_has_bf16`) and off elsewhere, where oneDNN emulates it slowly. Measured on
        such a CPU: the mridip step 1.9× faster on two cores at 96² × 16 frames, the images
        as good (docs/benchmarks.md). The fit records what it used (``amp``).
    channels_last
        Channels-last memory format for the generator's convolutions.
    seed
        Seed of weights, hold-out choice and frame order.
    """

    max_steps: int = 1500
    lr: float = 5e-3
    lr_halve_at: tuple[float, ...] = (0.5, 0.75)
    lr_schedule: str = "steps"
    plateau_halvings: int = 2
    frames_per_step: int | None = None
    density_weighted: bool = True
    holdout: float = 0.05
    holdout_unit: str = "sample"
    holdout_spare_centre: bool = False
    eval_every: int = 20
    patience: int = 300
    min_steps: int = 200
    final: str = "auto"
    final_mu: float = 1.0
    final_iters: int = 5
    refit_steps: int = 50
    warm_start_steps: int = 0
    warm_start_from: str = "cgsense"
    admm_iters: int = 0
    admm_rho: float = 0.5
    admm_net_steps: int = 100
    admm_cg_iters: int = 5
    admm_patience: int = 2
    mask_support: bool = True
    ema: float = 0.0
    code_noise: float = 0.0
    tv_weight: float = 0.0
    tv_spatial_weight: float = 0.0
    lowrank_weight: float = 0.0
    wavelet_weight: float = 0.0
    stop_margin: float = 0.0
    halving_resets_patience: bool = False
    ensemble: int = 1
    amp: bool = True
    amp_cpu: bool | None = None
    channels_last: bool = False
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`ConfigError` on impossible settings."""
        if self.max_steps < 1:
            raise ConfigError(f"max steps must be ≥ 1, got {self.max_steps}")
        if self.amp_cpu not in (None, True, False):
            raise ConfigError(f"amp_cpu must be true, false or unset (auto), got {self.amp_cpu!r}")
        if not 0 <= self.holdout < 0.5:
            raise ConfigError(f"holdout must be in [0, 0.5), got {self.holdout}")
        if self.holdout_unit not in HOLDOUT_UNITS:
            raise ConfigError(
                f"holdout unit must be one of {', '.join(HOLDOUT_UNITS)}, not {self.holdout_unit!r}"
            )
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.final not in FINAL_STEPS:
            raise ConfigError(f"final must be one of {', '.join(FINAL_STEPS)}, not {self.final!r}")
        if self.frames_per_step is not None and self.frames_per_step < 1:
            raise ConfigError(f"frames per step must be ≥ 1, got {self.frames_per_step}")
        if self.eval_every < 1 or self.patience < 1:
            raise ConfigError("eval_every and patience must be ≥ 1")
        if self.warm_start_from not in WARM_START_TARGETS:
            raise ConfigError(
                f"warm start must be from one of {', '.join(WARM_START_TARGETS)}, "
                f"not {self.warm_start_from!r}"
            )
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
        if self.ensemble < 1:
            raise ConfigError(f"ensemble must be ≥ 1 fits, got {self.ensemble}")
        for name in (
            "code_noise",
            "tv_weight",
            "tv_spatial_weight",
            "lowrank_weight",
            "wavelet_weight",
            "stop_margin",
            "admm_rho",
        ):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number ≥ 0, got {value}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}"
            )
        if self.plateau_halvings < 0:
            raise ConfigError(f"plateau_halvings must be ≥ 0, got {self.plateau_halvings}")
        if self.admm_iters < 0 or self.admm_patience < 1:
            raise ConfigError("admm_iters must be ≥ 0 and admm_patience ≥ 1")


@dataclass
class FitResult:
    """Output of :meth:`Reconstructor.fit`.

    Attributes
    ----------
    image
        ``(T, Ny, Nx)`` complex64 on the CPU, in the data's units.
    history
        ``step``, ``loss`` (relative data residual of the fitted samples), ``lr``, and
        ``val_step``/``val_residual`` (relative held-out residual) as lists.
    best_step
        Step whose weights were kept (the last step without a hold-out).
    stopped_early
        True when the stopping rule ended the fit before ``max_steps``.
    seconds
        Wall time of the fit.
    """

    image: torch.Tensor
    history: dict[str, list[float]]
    best_step: int
    stopped_early: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class Reconstructor:
    """Fit a generator to a scan, all frames jointly, on CPU or CUDA.

    Parameters
    ----------
    kspace
        The data (moved to ``device``).
    maps
        Coil maps ``(C, Ny, Nx)``.
    generator
        A :class:`mridip.models.Generator` (``forward(frames)`` → complex ``(B, Ny, Nx)``).
    config
        :class:`FitConfig`.
    device
        ``"cpu"`` or ``"cuda"``.
    checkpoint
        Path of a checkpoint file written every ``checkpoint_every`` steps (atomically), and
        read back by :meth:`fit` when ``resume`` is True.
    checkpoint_every
        Steps between checkpoints (0: none).
    progress
        Show a progress bar (step, loss, held-out residual, steps per second, ETA).
    monitor
        Called as ``monitor(step, image)`` at every hold-out evaluation with the generator's
        current image ``(T, Ny, Nx)`` in the data's units (before the final step); studies
        and benchmarks use it to record the quality along the fit when a truth is known.
    """

    def __init__(
        self,
        kspace: DynamicKSpace,
        maps: torch.Tensor,
        generator: torch.nn.Module,
        config: FitConfig | None = None,
        device: str | torch.device = "cpu",
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 0,
        progress: bool = True,
        monitor: Callable[[int, torch.Tensor], None] | None = None,
    ) -> None:
        self.config = config or FitConfig()
        self.monitor = monitor
        self.config.check()
        self.device = torch.device(device)
        kind, amp_cpu = self.device.type, self.config.amp_cpu
        #: bfloat16 autocast of the generator (FitConfig.amp on CUDA, amp_cpu on the CPU)
        self.use_amp = bool(
            self.config.amp
            if kind == "cuda"
            else kind == "cpu" and (cpu_has_bf16() if amp_cpu is None else amp_cpu)
        )
        self.kspace = kspace.to(self.device)
        self.maps = maps.to(self.device)
        # voxels some coil sees; outside them the data cannot constrain the image
        self.support = (self.maps.abs().pow(2).sum(0) > 0).to(torch.float32)
        self.generator = generator.to(self.device)
        if self.config.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if (self.config.frames_per_step or 1 << 30) < kspace.n_frames:
            for name in ("tv_weight", "lowrank_weight", "wavelet_weight"):
                if getattr(self.config, name) > 0:
                    flag = "--" + name.replace("_", "-")
                    raise ConfigError(
                        f"the {name} term needs all frames per step: set {name} 0 ({flag} 0) "
                        "to fit frame subsets (frames_per_step)"
                    )
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        # the data are divided by the zero-filled image's scale so that images are O(1)
        self.scale = data_scale(zero_filled(self.kspace, self.maps).image)
        self._rng = torch.Generator().manual_seed(self.config.seed + 1)
        self._perm: torch.Tensor | None = None  # frame order of the current epoch
        self._pos = 0
        self._noise_rng = torch.Generator(device=self.device).manual_seed(self.config.seed + 2)
        self._ema: torch.Tensor | None = None
        self._prior_units: tuple[float, float] | None = None
        self._wavelet = Wavelet2D(3, "db2")
        self._shift_rng = torch.Generator().manual_seed(self.config.seed + 3)
        split = holdout_weights(
            self.kspace,
            self.config.holdout,
            self._rng,
            self.config.holdout_unit,
            spare_centre=self.config.holdout_spare_centre,
        )
        y = self.kspace.data / self.scale
        dcf = None
        if not self.kspace.is_cartesian and self.config.density_weighted:
            dcf = self.kspace.dcf
        fit_w = None if split is None else split[0]
        #: ``(fitted, held-out)`` sample weights of the stopping rule (None: nothing held out)
        self.split = split
        #: the returned image's counterpart fitted to the fitted samples only (data units), so
        #: that the held-out samples can still judge it: the generator's image, or the final
        #: data-consistency step solved without the held-out samples (set by :meth:`fit`; None
        #: when nothing is held out or a refit saw them all)
        self.blind_image: torch.Tensor | None = None
        self._blind: torch.Tensor | None = None
        self.op_fit = self._operator(dcf, fit_w)
        self.rhs_fit = self.op_fit.weighted_adjoint(y)
        self.yy_fit = self._weighted_energy(y, dcf, fit_w)
        self.op_val: DynamicSense | None = None
        if split is not None:
            self.op_val = self._operator(dcf, split[1])
            self.rhs_val = self.op_val.weighted_adjoint(y)
            self.yy_val = self._weighted_energy(y, dcf, split[1])
        self.op_all = self._operator(dcf, None) if split is not None else self.op_fit
        self.rhs_all = self.op_all.weighted_adjoint(y)
        self.yy_all = self._weighted_energy(y, dcf, None)

    # -- set-up helpers -------------------------------------------------------------------------
    def _operator(self, dcf: torch.Tensor | None, mask_w: torch.Tensor | None) -> DynamicSense:
        if self.kspace.is_cartesian:
            return for_kspace(self.kspace, self.maps, weights=mask_w)
        w = dcf
        if mask_w is not None:
            w = mask_w if w is None else w * mask_w
        return for_kspace(self.kspace, self.maps, weights=w)

    def _weighted_energy(self, y: torch.Tensor, dcf, mask_w) -> torch.Tensor:
        e = y.abs() ** 2
        if self.kspace.is_cartesian:
            assert self.kspace.mask is not None
            w = self.kspace.mask[:, None].to(e.dtype)
            if mask_w is not None:
                w = w * mask_w[:, None]
        else:
            w = torch.ones_like(e[:, :1])
            if dcf is not None:
                w = w * dcf
            if mask_w is not None:
                w = w * mask_w
        return (e * w).sum(dim=tuple(range(1, e.ndim)))  # per frame

    # -- pieces of the fit ----------------------------------------------------------------------
    def _output(self, frames: torch.Tensor | None) -> torch.Tensor:
        kind = self.device.type
        with torch.autocast(
            "cuda" if kind == "cuda" else "cpu", dtype=torch.bfloat16, enabled=self.use_amp
        ):
            x = self.generator(frames)
        x = x.to(torch.complex64)
        if self.config.mask_support:
            x = x * self.support
        return x

    def _image(self) -> torch.Tensor:
        """The current image series ``(T, Ny, Nx)``: the moving average when ``ema`` is on."""
        if self._ema is not None:
            return self._ema
        return self._output(None)

    @torch.no_grad()
    def _update_ema(self, x: torch.Tensor, frames: torch.Tensor | None) -> None:
        d = self.config.ema
        if d <= 0:
            return
        x = x.detach()
        if self._ema is None:
            self._ema = self._output(None).detach() if frames is not None else x.clone()
        elif frames is None:
            self._ema.mul_(d).add_(x, alpha=1 - d)
        else:
            self._ema[frames] = d * self._ema[frames] + (1 - d) * x

    def _perturb_codes(self) -> torch.utils.hooks.RemovableHandle | None:
        """Gaussian noise on the generator's codes while gradients are on (``code_noise``)."""
        code = getattr(self.generator, "code", None)
        sigma = self.config.code_noise
        if sigma <= 0 or not isinstance(code, torch.nn.Module):
            return None
        rng = self._noise_rng

        def hook(module: torch.nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return out
            noise = torch.randn(out.shape, generator=rng, device=out.device, dtype=out.dtype)
            return out + sigma * out.detach().std() * noise

        return code.register_forward_hook(hook)

    @property
    def _has_prior_term(self) -> bool:
        c = self.config
        weights = (c.tv_weight, c.tv_spatial_weight, c.lowrank_weight, c.wavelet_weight)
        return any(w > 0 for w in weights)

    def _wavelet_l1(self, x: torch.Tensor) -> torch.Tensor:
        """``‖Ψ F_t x‖₁`` on a grid shifted by a seeded random offset (the ``wavelet``
        baseline's prior and cycle spinning); sizes that are not multiples of ``2**levels``
        are zero-padded, as the baseline does."""
        m = 2**self._wavelet.levels
        ny, nx = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, (-nx) % m, 0, (-ny) % m))
        sy, sx = (int(i) for i in torch.randint(0, m, (2,), generator=self._shift_rng))
        x = torch.roll(x, (sy, sx), dims=(-2, -1))
        return self._wavelet.forward(temporal_fft(x)).abs().sum()

    def _prior_term(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """The explicit priors' share of the relative loss over the step's frames:
        ``2(s(λ_t‖D_t x‖₁ + λ_s(‖D_y x‖₁ + ‖D_x x‖₁) + λ_w‖Ψ F_t x‖₁) + λ_L σ₁ g‖X‖_*) / ‖y‖²_W``
        (``tv_weight``, ``tv_spatial_weight``, ``wavelet_weight``, ``lowrank_weight``; the
        temporal, wavelet and low-rank terms only with all frames). ``s`` is the data's unit of
        relative weights and ``σ₁ g`` the `lps` baseline's unit of its low-rank weight (the
        largest singular value of ``AᴴWy``'s Casorati matrix times the operator's
        mean-to-largest gain)."""
        c = self.config
        if self._prior_units is None:
            mean_gain, max_gain = operator_gains(self.op_fit.normal, self.rhs_fit)
            s = regularization_scale(self.rhs_fit, mean_gain, max_gain)
            sigma1 = largest_singular_value(self.rhs_fit) * mean_gain / max_gain
            self._prior_units = (2 * s, 2 * sigma1)
        tv_unit, lowrank_unit = self._prior_units
        total = self.yy_fit.sum() if frames is None else self.yy_fit[frames].sum()
        term = torch.zeros((), device=x.device)
        if c.tv_weight > 0:
            term = term + tv_unit * c.tv_weight * finite_difference(x, dim=0).abs().sum()
        if c.tv_spatial_weight > 0:
            spatial = finite_difference(x, dim=-2).abs().sum()
            spatial = spatial + finite_difference(x, dim=-1).abs().sum()
            term = term + tv_unit * c.tv_spatial_weight * spatial
        if c.wavelet_weight > 0:
            term = term + tv_unit * c.wavelet_weight * self._wavelet_l1(x)
        if c.lowrank_weight > 0:
            nuclear = torch.linalg.svdvals(x.reshape(x.shape[0], -1)).sum()
            term = term + lowrank_unit * c.lowrank_weight * nuclear
        return term / total.clamp_min(1e-30)

    def _residual(self, op, rhs, yy, x, frames=None) -> torch.Tensor:
        """Relative residual ``‖Ax − y‖²_W / ‖y‖²_W`` (differentiable in ``x``)."""
        loss = normal_loss(op, x, rhs if frames is None else rhs[frames], frames)
        total = yy.sum() if frames is None else yy[frames].sum()
        return (loss + total) / total.clamp(min=1e-30)

    def _val_residual(self, x: torch.Tensor) -> float:
        """Relative residual of the held-out samples for the image ``x``."""
        assert self.op_val is not None
        return float(self._residual(self.op_val, self.rhs_val, self.yy_val, x))

    @torch.no_grad()
    def validate(self, step: int | None = None) -> float:
        """Relative residual of the held-out samples for the current weights (NaN without a
        hold-out); passes the image to ``monitor`` when ``step`` is given."""
        x = self._image()
        if self.monitor is not None and step is not None:
            self.monitor(step, x * self.scale)
        if self.op_val is None:
            return float("nan")
        return self._val_residual(x)

    def _next_frames(self) -> torch.Tensor | None:
        """The next frame subset: a permutation per epoch, consumed in chunks (None: all)."""
        t = self.kspace.n_frames
        b = self.config.frames_per_step
        if b is None or b >= t:
            return None
        if self._perm is None or self._pos >= t:
            self._perm = torch.randperm(t, generator=self._rng)
            self._pos = 0
        chunk = self._perm[self._pos : self._pos + b]
        self._pos += b
        return chunk.to(self.device)

    def _warm_start_target(self) -> torch.Tensor:
        """The CS image the warm start pretrains towards, in the fit's units."""
        src = self.config.warm_start_from
        if src == "tv":
            image = total_variation(self.kspace, self.maps).image
        elif src == "lps":
            image = low_rank_plus_sparse(self.kspace, self.maps).image
        else:
            image = cg_sense(self.kspace, self.maps, iters=10, lam=0.01).image
        target = image.to(self.device, torch.complex64) / self.scale
        return target * self.support if self.config.mask_support else target

    def _warm_start(self, opt: torch.optim.Optimizer) -> None:
        target = self._warm_start_target()
        for _ in range(self.config.warm_start_steps):
            opt.zero_grad(set_to_none=True)
            x = self._output(None)
            loss = (x - target).abs().pow(2).mean() / target.abs().pow(2).mean()
            loss.backward()
            opt.step()

    def _cg_image(
        self,
        g: torch.Tensor,
        mu: float,
        extra: torch.Tensor | None,
        iters: int,
        fitted_only: bool = False,
    ) -> torch.Tensor:
        """Solve ``(AᴴWA + μ'I)x = AᴴWy + μ'(g [+ extra])`` from ``g``; μ' relative to ``AᴴWA``
        of all data. ``fitted_only``: ``A``, ``W``, ``y`` of the fitted samples alone."""
        op, rhs = (self.op_fit, self.rhs_fit) if fitted_only else (self.op_all, self.rhs_all)
        mu_abs = mu * self._mean_eigenvalue()
        target = g if extra is None else g + extra
        b = rhs + mu_abs * target

        def normal(v: torch.Tensor) -> torch.Tensor:
            return op.normal(v) + mu_abs * v

        x, _ = conjugate_gradient(normal, b, x0=g, iters=iters)
        return x

    def _final_dc(self, g: torch.Tensor, info: dict[str, Any]) -> torch.Tensor:
        """``final="auto"``: the data-consistency step if the held-out samples favour it."""
        c = self.config
        if self.op_val is None:
            info["final"] = "dc"
            return self._cg_image(g, c.final_mu, None, c.final_iters)
        trial = self._cg_image(g, c.final_mu, None, c.final_iters, fitted_only=True)
        r_g = float(self._residual(self.op_val, self.rhs_val, self.yy_val, g))
        r_dc = float(self._residual(self.op_val, self.rhs_val, self.yy_val, trial))
        info["final_val_residual"] = {"none": r_g, "dc": r_dc}
        if r_dc < r_g:
            info["final"] = "dc"
            self._blind = trial
            return self._cg_image(g, c.final_mu, None, c.final_iters)
        info["final"] = "none"
        return g

    def _mean_eigenvalue(self) -> float:
        if not hasattr(self, "_mean_eig"):
            self._mean_eig = mean_eigenvalue(self.op_all.normal, self.rhs_all, support=self.support)
        return self._mean_eig

    def _admm(self, g: torch.Tensor, hist: dict[str, list[float]], info: dict[str, Any]):
        """Hard data consistency around the network (scaled-form ADMM) from the image ``g``.

        Solves ``min ½‖Ax − y‖²_W`` s.t. ``x = G(θ)`` with the scaled multiplier ``u = Λ/ρ``:
        ``x ← (AᴴWA + ρI)⁻¹(AᴴWy + ρ(G − u))`` (a few CG steps), network steps towards
        ``x + u``, ``u ← u + x − G``. With a hold-out the ``x``-step sees the fitted samples
        only and the ``x`` (or the starting ``g``) that best predicts the held-out samples is
        returned; the loop ends ``admm_patience`` iterations after it.
        """
        c = self.config
        opt = torch.optim.Adam(self.generator.parameters(), lr=c.lr / 4)
        held = self.op_val is not None
        u = torch.zeros_like(g)
        best, best_it = g, 0
        best_val = self._val_residual(g) if held else float("inf")
        hist["admm_residual"], hist["admm_val_residual"] = [], []
        it = 0
        for it in range(1, c.admm_iters + 1):
            with torch.no_grad():
                x = self._cg_image(g, c.admm_rho, -u, c.admm_cg_iters, fitted_only=held)
            target = (x + u).detach()
            for _ in range(c.admm_net_steps):
                opt.zero_grad(set_to_none=True)
                loss = (self._output(None) - target).abs().pow(2).mean()
                loss.backward()
                opt.step()
            with torch.no_grad():
                g = self._output(None)
                u = u + x - g
                hist["admm_residual"].append(float((g - x).norm() / x.norm().clamp(min=1e-30)))
                if not held:
                    best, best_it = x, it
                    continue
                val = self._val_residual(x)
                hist["admm_val_residual"].append(val)
                if val < best_val:
                    best, best_it, best_val = x, it, val
                elif it - best_it >= c.admm_patience:
                    break
        info.update(admm_iters_run=it, admm_best_iter=best_it)
        return best

    # -- checkpoints ----------------------------------------------------------------------------
    def _save(self, state: dict[str, Any]) -> None:
        from mridip.io.atomic import atomic_path

        assert self.checkpoint is not None
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def _load(self) -> dict[str, Any] | None:
        if self.checkpoint is None or not self.checkpoint.exists():
            return None
        state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        if state.get("config") != asdict(self.config):
            raise ConfigError(f"checkpoint {self.checkpoint} was made with other settings")
        return state

    # -- the fit --------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FitResult:
        """Fit, stop by the held-out residual, finish with the ``final`` step.

        Parameters
        ----------
        resume
            Continue from ``checkpoint`` when it exists (same data, settings and seed give the
            same result as an uninterrupted fit on the CPU).
        """
        c = self.config
        t0 = time.perf_counter()
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults on the step's large buffers (see _allocator)
        gen = self.generator
        opt = torch.optim.Adam(gen.parameters(), lr=c.lr)
        plateau = c.lr_schedule == "plateau" and self.op_val is not None
        fractions = () if plateau else c.lr_halve_at
        milestones = sorted({max(1, int(f * c.max_steps)) for f in fractions})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.5)
        halvings = 0  # of the plateau schedule
        hist: dict[str, list[float]] = {
            "step": [],
            "loss": [],
            "lr": [],
            "val_step": [],
            "val_residual": [],
        }
        best_val, best_step, best_state = float("inf"), 0, None
        gain_val, gain_step = float("inf"), 0  # the stopping rule's reference (stop_margin)
        start = 0
        state = self._load() if resume else None
        if state is not None:
            gen.load_state_dict(state["generator"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            self._rng.set_state(state["rng"])
            self._perm, self._pos = state["perm"], state["pos"]
            torch.set_rng_state(state["torch_rng"])
            hist = state["history"]
            best_val, best_step, best_state = (
                state["best_val"],
                state["best_step"],
                state["best_state"],
            )
            gain_val, gain_step = state["gain_val"], state["gain_step"]
            halvings = state.get("halvings", 0)
            self._ema = state["ema"]
            self._noise_rng.set_state(state["noise_rng"])
            if "shift_rng" in state:  # checkpoints written before the wavelet term lack it
                self._shift_rng.set_state(state["shift_rng"])
            start = state["step"]
        elif c.warm_start_steps > 0:
            self._warm_start(opt)
            opt = torch.optim.Adam(gen.parameters(), lr=c.lr)
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.5)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=c.max_steps,
                initial=start,
                desc=getattr(gen, "preset", "fit"),
                unit="step",
                leave=False,
                dynamic_ncols=True,
            )
        stopped = False
        step = start
        hook = self._perturb_codes()
        # the step losses stay on the device until an evaluation (or checkpoint) reads them all
        # at once: a float() per step would make the host wait for the GPU every step
        pending: list[torch.Tensor] = []

        def flush_losses() -> None:
            if pending:
                hist["loss"].extend(torch.stack(pending).tolist())
                pending.clear()

        try:
            for step in range(start + 1, c.max_steps + 1):
                frames = self._next_frames()
                opt.zero_grad(set_to_none=True)
                x = self._output(frames)
                loss = self._residual(self.op_fit, self.rhs_fit, self.yy_fit, x, frames)
                if self._has_prior_term:
                    loss = loss + self._prior_term(x, frames)
                loss.backward()
                opt.step()
                sched.step()
                if c.halving_resets_patience and step in milestones:
                    gain_step = max(gain_step, step)  # the stall is counted at the new rate
                self._update_ema(x, frames)
                hist["step"].append(step)
                pending.append(loss.detach())
                hist["lr"].append(opt.param_groups[0]["lr"])
                due = step % c.eval_every == 0 or step == c.max_steps
                if due:
                    flush_losses()
                if due and self.op_val is None and self.monitor is not None:
                    self.validate(step)
                if due and self.op_val is not None:
                    val = self.validate(step)
                    hist["val_step"].append(step)
                    hist["val_residual"].append(val)
                    if val < best_val:
                        best_val, best_step = val, step
                        best_state = {
                            "generator": copy.deepcopy(gen.state_dict()),
                            "ema": None if self._ema is None else self._ema.clone(),
                        }
                    if val < gain_val * (1 - c.stop_margin):
                        gain_val, gain_step = val, step
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{hist['loss'][-1]:.3e}",
                            held_out=f"{val:.3e}",
                            best=best_step,
                            refresh=False,
                        )
                    stalled = step >= c.min_steps and step - gain_step >= c.patience
                    if stalled and plateau and halvings < c.plateau_halvings:
                        halvings += 1
                        for group in opt.param_groups:
                            group["lr"] *= 0.5
                        gain_step = step  # a new stall is counted from here
                        hist.setdefault("lr_halved_at", []).append(step)
                    elif stalled:
                        stopped = True
                        break
                if bar is not None:
                    bar.update(1)
                if (
                    self.checkpoint is not None
                    and self.checkpoint_every
                    and step % self.checkpoint_every == 0
                ):
                    flush_losses()
                    self._save(
                        {
                            "generator": gen.state_dict(),
                            "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(),
                            "rng": self._rng.get_state(),
                            "perm": self._perm,
                            "pos": self._pos,
                            "torch_rng": torch.get_rng_state(),
                            "history": hist,
                            "best_val": best_val,
                            "best_step": best_step,
                            "best_state": best_state,
                            "gain_val": gain_val,
                            "gain_step": gain_step,
                            "halvings": halvings,
                            "ema": self._ema,
                            "noise_rng": self._noise_rng.get_state(),
                            "shift_rng": self._shift_rng.get_state(),
                            "step": step,
                            "config": asdict(c),
                        }
                    )
        finally:
            flush_losses()
            if bar is not None:
                bar.close()
            if hook is not None:
                hook.remove()
        if best_state is not None:
            gen.load_state_dict(best_state["generator"])
            self._ema = best_state["ema"]
        else:
            best_step = step
        info: dict[str, Any] = {
            "best_step": best_step,
            "steps_run": step,
            "stopped_early": stopped,
            "best_val_residual": best_val,
            "lr_halvings": halvings if plateau else sum(m <= step for m in milestones),
            "data_scale": self.scale,
            "amp": self.use_amp,
        }
        with torch.no_grad():
            if c.final == "refit" and self.op_val is not None:
                opt2 = torch.optim.Adam(gen.parameters(), lr=c.lr / 4)
                with torch.enable_grad():
                    for _ in range(c.refit_steps):
                        opt2.zero_grad(set_to_none=True)
                        loss = self._residual(
                            self.op_all, self.rhs_all, self.yy_all, self._output(None)
                        )
                        loss.backward()
                        opt2.step()
                out = self._output(None)
            else:
                out = self._image()
        self.blind_image = None
        blind: torch.Tensor | None = None
        if c.final != "refit" and self.op_val is not None:
            blind = out
        # a refit with nothing held out would repeat the fit's own data: it is skipped and said so
        info["final"] = "none" if c.final == "refit" and self.op_val is None else c.final
        self._blind = None  # set by _final_dc when it takes the step
        if c.admm_iters > 0:
            out = self._admm(out, hist, info)
            blind = out if blind is not None else None  # ADMM's x saw the fitted samples only
            if c.final in ("auto", "dc") and self.op_val is not None:
                # the held-out samples rejoin as the final step says (ADMM's x has not seen them)
                with torch.no_grad():
                    if c.final == "auto":
                        out = self._final_dc(out, info)
                    else:
                        out = self._cg_image(out, c.final_mu, None, c.final_iters)
                info["admm_final"] = info["final"]
            info["final"] = "admm"
        elif c.final == "dc":
            with torch.no_grad():
                if blind is not None:
                    blind = self._cg_image(out, c.final_mu, None, c.final_iters, fitted_only=True)
                out = self._cg_image(out, c.final_mu, None, c.final_iters)
        elif c.final == "auto":
            with torch.no_grad():
                out = self._final_dc(out, info)
        if blind is not None:
            blind = blind if self._blind is None else self._blind
            self.blind_image = (blind.detach() * self.scale).to(torch.complex64)
        image = (out.detach() * self.scale).to("cpu", torch.complex64)
        return FitResult(image, hist, best_step, stopped, time.perf_counter() - t0, info)
