import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mridip.cli import main


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_simulate_recon_eval(tmp_path, capsys):
    raw = tmp_path / "cine.h5"
    code, out, _ = run(
        ["simulate", raw, "--matrix", 32, "--frames", 6, "--coils", 4, "--spokes", 9], capsys
    )
    assert code == 0 and raw.exists() and "wrote" in out
    code, out, _ = run(["info", raw], capsys)
    assert code == 0 and "spokes/frame 9" in out and "coils        4" in out
    outdir = tmp_path / "rec"
    code, out, err = run(["recon", raw, "-o", outdir, "--method", "cgsense", "--iters", 8], capsys)
    assert code == 0, err
    assert "PSNR" in out
    for name in ("recon.h5", "cine.gif", "montage.png", "loss.png"):
        assert (outdir / name).stat().st_size > 0
    assert not [p for p in outdir.iterdir() if p.name.endswith(".tmp")]
    with h5py.File(outdir / "recon.h5") as f:
        img = f["image"][()]
        assert img.shape == (6, 32, 32) and img.dtype == np.complex64
        cfg = json.loads(f.attrs["config"])
        assert cfg["method"] == "cgsense" and cfg["iters"] == 8
        assert f["history/relative_residual"].shape == (8,)
        assert f["maps"].shape == (4, 32, 32)
    code, out, _ = run(["eval", outdir / "recon.h5", "--reference", raw, "--json"], capsys)
    q = json.loads(out)
    assert code == 0 and q["psnr"] > 20 and 0 < q["ssim"] <= 1
    code, out, _ = run(["eval", outdir / "recon.h5", "--reference", f"{raw}:/reference"], capsys)
    assert code == 0 and out.startswith("PSNR")


def _bad_inputs(tmp_path):
    not_h5 = tmp_path / "notes.h5"
    not_h5.write_text("not hdf5")
    no_group = tmp_path / "plain.h5"
    with h5py.File(no_group, "w") as f:
        f.create_dataset("numbers", data=np.arange(4))
    return {
        "missing": (tmp_path / "absent.h5", "no such file"),
        "not_hdf5": (not_h5, "not an HDF5 file"),
        "no_group": (no_group, "no ISMRMRD"),
    }


@pytest.mark.parametrize("case", ["missing", "not_hdf5", "no_group"])
def test_recon_bad_input_exit_2_one_line(tmp_path, capsys, case):
    path, message = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    code, out, err = run(["recon", path, "-o", out_dir], capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("case", ["missing", "not_hdf5", "no_group"])
def test_eval_bad_input_exit_2_one_line(tmp_path, capsys, case, radial_cine):
    path, _ = _bad_inputs(tmp_path)[case]
    for argv in (
        ["eval", path, "--reference", radial_cine],
        ["eval", radial_cine, "--reference", path],
    ):
        code, out, err = run(argv, capsys)
        assert code == 2
        assert err.count("\n") == 1 and err.startswith("mridip: error:")


def test_bad_options_exit_2(tmp_path, capsys, radial_cine):
    code, _, err = run(["recon", radial_cine, "-o", tmp_path / "o", "--method", "nope"], capsys)
    assert code == 2 and "unknown method" in err and err.count("\n") == 1
    code, _, err = run(["simulate", tmp_path / "x.h5", "--kind", "brain"], capsys)
    assert code == 2 and "--kind" in err and not (tmp_path / "x.h5").exists()
    with pytest.raises(SystemExit) as exc:
        main(["recon"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    code, _, err = run(["demo", "--methods", "zf,nope", "--out", tmp_path / "d"], capsys)
    assert code == 2 and "unknown method nope" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_demo_runs_on_its_bundled_sample(tmp_path, capsys):
    """The default sample is the textured, free-breathing cine: it loads with its reference
    and the demo prints a row per method (zero filling only here: the others are measured)."""
    code, out, _ = run(["demo", "--methods", "zf", "--out", tmp_path / "d"], capsys)
    assert code == 0 and "sample_cine_breathing.h5" in out
    assert "16 frames, 8 coils, 64×64" in out
    (row,) = [line for line in out.splitlines() if line.startswith("zf ")]
    assert 15 < float(row.split()[1]) < 30  # zero filling: far below every method
    assert (tmp_path / "d" / "zf" / "recon.h5").exists()


def test_demo_dip_steps_follow_the_step_cost(monkeypatch):
    """The demo's DIP step limit is a time budget: 3000 where the fits run bfloat16 natively
    (a step costs about 40%), else 2000; a given --dip-steps is kept."""
    import mridip.recon
    from mridip.cli import build_parser, demo_dip_steps

    for native, steps in ((True, 3000), (False, 2000)):
        monkeypatch.setattr(mridip.recon, "cpu_has_bf16", lambda native=native: native)
        assert demo_dip_steps() == steps
    assert build_parser().parse_args(["demo"]).dip_steps is None  # chosen when the demo runs
    assert build_parser().parse_args(["demo", "--dip-steps", "50"]).dip_steps == 50


def test_demo_blend_reuses_the_cs_images_it_has_made(tmp_path, capsys, monkeypatch):
    """The DIP row's blend takes the demo's own `tv` image instead of solving it again, and the
    demo says which partner and weight it chose, or the stack's weights when the DIP image adds
    nothing (stand-in fits keep this small: the truth itself, and an image of zeros). With
    `--jobs 2` the CS methods run in a worker thread beside the DIP fit, whose blend waits for
    them; the rows come out in the order asked for either way. Cartesian data: the CS rows and
    the blend's partners choose λ alike (whole lines held out; on radial data the partners keep
    single samples, ``test_blend_partners_choose_lam_by_single_samples_on_radial_data``)."""
    import threading

    from mridip import lam, methods, recon
    from mridip.preprocess import load
    from mridip.simulate import SimulationConfig, simulate, write_simulation

    sample = tmp_path / "s.h5"
    cfg = SimulationConfig(trajectory="cartesian", matrix=24, frames=4, coils=3, acceleration=4)
    write_simulation(sample, simulate(cfg))
    truth = torch.as_tensor(load(sample).reference).to(torch.complex64)
    chosen = []  # the CS methods whose λ is chosen (each costs several solves)
    real = lam.choose_lam
    monkeypatch.setattr(methods, "choose_lam", lambda *a, **k: chosen.append(a[2]) or real(*a, **k))
    where = {}  # method → the thread that reconstructed it
    real_rec = methods.reconstruct

    def traced(kspace, method, *a, **k):
        where[method] = threading.current_thread().name
        return real_rec(kspace, method, *a, **k)

    monkeypatch.setattr(methods, "reconstruct", traced)
    rows = {}
    for g, says, jobs in (
        (truth, "blended with", "2"),
        (torch.zeros_like(truth), "stacked: dip 0.00", "1"),
    ):

        def fake_fit(self, resume=False, g=g):
            self.blind_image = g
            return recon.FitResult(g, {}, 0, False, 0.0, {})

        monkeypatch.setattr(recon.Reconstructor, "fit", fake_fit)
        chosen.clear()
        where.clear()
        args = ["demo", "--sample", sample, "--methods", "zf,tv,lrdip", "--jobs", jobs]
        code, out, _ = run([*args, "--out", tmp_path / "d"], capsys)
        assert code == 0
        (line,) = [x for x in out.splitlines() if says in x]
        assert "3 CS image(s); reused tv from above" in line
        assert chosen.count("tv") == 1  # tv's λ chosen once, for its own row
        assert sorted(chosen) == ["lps", "tv", "wavelet"]
        order = [x.split()[0] for x in out.splitlines() if x.split()[:1] in (["zf"], ["tv"])]
        order += [x.split()[0] for x in out.splitlines() if x.startswith("lrdip ")]
        assert order == ["zf", "tv", "lrdip"]
        assert where["lrdip"] == "MainThread"
        if jobs == "2":
            assert "in a worker thread beside lrdip" in out
            assert where["zf"].startswith("mridip-demo") and where["tv"].startswith("mridip-demo")
        else:
            assert set(where.values()) == {"MainThread"}
        rows[jobs] = [x for x in out.splitlines() if x.startswith(("zf ", "tv "))]
    # the CS rows do not depend on the thread they ran in (PSNR, SSIM, NRMSE; not the seconds)
    assert [r.split()[:4] for r in rows["1"]] == [r.split()[:4] for r in rows["2"]]
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--methods", "zf", "--jobs", "3", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--jobs" in err
    assert not (tmp_path / "e").exists()


def test_demo_rows_print_in_the_order_asked_for(capsys):
    """A row that is ready before the rows above it waits for them."""
    from mridip.cli import _DemoRows

    rows = _DemoRows(["a", "b", "c"])
    rows.done("b", ["row b", "  under b"])
    assert capsys.readouterr().out == ""
    rows.done("a", ["row a"])
    assert capsys.readouterr().out.splitlines() == ["row a", "row b", "  under b"]
    rows.done("c", ["row c"])
    assert capsys.readouterr().out.splitlines() == ["row c"]


def test_console_script_installed(tmp_path):
    """The `mridip` entry point runs as a program and keeps the exit-code contract."""
    exe = Path(sys.executable).parent / "mridip"
    if not exe.exists():
        pytest.skip("console script not installed (run through `make test`)")
    r = subprocess.run(
        [str(exe), "recon", str(tmp_path / "nothing.h5"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith("mridip: error: no such file")
    assert len(r.stderr.strip().splitlines()) == 1


def test_methods_lists_every_method_with_parameter_counts(capsys):
    from mridip.methods import METHODS
    from mridip.models import PRESETS

    code, out, _ = run(["methods", "--matrix", 64, "--frames", 12], capsys)
    assert code == 0
    for name in METHODS:
        assert any(line.startswith(name + " ") for line in out.splitlines())
    n = PRESETS["tddip"].param_count((64, 64), 12)
    assert f"{n / 1e6:.2f} M parameters at 64², 12 frames" in out


def test_final_choices_match_the_fit_config(tmp_path, capsys, radial_cine):
    """The CLI lists ``--final``'s choices itself (so ``--help`` needs no torch); they must stay
    those ``FitConfig`` accepts, and any other gets one line and exit code 2."""
    from mridip.cli import build_parser
    from mridip.recon import FINAL_STEPS

    recon = build_parser()._subparsers._group_actions[0].choices["recon"]
    (final,) = [a for a in recon._actions if "--final" in a.option_strings]
    assert tuple(final.choices) == FINAL_STEPS
    with pytest.raises(SystemExit) as exc:
        main(["recon", str(radial_cine), "-o", str(tmp_path / "o"), "--final", "best"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--final" in err
    assert not (tmp_path / "o").exists()


def test_dip_lever_flags_reach_the_fit_config(tmp_path, capsys, radial_cine):
    """The levers' flags become FitConfig fields; a value FitConfig refuses gets one line, exit 2,
    and no output folder; ``--warm-start-from`` lists FitConfig's own choices."""
    from mridip.cli import _method_options, build_parser
    from mridip.recon import WARM_START_TARGETS, FitConfig

    args = ["recon", "x.h5", "-o", "o", "--method", "mridip", "--ema", "0.9", "--tv-weight"]
    more = ["--no-mask-support", "--warm-start-from", "tv", "--tv-spatial-weight", "0.02"]
    more += ["--lowrank-weight", "0.3", "--wavelet-weight", "0.07"]
    a = build_parser().parse_args([*args, "0.05", *more])
    opts = _method_options(a)
    names = ("ema", "tv_weight", "mask_support", "warm_start_from", "tv_spatial_weight")
    names += ("lowrank_weight", "wavelet_weight")
    cfg = FitConfig(**{k: opts[k] for k in names})
    assert (cfg.ema, cfg.tv_weight, cfg.mask_support, cfg.warm_start_from) == (
        0.9,
        0.05,
        False,
        "tv",
    )
    assert (cfg.tv_spatial_weight, cfg.lowrank_weight, cfg.wavelet_weight) == (0.02, 0.3, 0.07)
    assert (
        _method_options(build_parser().parse_args(args[:6] + ["--code-noise", "0.1"])).get(
            "mask_support"
        )
        is None
    )  # not given: the FitConfig default (on) applies
    recon = build_parser()._subparsers._group_actions[0].choices["recon"]
    (ws,) = [x for x in recon._actions if "--warm-start-from" in x.option_strings]
    assert tuple(ws.choices) == WARM_START_TARGETS
    code, _, err = run(
        ["recon", radial_cine, "-o", tmp_path / "o", "--method", "mridip", "--ema", "1.5"], capsys
    )
    assert code == 2 and "ema" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    a = build_parser().parse_args(
        [*args[:6], "--lr-schedule", "plateau", "--rank", "3", "--holdout-unit", "readout"]
        + ["--holdout-spare-centre"]
    )
    keys = ("lr_schedule", "rank", "holdout_unit", "holdout_spare_centre")
    assert {k: _method_options(a)[k] for k in keys} == {
        "lr_schedule": "plateau",
        "rank": 3,
        "holdout_unit": "readout",
        "holdout_spare_centre": True,
    }
    assert _method_options(build_parser().parse_args(args[:6])).get("holdout_spare_centre") is None
    for field in ("halving_resets_patience", "amp_cpu"):
        flag = "--" + field.replace("_", "-")
        for given, value in ((flag, True), (flag.replace("--", "--no-"), False)):
            a = build_parser().parse_args([*args[:6], given])
            cfg = FitConfig(**{field: _method_options(a)[field]})
            assert getattr(cfg, field) is value, given
        assert field not in _method_options(build_parser().parse_args(args[:6]))
    code, _, err = run(
        ["recon", radial_cine, "-o", tmp_path / "o", "--method", "mridip", "--rank", "3"], capsys
    )
    assert code == 2 and "no option rank" in err and err.count("\n") == 1
    for method, flags, words in (  # a flag of the other family: refused, not ignored
        ("tv", ["--holdout-spare-centre"], "no option --holdout-spare-centre: it is an option"),
        ("wavelet", ["--holdout-unit", "readout"], "no option --holdout-unit"),
        ("lps", ["--admm", "3"], "no option --admm"),
        ("tv", ["--checkpoint-every", "5"], "no option --checkpoint-every/--resume"),
        ("mridip", ["--lam", "0.1"], "no option --lam: it is an option of cgsense"),
    ):
        code, _, err = run(
            ["recon", radial_cine, "-o", tmp_path / "o", "--method", method, *flags], capsys
        )
        assert code == 2 and words in err and err.count("\n") == 1, (method, err)
        assert not (tmp_path / "o").exists()
    assert (
        _method_options(build_parser().parse_args([*args[:6], "--ensemble", "3"]))["ensemble"] == 3
    )
    for flags, words in (  # an ensemble of one fit or none; an ensemble cannot checkpoint
        (["--ensemble", "0"], "ensemble must be ≥ 1"),
        (["--ensemble", "2", "--checkpoint-every", "5"], "keeps no checkpoints"),
    ):
        code, _, err = run(
            ["recon", radial_cine, "-o", tmp_path / "o", "--method", "lrdip", *flags], capsys
        )
        assert code == 2 and words in err and err.count("\n") == 1, (flags, err)
        assert not (tmp_path / "o").exists()
    a = build_parser().parse_args([*args[:6], "--blend", "auto", "--blend-weight", "auto"])
    assert {k: _method_options(a)[k] for k in ("blend", "blend_weight")} == {
        "blend": "auto",
        "blend_weight": "auto",
    }
    a = build_parser().parse_args([*args[:6], "--blend", "tv", "--blend-weight", "0.3"])
    assert _method_options(a)["blend_weight"] == 0.3
    a = build_parser().parse_args([*args[:6], "--blend", "stack"])
    assert _method_options(a)["blend"] == "stack"
    a = build_parser().parse_args([*args[:6], "--blend-rings", "2"])
    assert _method_options(a)["blend_rings"] == 2
    for method, flags, words in (  # refused before the data are read: one line, no output
        ("lrdip", ["--blend-weight", "1.5"], "blend weight"),
        ("mridip", ["--blend", "stack", "--blend-weight", "0.3"], "blend stack"),
        ("mridip", ["--blend-rings", "9"], "blend rings"),
    ):
        code, _, err = run(
            ["recon", radial_cine, "-o", tmp_path / "o", "--method", method, *flags], capsys
        )
        assert code == 2 and words in err and err.count("\n") == 1, (flags, err)
        assert not (tmp_path / "o").exists(), flags
    more = ["--blend-lam", "refine", "--blend-band", "measured", "--blend-outside", "dip"]
    a = build_parser().parse_args([*args[:6], *more])
    names = ("blend_lam", "blend_band", "blend_outside")
    assert tuple(_method_options(a)[k] for k in names) == ("refine", "measured", "dip")
    plain = _method_options(build_parser().parse_args(args[:6]))
    assert not {*names, "blend_rings"} & set(plain)  # the method's defaults
    refused = (
        ["--blend-weight", "half"],
        ["--blend", "bart"],
        ["--blend-lam", "sweep"],
        ["--blend-band", "corners"],
        ["--blend-outside", "zero"],
    )
    for bad in refused:  # argparse's own refusal
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([*args[:6], *bad])
        assert exc.value.code == 2
