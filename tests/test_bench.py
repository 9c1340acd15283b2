from mridip.bench import machine, operator_benchmark


def test_operator_benchmark_structure():
    r = operator_benchmark(matrix=24, coils=2, frames=2, spokes=5, repeats=1)
    for key in ("nufft_autograd_s", "toeplitz_s", "fft_floor_s", "setup_kernel_s"):
        assert r[key] > 0
    assert r["speedup_toeplitz_vs_nufft"] == r["nufft_autograd_s"] / r["toeplitz_s"]
    m = machine()
    assert m["cores"] >= 1 and m["torch"]


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
    assert report["quick"] is True and report["machine"]["cores"] >= 1
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
    op = report["operator"]
    assert all(row["speedup_toeplitz_vs_nufft"] > 0 for row in op)
    assert "gip_vs_reference" in report["generator"]
    assert out.with_suffix(".png").stat().st_size > 10_000
