"""The benchmarks start and finish at their smallest sizes (a merge once moved a decorator off
`benchmarks.common.running_service` and no benchmark could start, unseen until the figures were
wanted). Figures are not checked here: benchmarks print them (docs/operations.md)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_module_imports():
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__)]
    assert "bench_request" in names
    for name in names:
        importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize(
    "args",
    [
        ["benchmarks.bench_request", "--requests", "30", "--rounds", "1"],
        ["benchmarks.bench_sms", "--recipients", "20"],
    ],
    ids=lambda args: args[0],
)
def test_benchmark_runs_at_its_smallest_size(args):
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "per" in done.stdout
