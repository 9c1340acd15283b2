"""The GPU path, guarded on the CPU: mixed precision, host syncs, and the CUDA fits themselves.

A fit on CUDA runs the generator under bfloat16 autocast (``FitConfig.amp``). The CPU has the
same autocast machinery, so every preset is fitted here under ``torch.autocast("cpu",
torch.bfloat16)``: a dtype mistake (a bfloat16 tensor reaching ``torch.complex`` or
``view_as_complex``) fails in CI without a GPU. The tests marked ``cuda`` fit every preset on a
GPU and compare with the CPU; they are skipped without one (``bench/gpu-check.sh`` runs them).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mridip.errors import ConfigError
from mridip.models import PRESETS, build_generator
from mridip.preprocess import load
from mridip.recon import FitConfig, Reconstructor
from mridip.simulate import SimulationConfig, simulate, write_simulation

PRESET_NAMES = list(PRESETS)
#: small widths so that every preset fits a few steps in about a second on two cores
WIDTH = {"dip": 8, "tddip": 8, "gip": 4, "mridip": 8, "lrdip": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "tiny.h5"
    write_simulation(path, simulate(SimulationConfig(matrix=16, frames=6, coils=3, spokes=7)))
    return load(path)


def _generator(scan, name: str, seed: int = 0):
    times = scan.kspace.frame_times.float()
    return build_generator(
        name, matrix=scan.kspace.matrix, frame_times=times, seed=seed, width=WIDTH[name]
    )


def _config(steps: int = 4, **kw) -> FitConfig:
    base = dict(max_steps=steps, min_steps=1, eval_every=2, patience=1000, final="none")
    base.update(kw)
    return FitConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_fits_under_bfloat16_autocast(tiny, name: str) -> None:
    """What CUDA's amp does to the generator, on the CPU: the image stays complex64 and finite."""
    gen = _generator(tiny, name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gen()
        assert out.dtype == torch.complex64
        res = Reconstructor(tiny.kspace, tiny.maps, gen, _config(), progress=False).fit()
    assert res.image.dtype == torch.complex64
    assert bool(torch.isfinite(torch.view_as_real(res.image)).all())
    assert len(res.history["loss"]) == 4
    assert all(v == v for v in res.history["loss"])  # no NaN


@pytest.mark.parametrize("name", ["tddip", "mridip"])
def test_bfloat16_autocast_image_is_close_to_float32(tiny, name: str) -> None:
    """Autocast changes the arithmetic's precision, not the image: the outputs agree to ~10%."""
    gen = _generator(tiny, name)
    with torch.no_grad():
        ref = gen()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = gen()
    err = float((low - ref).norm() / ref.norm())
    assert err < 0.15, err  # bfloat16 keeps 8 bits of mantissa through ~15 layers


@pytest.mark.parametrize("amp_cpu", [False, True, None])
def test_amp_cpu_runs_the_generator_under_bfloat16_autocast(tiny, amp_cpu, monkeypatch) -> None:
    """``FitConfig.amp_cpu``: the generator's convolutions run in bfloat16 on the CPU when
    asked, or by default (None) where the CPU has native bfloat16 (faked here), the image
    stays complex64, the fit still lowers its loss and records what it used."""
    import mridip.recon

    monkeypatch.setattr(mridip.recon, "cpu_has_bf16", lambda: True)
    gen = _generator(tiny, "mridip")
    seen: list[tuple[bool, torch.dtype]] = []
    conv = next(m for m in gen.modules() if type(m).__name__ == "PerFrameConv2d")
    conv.register_forward_hook(
        lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), o.dtype))
    )
    res = Reconstructor(
        tiny.kspace, tiny.maps, gen, _config(steps=30, amp_cpu=amp_cpu), progress=False
    ).fit()
    on = amp_cpu is not False
    dtype = torch.bfloat16 if on else torch.float32
    assert seen and all(s == (on, dtype) for s in seen)
    assert res.info["amp"] is on
    assert res.image.dtype == torch.complex64
    assert res.history["loss"][-1] < 0.5 * res.history["loss"][0]


def test_amp_cpu_by_default_only_where_the_cpu_has_native_bfloat16(tiny, monkeypatch) -> None:
    import mridip.recon

    gen = _generator(tiny, "mridip")
    for native in (False, True):
        monkeypatch.setattr(mridip.recon, "cpu_has_bf16", lambda native=native: native)
        rec = Reconstructor(tiny.kspace, tiny.maps, gen, _config(), progress=False)
        assert rec.use_amp is native
        rec = Reconstructor(tiny.kspace, tiny.maps, gen, _config(amp_cpu=False), progress=False)
        assert rec.use_amp is False


def test_cpu_has_bf16_needs_the_bfloat16_instructions(tmp_path, monkeypatch) -> None:
    """The probe reads the CPU's flags: AVX-512 alone (where PyTorch's own check already says
    yes and oneDNN emulates bfloat16) is not enough; AVX512-BF16 or AMX-BF16 is; no cpuinfo
    means no."""
    import mridip.recon

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this PyTorch build has no oneDNN bfloat16 at all")
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(mridip.recon, "CPUINFO", info)
    base = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512vl avx512dq"
    for extra, native in (("", False), (" avx512_bf16", True), (" amx_bf16 amx_tile", True)):
        info.write_text(base + extra + "\nbugs\t\t: none avx512_bf16\n")
        assert mridip.recon.cpu_has_bf16() is native, extra
    info.unlink()
    assert mridip.recon.cpu_has_bf16() is False
    with pytest.raises(ConfigError, match="amp_cpu must be true, false or unset"):
        FitConfig(amp_cpu="yes").check()  # type: ignore[arg-type]


# -- host synchronisation --------------------------------------------------------------------------

#: ATen ops that make the host wait for the device on CUDA: scalar reads (``item``, ``bool``,
#: ``int``, ``float``), comparisons returning a Python bool, and ops whose output size depends on
#: the data.
SYNC_OPS = (
    "_local_scalar_dense",
    "equal",
    "is_nonzero",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "nonzero",
    "masked_select",
)


class SyncCounter(TorchDispatchMode):
    """Counts the ATen calls that would synchronise the host with a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS and not self.paused:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def count_step_syncs(rec: Reconstructor, steps: int, monkeypatch) -> list[int]:
    """Sync-causing calls in each of ``steps`` fit steps (the evaluation steps included).

    Adam is left out: its step counters live on the CPU even for CUDA parameters (not
    ``capturable``), so its scalar reads never wait for the GPU.
    """
    counts: list[int] = []
    counter = SyncCounter()
    real_next = rec._next_frames
    adam_step = torch.optim.Adam.step

    def next_frames():
        counts.append(len(counter.calls))
        return real_next()

    def step(self, *args, **kwargs):
        counter.paused = True
        try:
            return adam_step(self, *args, **kwargs)
        finally:
            counter.paused = False

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    rec._next_frames = next_frames  # type: ignore[method-assign]
    with counter:
        rec.fit()
    counts.append(len(counter.calls))
    return [b - a for a, b in zip(counts[:-1], counts[1:], strict=True)][:steps]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_fit_steps_between_evaluations_do_not_synchronise(tiny, name: str, monkeypatch) -> None:
    """Between two hold-out evaluations a step reads nothing back from the device.

    Counted on the CPU by the ATen calls that would wait for a GPU. The evaluation steps may
    synchronise (they convert the losses and the held-out residual once every ``eval_every``).
    """
    every = 4
    cfg = _config(steps=8, eval_every=every)
    rec = Reconstructor(tiny.kspace, tiny.maps, _generator(tiny, name), cfg, progress=False)
    per_step = count_step_syncs(rec, 8, monkeypatch)
    # step s (1-based) is an evaluation step when s % every == 0; the first step computes the
    # graph of gip and mridip once
    quiet = [c for s, c in enumerate(per_step, start=1) if s % every and s != 1]
    assert quiet and max(quiet) == 0, per_step


# -- CUDA: every preset end to end, against the CPU ------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_fits_on_cuda_like_the_cpu(tiny, name: str) -> None:
    """A short fit on CUDA (float32, no TF32) gives the CPU's image to float tolerance."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cfg = _config(steps=6, amp=False)
        cpu = Reconstructor(tiny.kspace, tiny.maps, _generator(tiny, name), cfg, progress=False)
        gpu = Reconstructor(
            tiny.kspace, tiny.maps, _generator(tiny, name), cfg, device="cuda", progress=False
        )
        a, b = cpu.fit(), gpu.fit()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    err = float((b.image - a.image).norm() / a.image.norm())
    assert b.image.dtype == torch.complex64
    assert err < 1e-3, err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_fits_on_cuda_with_amp(tiny, name: str) -> None:
    """The default (bfloat16 autocast) fit on CUDA runs end to end and lands near the CPU's."""
    cfg = _config(steps=6)
    cpu = Reconstructor(tiny.kspace, tiny.maps, _generator(tiny, name), cfg, progress=False)
    gpu = Reconstructor(
        tiny.kspace, tiny.maps, _generator(tiny, name), cfg, device="cuda", progress=False
    )
    a, b = cpu.fit(), gpu.fit()
    assert b.image.dtype == torch.complex64
    assert bool(torch.isfinite(torch.view_as_real(b.image)).all())
    err = float((b.image - a.image).norm() / a.image.norm())
    assert err < 0.1, err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_cuda_steps_between_evaluations_do_not_synchronise(tiny, name: str) -> None:
    """``torch.cuda.set_sync_debug_mode("error")`` raises on any sync outside the evaluations."""
    every = 5
    cfg = _config(steps=11, eval_every=every)
    rec = Reconstructor(
        tiny.kspace, tiny.maps, _generator(tiny, name), cfg, device="cuda", progress=False
    )
    real_next = rec._next_frames
    step = [0]

    def next_frames():
        step[0] += 1
        # the step after an evaluation may finish the evaluation's reads; step 1 builds the graph
        quiet = step[0] % every not in (0, 1) and step[0] > 1
        torch.cuda.set_sync_debug_mode("error" if quiet else "default")
        return real_next()

    rec._next_frames = next_frames  # type: ignore[method-assign]
    try:
        rec.fit()
    finally:
        torch.cuda.set_sync_debug_mode("default")
