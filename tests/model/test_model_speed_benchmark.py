"""The speed benchmark runs end to end (tiny preset, a few slices and steps) and writes its table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "model_speed.py"


def test_benchmark_writes_markdown_and_json(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("model_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    arguments = [
        "--preset",
        "tiny",
        "--slices",
        "6",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--out-dir",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", ["model_speed.py", *arguments])
    monkeypatch.setattr(module, "cpu_matmul_peak_tflops", lambda: 0.05)
    module.main()
    results = json.loads((tmp_path / "model_speed_cpu_tiny.json").read_text())
    assert results["inference_flops_per_slice"] > 0 and results["training"]["samples_per_s"] > 0
    assert results["inference"]["volume_time_extrapolated"] is True
    table = (tmp_path / "model_speed_cpu_tiny.md").read_text()
    assert "seconds per 256-slice volume" in table and "% of peak" in table
