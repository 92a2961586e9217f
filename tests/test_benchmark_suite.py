"""The benchmark: MFU against a peak, memory, a profile, and the suite's one record and table."""

import dataclasses
import importlib.util
import json

import pytest

from conftest import ROOT
from jaxdigits import bench_format, bench_suite, benchmark, peaks
from jaxdigits.config import Config
from jaxdigits.errors import UserError

SMALL = Config(model="linear", batch_size=64, max_train_examples=1024, validation_size=0)


def test_peak_table_matches_device_kinds_by_prefix():
    assert peaks.table_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert peaks.table_peak("NVIDIA A100-SXM4-40GB", "float32") == 156e12
    assert peaks.table_peak("TPU v5 lite", "bfloat16") == 197e12
    assert peaks.table_peak("cpu", "float32") is None
    assert peaks.table_peak("NVIDIA H100 80GB HBM3", "float64") is None


def test_suite_drivers_parse_and_refuse_nonsense():
    assert bench_suite.parse_drivers(["step", "unroll:8", "scan"]) == [
        ("step", 0), ("unroll", 8), ("scan", 0)]
    with pytest.raises(UserError, match="'loop:2' is not DRIVER or DRIVER:STEPS"):
        bench_suite.parse_drivers(["loop:2"])


@pytest.mark.slow
def test_suite_measures_every_combination_into_one_record(tmp_path):
    """Two dtypes x two drivers of the linear model: four rows, MFU against the CPU's measured
    matmul peak, memory, the fastest driver per setting, a table results/render.py renders; and
    a profile of two steps that TensorBoard and Perfetto can open."""
    combos = bench_suite.configs(SMALL, ["linear"], [64], ["float32", "bfloat16"],
                                 bench_suite.parse_drivers(["step", "scan:2"]))
    lines = []
    measure = lambda c: benchmark.benchmark(c, calls=2, repeats=1, profile_steps=2,
                                            profile_dir=tmp_path / f"{c.dtype}-{c.driver}")
    record = bench_suite.suite(combos, measure, "the command", "the machine", log=lines.append)
    assert record["table"] == "bench_suite_cpu" and len(record["rows"]) == len(lines) == 4
    assert {(r["dtype"], r["driver"]) for r in record["results"]} == {
        ("float32", "step"), ("float32", "scan"), ("bfloat16", "step"), ("bfloat16", "scan")}
    for r in record["results"]:
        assert 0 < r["mfu"] < 1 and "measured" in r["peak_source"]
        assert r["gflops_per_step"] > 0 and r["compile_seconds"] > 0
        assert r["program_bytes"] > 0 and r["peak_memory_bytes"] > r["program_bytes"]
        assert "resident-set" in r["peak_memory_source"]
        assert r["profile_steps"] == 2
        assert list((tmp_path / f"{r['dtype']}-{r['driver']}").glob("**/*.xplane.pb"))
        assert list((tmp_path / f"{r['dtype']}-{r['driver']}").glob("**/perfetto_trace.json.gz"))
    # A loop's body counts once in XLA's analysis of the compiled program; per step, both agree.
    flops = {r["driver"]: r["gflops_per_step"] for r in record["results"]
             if r["dtype"] == "float32"}
    assert flops["step"] == flops["scan"]
    assert [f["dtype"] for f in record["fastest_drivers"]] == ["float32", "bfloat16"]

    spec = importlib.util.spec_from_file_location("render", ROOT / "results" / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    text = render.render_table({**json.loads(json.dumps(record)), "_file": "x.json"})
    assert text.count("| `linear` |") == 4 and "Reproduce: `the command`" in text
    assert bench_format.format_suite(record["rows"]).count("\n") == 5


def test_suite_past_its_deadline_says_what_it_skipped():
    combos = bench_suite.configs(SMALL, ["linear", "mlp"], [64], ["float32"], [("step", 0)])
    with pytest.raises(UserError, match="measured nothing"):
        bench_suite.suite(combos, lambda c: {}, "cmd", "machine", deadline=0.0)


def test_benchmark_refuses_bad_suite_lists():
    with pytest.raises(UserError, match="unknown --dtype"):
        bench_suite.configs(SMALL, ["linear"], [64], ["float16"], [("step", 0)])
    with pytest.raises(UserError, match="--batch_size must be positive"):
        bench_suite.configs(dataclasses.replace(SMALL), ["linear"], [0], ["float32"], [("step", 0)])
