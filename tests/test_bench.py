import os

import torch

from mridip.bench import machine, operator_benchmark


def test_operator_benchmark_reports_its_size_timings_and_their_ratios():
    r = operator_benchmark(matrix=24, coils=2, frames=2, spokes=5, repeats=1)
    assert r["size"] == {"matrix": 24, "coils": 2, "frames": 2, "spokes": 5}
    for key in ("nufft_autograd_s", "toeplitz_s", "fft_floor_s", "setup_kernel_s"):
        assert isinstance(r[key], float), key
    assert r["speedup_toeplitz_vs_nufft"] == r["nufft_autograd_s"] / r["toeplitz_s"]
    assert r["toeplitz_over_floor"] == r["toeplitz_s"] / r["fft_floor_s"]
    m = machine()
    assert m["cores"] == os.cpu_count() and m["torch"] == torch.__version__


def test_bench_quick_json_via_cli(tmp_path):
    """``mridip bench --quick --json`` end to end: every section, JSON on stdout and on disk, the
    PSNR-against-time plot beside it. The numbers are not asserted, the structure is."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("mridip", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [exe, "bench", "--quick", "--json", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    printed = json.loads(r.stdout)  # stdout is the JSON alone; the table went to stderr
    assert "quality, radial cine" in r.stderr
    report = json.loads(out.read_text())
    assert printed.keys() == report.keys()
    assert report["quick"] is True and report["machine"]["cores"] == os.cpu_count()
    from mridip.bench import QUALITY_METHODS, SECTIONS

    assert set(SECTIONS) <= set(report)
    q = report["quality"]
    assert set(q["size"]) == {"matrix", "coils", "frames", "spokes"}
    expected = [m for m in QUALITY_METHODS if m != "bart" or shutil.which("bart")]
    assert list(q["methods"]) == expected
    for name, row in q["methods"].items():
        for key in ("seconds", "psnr", "ssim", "peak_mib"):
            assert isinstance(row[key], float), (name, key)
        assert "psnr_gain_vs_cgsense" in row
        if name in ("dip", "tddip", "gip", "mridip"):
            assert len(row["trace"]) >= 2 and all(len(p) == 2 for p in row["trace"])
    st = report["stop"]  # the time-to-stop section runs in --quick like the others
    assert st["size"]["matrix"] == 32 and "mridip" in st["methods"]
    for name in ("dip", "tddip", "gip", "mridip"):
        row = st["methods"][name]
        assert row["steps_run"] >= 1
        assert row["step_s"] == row["seconds"] / row["steps_run"]
        assert isinstance(row["stopped_early"], bool)
    op = report["operator"]
    for r in op:  # the ratio is of the two timings in the same row
        assert r["speedup_toeplitz_vs_nufft"] == r["nufft_autograd_s"] / r["toeplitz_s"]
    assert "gip_vs_reference" in report["generator"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert (tmp_path / "bench_stop.png").stat().st_size > 10_000


def test_bench_plan_sections_and_methods():
    """A full run leaves the hours-long time-to-stop section out unless it is named; --quick
    runs every section; --methods picks the methods of the sections that reconstruct."""
    import pytest

    from mridip.bench import OPT_IN_SECTIONS, SECTIONS, bench_plan
    from mridip.errors import ConfigError

    full, kw = bench_plan(quick=False, only=None, methods=None)
    assert "stop" in OPT_IN_SECTIONS and "stop" not in full and kw == {}
    assert set(full) == set(SECTIONS) - set(OPT_IN_SECTIONS)
    assert bench_plan(quick=True, only=None, methods=None)[0] == list(SECTIONS)
    names, kw = bench_plan(quick=False, only="stop, quality", methods="mridip,bart")
    assert names == ["stop", "quality"] and kw == {"methods": ("mridip", "bart")}
    for only, methods in [("nope", None), (",", None), ("stop", "mridip,nope"), ("fit", "dip")]:
        with pytest.raises(ConfigError):
            bench_plan(quick=False, only=only, methods=methods)


def test_bench_bad_method_is_one_line_exit_2(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("mridip", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [exe, "bench", "--only", "stop", "--methods", "mridip,nope", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
