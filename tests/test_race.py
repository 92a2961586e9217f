"""The race end to end on the tiny workload: one program per optimizer, every output written."""

import json
import math

import pytest

from conftest import run_cli_cases
from jaxdigits import race, race_report


@pytest.mark.slow
def test_a_tiny_race_end_to_end(tmp_path):
    """Two optimizers, a built-in and the Lion plug-in, 1 study x 2 trials and 2 seeds."""
    result = race.race_workload("tiny", ["adamw", "examples/lion.py:lion"], {}, studies=1,
                                trials=2, seeds=2, log=lambda line: None)
    for name, res in result["optimizers"].items():
        tuning = res["tuning"]
        assert [p["members"] for p in tuning["programs"]] == [2]  # Both trials, one program.
        assert "learning_rate" in tuning["traced"]
        assert len(tuning["trials"]) == 2 and res["step_seconds"] > 0
        hits = [t["seconds_to_target"] for t in tuning["trials"]]
        assert tuning["score"] == min((math.inf if h is None else h for h in hits))
        seeds = res["seeds"]
        assert [m["seed"] for m in seeds["members"]] == [1000, 1001]
        assert all(0 <= m["test_accuracy"] <= 1 for m in seeds["members"])
        assert seeds["hit_share"] in (0.0, 0.5, 1.0)
    record = race_report.write(tmp_path / "out", [result], {"studies": 1}, "test",
                               table_json=tmp_path / "race_tiny.json")
    assert record["hardware"]["cpu"] and record["versions"]["jax"]
    for name in ("race.json", "race.md", "profile.png", "lr_tiny.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    text = (tmp_path / "out" / "race.json").read_text()
    assert "Infinity" not in text and "NaN" not in text  # Misses are null: standard JSON.
    table = json.loads((tmp_path / "race_tiny.json").read_text())
    assert table["page"] == "docs/race.md" and len(table["rows"]) == 2
    again = race_report.load(tmp_path / "out" / "race.json")
    assert again["workloads"][0]["optimizers"].keys() == result["optimizers"].keys()


@pytest.mark.slow  # A Python start with jax's import.
def test_race_mistakes_are_one_sentence(tmp_path):
    space = tmp_path / "space.json"
    space.write_text('{"adamw": {"learning_rate": {"min": 1, "max": 0.1}}}')
    cases = [(["--workloads=nope"], "unknown workload 'nope'"),
             (["--optimizers=nowhere.py:f"], "optimizer file nowhere.py does not exist"),
             (["--optimizers=lbfgs", "--baselines="], "unknown optimizer 'lbfgs'"),
             ([f"--space={space}"], "adamw's learning_rate range is not valid"),
             (["--baselines=", "--seeds=3"], "name at least one optimizer"),
             (["--seeds=0"], "--seeds must be at least 1")]
    results = run_cli_cases("jaxdigits.race", "jaxdigits.race:define_flags",
                            [([*args, f"--out={tmp_path / 'out'}"], None) for args, _ in cases])
    for (_, message), proc in zip(cases, results):
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
