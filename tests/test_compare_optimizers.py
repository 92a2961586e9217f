"""Smoke test of experiments/compare_optimizers.py on a tiny budget: table, curves, results."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_compare_optimizers_writes_table_and_curves(tmp_path):
    proc = subprocess.run(
        [sys.executable, "experiments/compare_optimizers.py", f"--workdir={tmp_path}", "--models=linear",
         "--optimizers=sgd,examples/lion.py:lion", "--seeds=2", "--epochs=linear=2",
         "--max_train_examples=linear=256", "--validation_size=128"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    runs = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["optimizer"], r["seed"]) for r in runs) == [
        ("examples/lion.py:lion", 0), ("examples/lion.py:lion", 1), ("sgd", 0), ("sgd", 1)]
    assert all(len(r["history"]) == 2 and 0 <= r["test_accuracy"] <= 1 for r in runs)
    assert min(r["test_accuracy"] for r in runs if r["optimizer"] == "sgd") > 0.3  # 4 steps of SGD: 54-59 % measured; chance is 10 %.
    table = (tmp_path / "results.md").read_text()
    assert "| linear (2 epochs x 256 images) | lion (plug-in) | 0.0003 |" in table
    assert "| sgd | 0.1 |" in table and "Seeds 0, 1" in table
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
