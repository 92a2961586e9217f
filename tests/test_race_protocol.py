"""The race's protocol, checked against values worked out by hand."""

import math

import pytest

from jaxdigits import protocol, race_runs, workloads
from jaxdigits.errors import UserError


def test_halton_points_are_mirrored_digits():
    # Base 2: 1 -> .1b = 0.5, 2 -> .01b = 0.25, 3 -> .11b = 0.75, 5 -> .101b = 0.625.
    assert [protocol.radical_inverse(i, 2) for i in (1, 2, 3, 5)] == [0.5, 0.25, 0.75, 0.625]
    # Base 3: 4 = 11 in base 3 -> 1/3 + 1/9 = 4/9; 5 = 12 -> 2/3 + 1/9 = 7/9.
    assert protocol.radical_inverse(4, 3) == pytest.approx(4 / 9)
    assert protocol.halton(5, 2) == pytest.approx([0.625, 7 / 9])


def test_trials_scale_the_points_onto_the_space_and_studies_do_not_share_them():
    space = {"learning_rate": {"min": 1e-4, "max": 1e-2, "scale": "log"},
             "momentum": {"min": 0.8, "max": 1.0, "scale": "linear"},
             "nesterov": {"value": True}}
    first, second = protocol.trials(space, 2, study=0)
    # Point 1 = (1/2, 1/3): lr = 10^(-4 + 2/2) = 1e-3, momentum = 0.8 + 0.2/3.
    assert first == pytest.approx({"learning_rate": 1e-3, "momentum": 0.8 + 0.2 / 3, "nesterov": True})
    # Point 2 = (1/4, 2/3): lr = 10^(-4 + 2/4).
    assert second["learning_rate"] == pytest.approx(10 ** -3.5)
    assert second["momentum"] == pytest.approx(0.8 + 0.4 / 3)
    # Study 1 takes points 3 and 4: (3/4, 1/9) and (1/8, 4/9).
    third, fourth = protocol.trials(space, 2, study=1)
    assert third["learning_rate"] == pytest.approx(10 ** -2.5)
    assert fourth["momentum"] == pytest.approx(0.8 + 0.2 * 4 / 9)


def test_fastest_trial_per_study_median_over_studies_and_misses_are_infinite():
    assert protocol.study_score([5.0, None, 3.0]) == 3.0
    assert protocol.study_score([None, None]) == math.inf
    assert protocol.median_score([3.0, math.inf, 4.0]) == 4.0
    assert protocol.median_score([math.inf, math.inf, 2.0]) == math.inf
    assert protocol.median_score([1.0, 2.0, 3.0, math.inf]) == 2.5


def test_confidence_interval_is_students_t():
    # Mean 3, sample sd sqrt(2.5), t(0.975, 4 dof) = 2.776445: half-width 2.776445 * sqrt(2.5 / 5).
    stat = protocol.mean_ci([1, 2, 3, 4, 5, None, math.inf])
    assert stat["n"] == 5 and stat["mean"] == 3.0
    assert stat["ci"] == pytest.approx(2.776445 * math.sqrt(0.5), rel=1e-6)
    assert protocol.mean_ci([]) == {"n": 0, "mean": None, "ci": None}
    assert protocol.mean_ci([2.0])["ci"] is None


def test_performance_profile():
    ratios = protocol.performance_ratios({"a": {"w1": 10.0, "w2": math.inf},
                                          "b": {"w1": 20.0, "w2": 5.0}})
    assert ratios == {"a": {"w1": 1.0, "w2": math.inf}, "b": {"w1": 2.0, "w2": 1.0}}
    assert protocol.profile(ratios["a"], [1, 2, 4]) == [0.5, 0.5, 0.5]
    assert protocol.profile(ratios["b"], [1, 1.9, 2]) == [0.5, 0.5, 1.0]


def test_only_float_hyperparameters_share_a_program():
    settings = [{"learning_rate": 1e-3, "rank": 2}, {"learning_rate": 1e-2, "rank": 3}]
    assert race_runs.split_traced(settings, True) == (["learning_rate"], [{"rank": 2}, {"rank": 3}])
    assert race_runs.split_traced(settings, False)[0] == []


@pytest.mark.parametrize("space, message", [
    ({"b1": {"min": 0.8, "max": 0.9}}, "must be an object with a learning_rate"),
    ({"learning_rate": {"min": 0.0, "max": 1.0}}, "range is not valid"),
    ({"learning_rate": {"min": 1e-2, "max": 1e-3}}, "range is not valid"),
    ({"learning_rate": {"max": 1e-3}}, "needs"),
])
def test_bad_search_spaces_are_one_sentence(space, message):
    with pytest.raises(UserError, match=message):
        workloads.check_space("adamw", space)


def test_trials_and_seeds_are_timed_from_their_steps():
    trials = [{"study": 0, "curve": [[10, 0.5], [20, 0.8]]},   # Hits at step 20: 20 x 0.5 s.
              {"study": 0, "curve": [[10, 0.7], [20, 0.74]]},  # Misses.
              {"study": 1, "curve": [[10, 0.9], [20, 0.9]]},   # Hits at 10, but 5 s > 4 s allowed.
              {"study": 2, "curve": [[10, 0.76], [20, 0.9]]}]
    scores = protocol.time_trials(trials, 0.75, step_seconds=0.5, max_seconds=4.0)
    assert [t["hit"] for t in trials] == [False, False, False, False]
    scores = protocol.time_trials(trials, 0.75, step_seconds=0.2, max_seconds=4.0)
    assert [t["steps_to_target"] for t in trials] == [20, None, 10, 10]
    assert scores == {"study_scores": [pytest.approx(4.0), pytest.approx(2.0), pytest.approx(2.0)],
                      "score": pytest.approx(2.0)}
    members = [{"hit_step": 10, "final_val_accuracy": 0.9, "test_accuracy": 0.8},
               {"hit_step": 30, "final_val_accuracy": 0.7, "test_accuracy": 0.6},
               {"hit_step": None, "final_val_accuracy": 0.5, "test_accuracy": 0.4}]
    summary = protocol.summarise_seeds(members, step_seconds=0.1, max_seconds=60)
    assert summary["hit_share"] == pytest.approx(2 / 3)
    assert summary["steps_to_target"]["mean"] == 20 and summary["seconds_to_target"]["mean"] == pytest.approx(2.0)
    # Two values 0.9 and 0.7 and a third 0.5: mean 0.7, sd 0.2, t(0.975, 2) = 4.302653.
    assert summary["final_val_accuracy"]["ci"] == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-6)


def test_races_of_one_workload_join_and_refuse_to_double_count():
    from jaxdigits import race_report

    part = lambda *names: {"workload": {"name": "w"}, "protocol": {"studies": 3},
                           "optimizers": {n: {} for n in names}}
    (joined,) = race_report.merge([part("adamw"), part("lion", "sgd")])
    assert sorted(joined["optimizers"]) == ["adamw", "lion", "sgd"]
    with pytest.raises(UserError, match="adamw raced twice"):
        race_report.merge([part("adamw"), part("adamw")])


def test_the_example_space_file_reads():
    from conftest import ROOT

    spaces = workloads.read_spaces(ROOT / "examples" / "race_space.json")
    space, generic = workloads.space_for("examples/lion.py:lion", spaces)
    assert not generic and space["b2"] == {"value": 0.99}
    (trial,) = protocol.trials(space, 1, 0)
    assert trial["b2"] == 0.99 and 1e-5 <= trial["learning_rate"] <= 1e-3
