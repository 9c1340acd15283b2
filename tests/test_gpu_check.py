"""The prepared GPU check (``bench/gpu-check.sh``) is checked on the CPU as far as it can be."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mridip.bench import bench_plan

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu-check.sh"


def _dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={"OUT": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"},
        cwd=SCRIPT.parents[1],
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_plans_every_part_with_valid_bench_options(tmp_path: Path) -> None:
    res = _dry_run(tmp_path, "--dry-run")
    assert res.returncode == 0, res.stderr
    cmds = [line[2:] for line in res.stdout.splitlines() if line.startswith("+ ")]
    assert any("pytest" in c and "-m cuda" in c and "test_gpu_path.py" in c for c in cmds)
    benches = [c for c in cmds if " bench " in c]
    assert len(benches) == 3 and all("--device cuda" in c for c in benches)
    for c in benches:
        only = re.search(r"--only (\S+)", c)
        methods = re.search(r"--methods (\S+)", c)
        assert only is not None
        # the same validation the CLI applies: unknown sections or methods would raise
        names, _ = bench_plan(False, only.group(1), methods.group(1) if methods else None)
        assert names
    assert {re.search(r"--only (\S+)", c).group(1) for c in benches} == {  # type: ignore[union-attr]
        "fit,generator",
        "operator",
        "stop",
    }


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_time_limits_add_up_to_eight_minutes() -> None:
    limits = [int(m) for m in re.findall(r"^\s*run \w+ (\d+) ", SCRIPT.read_text(), re.M)]
    assert len(limits) == 4 and sum(limits) <= 480


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_rejects_an_unknown_option(tmp_path: Path) -> None:
    res = _dry_run(tmp_path, "--fast")
    assert res.returncode == 2 and "unknown option --fast" in res.stderr
