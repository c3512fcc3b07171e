"""The benchmarks' quick tiers run end to end (their numbers are checked by reading them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
pytestmark = pytest.mark.slow


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_identifiability_smoke_tier_reports_every_method(tmp_path):
    out = _run(str(BENCHMARKS / "identifiability.py"), "--tier", "smoke", "--out", str(tmp_path))
    for method in ("ComparativeVI", "ContrastiveVI", "PCA"):
        assert method in out
    runs = pd.read_csv(tmp_path / "identifiability_runs.csv")
    assert set(runs["method"]) == {"ComparativeVI", "ContrastiveVI", "PCA"}
    assert runs["background R²"].between(-1, 1).all()
    report = (tmp_path / "identifiability.md").read_text()
    assert "## Targets" in report and "paired" in report
    assert (tmp_path / "identifiability.png").stat().st_size > 10_000


def test_speed_benchmark_runs_on_a_small_screen(tmp_path):
    _run(
        str(BENCHMARKS / "speed.py"),
        "--cells",
        "600",
        "--genes",
        "50",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--tag",
        "t",
    )
    report = (tmp_path / "speed_t.md").read_text()
    assert "training throughput ratio" in report
    assert (tmp_path / "speed_t.png").exists()
