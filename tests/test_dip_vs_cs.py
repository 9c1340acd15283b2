"""The status table of the default DIP against the best CS image (docs/benchmarks.md) is the
one ``examples/dip_vs_cs.py`` makes from the recorded results, and its verdicts follow
issue 20's bar."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.fixture(scope="module")
def dvc():
    spec = importlib.util.spec_from_file_location("dip_vs_cs", ROOT / "examples" / "dip_vs_cs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


HEADER = "row,kind,seed,dip_psnr,dip_ssim,stopped,cs_method,cs_lam,cs_psnr,cs_ssim,version\n"


def _table(tmp_path, rows):
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return path


def test_the_docs_table_is_the_one_the_recorded_results_give(dvc):
    table = dvc.markdown(dvc.load())
    docs = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert table in docs, "docs/benchmarks.md's status table differs from examples/dip_vs_cs.py"


def test_the_recorded_results_name_each_best_cs_method(dvc):
    for scan in dvc.load():
        assert len(scan.seeds) == len(set(scan.seeds)) >= 1
        assert all(c.split("`")[1] in ("tv", "lps", "wavelet") for c in scan.cs)


def test_verdicts_follow_the_bar(dvc, tmp_path):
    path = _table(
        tmp_path,
        [
            # anatomy: +1.00 dB and SSIM above on the median: met
            "a,anatomy,0,31.00,0.900,yes,tv,0.1,30.00,0.890,this\n",
            "a,anatomy,1,31.50,0.900,yes,tv,0.1,30.00,0.899,this\n",
            "a,anatomy,2,30.50,0.880,yes,tv,0.1,30.00,0.890,this\n",
            # anatomy: 0.99 dB: PSNR misses
            "b,anatomy,0,30.99,0.900,yes,lps,auto,30.00,0.890,this\n",
            # anatomy: level SSIM misses, and a fit that ran to its limit
            "c,anatomy,0,32.00,0.890,no,wavelet,0.3,30.00,0.890,earlier\n",
            # phantoms: −0.50 dB is within the bound, −0.51 is not
            "d,phantom,0,44.50,0.990,yes,tv,0.03,45.00,0.995,this\n",
            "e,phantom,0,44.49,0.999,yes,tv,0.03,45.00,0.995,this\n",
        ],
    )
    scans = {s.row: s for s in dvc.load(path)}
    assert scans["a"].psnr_median == 1.0 and scans["a"].ssim_median == 0.001
    assert scans["a"].verdict == "met"
    assert scans["b"].verdict == "not met (PSNR)"
    assert scans["c"].verdict == "not met (SSIM, stopping)" and scans["c"].earlier
    assert scans["d"].verdict == "met"
    assert scans["e"].verdict == "not met (PSNR)"
    table = dvc.markdown(list(scans.values()))
    assert "| c ¹ |" in table and "| **+1.00** |" in table


def test_a_bad_kind_is_refused(dvc, tmp_path):
    path = _table(tmp_path, ["a,thorax,0,31,0.9,yes,tv,0.1,30,0.89,this\n"])
    with pytest.raises(ValueError, match="unknown kind"):
        dvc.load(path)


def test_the_figure_is_written(dvc, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fig" / "gaps.png"
    dvc.plot(dvc.load(), out)
    assert out.stat().st_size > 10_000
    assert [f.name for f in out.parent.iterdir()] == ["gaps.png"]  # no temporary file left


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    script = ROOT / "examples" / "dip_vs_cs.py"
    bad = tmp_path / "bad.csv"
    bad.write_text("row,kind\na,anatomy\n", encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    for args in (
        [str(tmp_path / "missing.csv")],
        [str(bad)],
    ):
        r = subprocess.run(
            [sys.executable, str(script), "--csv", *args], capture_output=True, text=True
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("dip_vs_cs.py: error:")
    r = subprocess.run(
        [sys.executable, str(script), "--plot", str(blocker / "fig.png")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "cannot write" in r.stderr
