"""Retrospective studies (mridip.study, `mridip study`): grid, resume, failures, bad files."""

import csv
import importlib.util
import json
import math

import numpy as np
import pytest
import torch

import mridip
from mridip import phantoms, study
from mridip.cli import main
from mridip.errors import ConfigError

METHODS = """
[[method]]
method = "zf"

[[method]]
method = "cgsense"
iters = 3

[[method]]
method = "tv"
iters = 3
"""


def _series_npy(tmp_path):
    x = phantoms.perfusion_phantom((40, 40), 3).image.abs().numpy()
    np.save(tmp_path / "series.npy", x)
    return "series.npy"


def _write(tmp_path, text, name="study.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _grid_study(tmp_path):
    npy = _series_npy(tmp_path)
    return _write(
        tmp_path,
        f"""
[study]
name = "grid"
seeds = [0, 1]

[[dataset]]
name = "cine"
kind = "phantom"
matrix = 32
frames = 3
coils = 2

[[dataset]]
name = "perf"
kind = "images"
path = "{npy}"
matrix = 32
coils = 2
roi = [8, 24, 8, 24]

[[sampling]]
name = "vista"
pattern = "vista"
accelerations = [4, 8]
center = 2
datasets = ["cine"]

[[sampling]]
name = "vd"
pattern = "cartesian-vd"
accelerations = [2, 4]
datasets = ["perf"]
"""
        + METHODS,
    )


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_resumes_after_a_kill_and_matches_cells_run_one_by_one(tmp_path, monkeypatch):
    cfg = study.load_study(_grid_study(tmp_path))
    out = tmp_path / "out"
    cells = study.expand_cells(cfg)
    assert len(cells) == 2 * 2 * 3 * 2 and len({c["id"] for c in cells}) == 24

    # killed after 9 cells: an interrupt that is not a cell's own failure ends the run
    real, calls = study.run_cell, []

    def dies_after_nine(cell):
        if len(calls) == 9:
            raise KeyboardInterrupt
        calls.append(cell["id"])
        return real(cell)

    monkeypatch.setattr(study, "run_cell", dies_after_nine)
    with pytest.raises(KeyboardInterrupt):
        study.run(cfg, out)
    assert not (out / "results.csv").exists()
    assert len(list((out / "cells").glob("*.json"))) == 9
    monkeypatch.setattr(study, "run_cell", real)

    resumed = study.run(cfg, out)
    assert (resumed.ran, resumed.reused, resumed.failed) == (15, 9, 0)
    first = (out / "results.csv").read_bytes()
    again = study.run(cfg, out)
    assert (again.ran, again.reused) == (0, 24)
    assert (out / "results.csv").read_bytes() == first

    rows = _read_csv(out / "results.csv")
    assert len(rows) == 24 and {r["status"] for r in rows} == {"ok"}
    assert {r["dataset"] for r in rows} == {"cine", "perf"}
    assert {(r["label"], r["acceleration"]) for r in rows if r["dataset"] == "perf"} == {
        (m, a) for m in ("zf", "cgsense", "tv") for a in ("2.0", "4.0")
    }
    by_id = {r["cell"]: r for r in rows}
    for cell in cells:  # every cell again, through the public one-liners
        row = by_id[cell["id"]]
        inp = study.cell_inputs(cell)
        m = cell["method"]
        rec = mridip.reconstruct(
            inp.kspace, m["method"], inp.maps, seed=cell["seed"], iters=m["iters"], **m["options"]
        )
        q = mridip.evaluate(rec.image, inp.reference)
        assert float(row["psnr"]) == pytest.approx(q["psnr"], abs=1e-3), row["label"]
        assert float(row["ssim"]) == pytest.approx(q["ssim"], abs=1e-5)
        assert float(row["nrmse"]) == pytest.approx(q["nrmse"], rel=1e-4)
        if cell["dataset"]["name"] == "perf":
            qr = mridip.evaluate(rec.image, inp.reference, roi=inp.roi)
            assert float(row["psnr_roi"]) == pytest.approx(qr["psnr"], abs=1e-3)
        else:
            assert row["psnr_roi"] == ""
        assert cell["seed"] == int(row["seed"])
    # the seeds change the noise (and the random Cartesian masks), so the results differ
    zf = [
        r
        for r in rows
        if r["label"] == "zf" and r["sampling"] == "vd" and r["acceleration"] == "4.0"
    ]
    assert zf[0]["psnr"] != zf[1]["psnr"]
    # more samples, better images; the regularised methods beat zero filling
    mean = {
        (r["label"], r["acceleration"]): np.mean(
            [
                float(x["psnr"])
                for x in rows
                if x["dataset"] == "cine"
                and x["label"] == r["label"]
                and x["acceleration"] == r["acceleration"]
            ]
        )
        for r in rows
        if r["dataset"] == "cine"
    }
    assert mean[("zf", "4.0")] > mean[("zf", "8.0")]
    assert mean[("tv", "8.0")] > mean[("zf", "8.0")] + 1

    summary = (out / "summary.md").read_text()
    assert "24 cells: 24 finished, 0 failed (0 run now, 24 reused" in summary
    assert "| vista R=8 |" in summary and "**" in summary
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "quality_cine_vista.png" in names and "frames_perf_vd_R4.png" in names
    assert "xt_cine_vista_R8.png" in names
    saved = np.load(out / "cells" / f"{cells[0]['id']}.npz")
    assert saved["image"].shape == (3, 32, 32) and saved["mask"].shape == (3, 32, 32)
    assert json.loads((out / "study.json").read_text())["study"]["seeds"] == [0, 1]


def test_changed_cells_rerun_failed_cells_are_recorded(tmp_path, capsys):
    base = """
[[dataset]]
name = "cine"
kind = "phantom"
matrix = 32
frames = 2
coils = 2

[[sampling]]
name = "vd"
pattern = "cartesian-vd"
accelerations = [3]

[[method]]
method = "zf"

[[method]]
method = "tv"
iters = 2
grid = {{ lam = [{lam}] }}
"""
    out = tmp_path / "out"
    p = _write(tmp_path, base.format(lam="0.1, -1.0"))
    assert main(["study", str(p), "-o", str(out), "--quiet"]) == 1  # some cells failed
    printed = capsys.readouterr().out
    assert "3 cells: 3 run, 0 reused, 1 failed" in printed
    rows = _read_csv(out / "results.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["label"] for r in failed] == ["tv lam=-1"]
    assert (
        failed[0]["error"].startswith("ConfigError: lam must be") and "\n" not in failed[0]["error"]
    )
    assert failed[0]["psnr"] == ""
    summary = (out / "summary.md").read_text()
    assert (
        "3 cells: 2 finished, 1 failed" in summary and "tv lam=-1 · seed 0: ConfigError" in summary
    )

    # a changed option reruns only that cell; the failed cell is tried again
    p = _write(tmp_path, base.format(lam="0.2, -1.0"))
    res = study.run(study.load_study(p), out)
    assert (res.ran, res.reused, res.failed) == (2, 1, 1)


def test_every_sampling_pattern_and_raw_kspace(tmp_path):
    raw = tmp_path / "full.h5"
    assert (
        main(
            [
                "simulate",
                str(raw),
                "--trajectory",
                "cartesian",
                "--acceleration",
                "1",
                "--matrix",
                "32",
                "--frames",
                "2",
                "--coils",
                "4",
                "--noise",
                "0.002",
            ]
        )
        == 0
    )
    text = f"""
[[dataset]]
name = "cine"
kind = "phantom"
matrix = 32
frames = 2
coils = 4
noise = 0.0

[[dataset]]
name = "scanner"
kind = "raw"
path = "{raw.name}"

[[sampling]]
name = "ga"
pattern = "golden-radial"
spokes = [24]
datasets = ["cine"]

[[sampling]]
name = "ur"
pattern = "uniform-radial"
accelerations = [2]
datasets = ["cine"]

[[sampling]]
name = "sp"
pattern = "spiral"
interleaves = [4]
datasets = ["cine"]

[[sampling]]
name = "vd"
pattern = "cartesian-vd"
accelerations = [2]

[[sampling]]
name = "pd"
pattern = "poisson"
accelerations = [2]

[[sampling]]
name = "vista"
pattern = "vista"
accelerations = [2]
center = 4

[[method]]
method = "cgsense"
iters = 10
"""
    res = study.run(study.load_study(_write(tmp_path, text)), tmp_path / "out")
    rows = {(r["dataset"], r["sampling"]): r for r in res.rows}
    assert len(rows) == 3 + 3 * 2 and res.failed == 0, [r["error"] for r in res.rows]
    for key, r in rows.items():
        assert r["psnr"] > 27, (key, r["psnr"])  # mild undersampling: every pattern works
    assert rows[("cine", "ga")]["acceleration"] == pytest.approx(math.pi / 2 * 32 / 24, abs=1e-3)
    assert rows[("cine", "sp")]["level"] == "interleaves=4"
    for key in (("scanner", "pd"), ("scanner", "vd"), ("scanner", "vista")):
        assert rows[key]["acceleration_actual"] == pytest.approx(2.0, rel=0.15)
    cells = {
        (c["dataset"]["name"], c["sampling"]["name"]): c
        for c in study.expand_cells(study.load_study(tmp_path / "study.toml"))
    }
    saved = np.load(tmp_path / "out" / "cells" / f"{cells[('scanner', 'vista')]['id']}.npz")
    assert saved["mask"].shape == (2, 32, 32) and saved["mask"].dtype == bool
    spiral = np.load(tmp_path / "out" / "cells" / f"{cells[('cine', 'sp')]['id']}.npz")
    assert spiral["dcf"].shape[:2] == (2, 1)


BAD = [
    ("[study]\nseeds = [0]\nfoo = 1\n", "study.foo: unknown key"),
    ("[study]\nseeds = 'zero'\n", "study.seeds: expected a non-empty list of integers"),
    ("[[dataset]]\nname = 'a'\nkind = 'phantom'\ncoils = 'eight'\n", "dataset[0].coils"),
    ("[[method]]\nmethod = 'magic'\n", "method[0].method: unknown method 'magic'"),
    (
        "[[dataset]]\nname = 'p'\nkind = 'phantom'\nphantom = 'perfusion'\ntexture = 0.2\n",
        "dataset[0].texture: between 0 and 1, for the cine phantom only",
    ),
    (
        "[[dataset]]\nname = 'c'\nkind = 'phantom'\nbreathing = 0.3\n",
        "dataset[0].breathing: between 0 and 0.2, for the cine phantom only",
    ),
    ("[[method]]\nmethod = 'tv'\noptions = { lamda = 1 }\n", "method[0].options.lamda"),
    # a solver argument the method never passes on, and a DIP lever on a CS method
    ("[[method]]\nmethod = 'tv'\noptions = { relaxation = 1.5 }\n", "options.relaxation"),
    ("[[method]]\nmethod = 'lps'\noptions = { ema = 0.9 }\n", "method[0].options.ema"),
    ("[[sampling]]\nname = 's'\npattern = 'radial'\naccelerations = [2]\n", "sampling[0].pattern"),
    (
        "[[sampling]]\nname = 's'\npattern = 'vista'\naccelerations = [2]\ndatasets = ['nope']\n",
        "sampling[0].datasets: no dataset named 'nope'",
    ),
    (
        "[[dataset]]\nname = 'f'\nkind = 'images'\npath = 'missing.mat'\nkey = 'x'\n",
        "dataset[0] (f): no such file",
    ),
    ("[study\n", "not valid TOML"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_malformed_study_is_one_line_exit_2_nothing_written(tmp_path, capsys, change, message):
    sections = {
        "study": "[study]\nseeds = [0]\n",
        "dataset": "[[dataset]]\nname = 'cine'\nkind = 'phantom'\nmatrix = 32\nframes = 2\n",
        "sampling": "[[sampling]]\nname = 'vd'\npattern = 'vista'\naccelerations = [2]\n",
        "method": "[[method]]\nmethod = 'zf'\n",
    }
    head = change.split("\n", 1)[0].strip("[]")
    key = head if head in sections else "study"
    if change.startswith("[study\n"):
        key = "study"
    sections[key] = change
    p = _write(tmp_path, "\n".join(sections.values()))
    out = tmp_path / "out"
    assert main(["study", str(p), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mridip: error: ") and message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_study_options_are_those_reconstruct_takes():
    """The study's option check and mridip.reconstruct's share one list
    (mridip.methods.method_options): λ's rule passes for a CS method, a DIP lever for a DIP."""
    doc = {
        "dataset": [{"name": "c", "kind": "phantom", "matrix": 32, "frames": 2}],
        "sampling": [{"name": "vd", "pattern": "vista", "accelerations": [2]}],
        "method": [
            {"method": "tv", "options": {"lam_rule": "discrepancy", "lam_holdout_unit": "sample"}},
            {"method": "mridip", "options": {"holdout_spare_centre": True, "tv_weight": 0.1}},
        ],
    }
    parsed = study.parse_study(doc)
    assert [m["options"] for m in parsed.methods] == [m["options"] for m in doc["method"]]


def test_parse_study_rejects_raw_with_radial(tmp_path):
    doc = {
        "dataset": [{"name": "r", "kind": "raw", "path": "x.h5"}],
        "sampling": [{"name": "ga", "pattern": "golden-radial", "spokes": [8]}],
        "method": [{"method": "zf"}],
    }
    with pytest.raises(ConfigError, match=r"sampling\[0\].pattern: golden-radial cannot"):
        study.parse_study(doc)


def test_dip_fitconfig_fields_are_options(tmp_path):
    from mridip.recon import FitConfig

    doc = {
        "dataset": [{"name": "c", "kind": "phantom", "matrix": 32, "frames": 2}],
        "sampling": [{"name": "vd", "pattern": "vista", "accelerations": [2]}],
        "method": [
            {
                "method": "dip",
                "iters": 5,
                "grid": {"final_mu": [0.5, 2.0]},
                "options": {"lr_halve_at": [0.5]},
            }
        ],
    }
    cfg = study.parse_study(doc)
    assert [m["label"] for m in cfg.methods] == ["dip final_mu=0.5", "dip final_mu=2"]
    assert "final_mu" in {f.name for f in __import__("dataclasses").fields(FitConfig)}
    doc["method"][0]["options"] = {"not_a_field": 1}
    with pytest.raises(ConfigError, match=r"method\[0\].options.not_a_field"):
        study.parse_study(doc)


#: a cine and a perfusion phantom with one sampling: the frame of the per-dataset method tests
_TWO_PHANTOMS = {
    "dataset": [
        {"name": "cine", "kind": "phantom", "matrix": 32, "frames": 2},
        {"name": "perf", "kind": "phantom", "phantom": "perfusion", "matrix": 32, "frames": 2},
    ],
    "sampling": [{"name": "vd", "pattern": "vista", "accelerations": [2]}],
}


def test_method_entries_can_apply_to_some_datasets(tmp_path):
    """``datasets`` on a method entry: its cells exist for those datasets only, so one label can
    carry per-dataset options (a perfusion series' time manifold); a label still names one entry
    per dataset, and an unknown dataset is refused by name."""
    doc = {
        **_TWO_PHANTOMS,
        "method": [
            {"method": "zf"},
            {"method": "tddip", "label": "tddip", "datasets": ["cine"]},
            {
                "method": "tddip",
                "label": "tddip",
                "datasets": ["perf"],
                "options": {"latent": "line"},
            },
        ],
    }
    cells = study.expand_cells(study.parse_study(doc))
    got = sorted(
        (c["dataset"]["name"], c["method"]["label"], str(c["method"]["options"])) for c in cells
    )
    assert got == [
        ("cine", "tddip", "{}"),
        ("cine", "zf", "{}"),
        ("perf", "tddip", "{'latent': 'line'}"),
        ("perf", "zf", "{}"),
    ]
    # restricting an entry to some datasets does not change the cells it keeps
    unrestricted = {**doc, "method": [{"method": "tddip", "label": "tddip"}]}
    plain = {
        c["dataset"]["name"]: c["id"] for c in study.expand_cells(study.parse_study(unrestricted))
    }
    assert plain["cine"] in {c["id"] for c in cells} and plain["perf"] not in {
        c["id"] for c in cells
    }
    doc["method"][1]["datasets"] = ["cine", "perf"]
    with pytest.raises(ConfigError, match="label 'tddip' is used twice"):
        study.parse_study(doc)
    doc["method"][1]["datasets"] = ["lungs"]
    with pytest.raises(ConfigError, match=r"method\[1\].datasets: no dataset named 'lungs'"):
        study.parse_study(doc)


def test_summary_has_one_column_per_label_and_dataset():
    """Two entries sharing a label on different datasets make one column; a dataset's table
    lists only the methods that apply to it."""
    doc = {
        **_TWO_PHANTOMS,
        "method": [
            {"method": "zf"},
            {"method": "cgsense", "label": "cg", "datasets": ["cine"]},
            {"method": "tddip", "label": "dip", "datasets": ["cine"]},
            {
                "method": "tddip",
                "label": "dip",
                "datasets": ["perf"],
                "options": {"latent": "line"},
            },
        ],
    }
    cfg = study.parse_study(doc)
    rows = []
    for c in study.expand_cells(cfg):
        value = {"zf": 20.0, "cg": 25.0, "dip": 30.0 if c["dataset"]["name"] == "cine" else 31.0}
        rows.append(
            {
                "dataset": c["dataset"]["name"],
                "sampling": "vd",
                "level": "R=2",
                "acceleration": 2.0,
                "label": c["method"]["label"],
                "seed": 0,
                "status": "ok",
                "psnr": value[c["method"]["label"]],
            }
        )
    text = study.summary_markdown(cfg, study.StudyResult(out=None, rows=rows))  # type: ignore[arg-type]
    cine, perf = text.split("## perf")
    assert "| condition | zf | cg | dip |" in cine and "**30.00 ± 0.00**" in cine
    assert "| condition | zf | dip |" in perf and "**31.00 ± 0.00**" in perf
    assert "| failed" not in text


def test_local_worker_processes(tmp_path):
    text = """
[study]
seeds = [0, 1]

[[dataset]]
name = "cine"
kind = "phantom"
matrix = 32
frames = 2
coils = 2

[[sampling]]
name = "vd"
pattern = "cartesian-vd"
accelerations = [3]

[[method]]
method = "zf"
"""
    cfg = study.load_study(_write(tmp_path, text))
    one = study.run(cfg, tmp_path / "one")
    two = study.run(cfg, tmp_path / "two", jobs=2)
    assert two.ran == 2 and two.failed == 0
    assert [r["psnr"] for r in one.rows] == pytest.approx([r["psnr"] for r in two.rows])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_executor(tmp_path):
    text = """
[[dataset]]
name = "cine"
kind = "phantom"
matrix = 32
frames = 2
coils = 2

[[sampling]]
name = "vd"
pattern = "cartesian-vd"
accelerations = [3]

[[method]]
method = "zf"

[[method]]
method = "tv"
grid = { lam = [-1.0] }
"""
    cfg = study.load_study(_write(tmp_path, text))
    res = study.run(cfg, tmp_path / "out", ray_address="local", jobs=1)
    assert res.ran == 2 and res.failed == 1
    assert res.rows[0]["status"] == "ok" and res.rows[1]["error"].startswith("ConfigError")
    assert study.run(cfg, tmp_path / "out").reused == 1


def test_the_full_example_of_the_docs_parses():
    import pathlib

    text = (pathlib.Path(__file__).parents[1] / "docs" / "study.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = study.parse_study(study.tomllib.loads(example), source="docs/study.toml")
    assert [d["kind"] for d in cfg.datasets] == ["images", "phantom", "raw"]
    assert {s["pattern"] for s in cfg.samplings} == {"golden-radial", "spiral", "vista"}
    assert [m["label"] for m in cfg.methods] == [
        "zf",
        "cgsense",
        "tv lam=0.03",
        "tv lam=0.1",
        "tv lam=0.3",
        "mridip final=none",
        "mridip final=dc",
    ]
    for name in ("rat_cine", "rat_cine_quick", "dip_ablation"):
        path = pathlib.Path(__file__).parents[1] / "examples" / "studies" / f"{name}.toml"
        assert study.expand_cells(study.load_study(path))


def test_breathing_dataset_moves_and_keeps_other_cells():
    """A cine phantom dataset with ``breathing`` is the free-breathing phantom; without the
    key the dataset (and so its cells' ids) is what it was before the key existed."""
    base = {"name": "c", "kind": "phantom", "matrix": 16, "frames": 4}
    rest = {
        "sampling": [{"name": "r", "pattern": "golden-radial", "accelerations": [4]}],
        "method": [{"method": "zf"}],
    }
    plain = study.parse_study({"dataset": [dict(base)], **rest}).datasets[0]
    moving = study.parse_study({"dataset": [dict(base, breathing=0.1)], **rest}).datasets[0]
    assert "breathing" not in plain and moving["breathing"] == 0.1
    still, _ = study._object(plain)
    breathes, _ = study._object(moving)
    assert torch.equal(still[0], breathes[0])  # t = 0: no shift yet
    assert not torch.allclose(still[3], breathes[3], atol=1e-3)
