"""K models in one vmapped program equal K separate runs; sweeps, tables, ensembles, resume."""

import csv
import dataclasses

import jax
import numpy as np
import pytest

from conftest import assert_same_run, run_cli, train_interrupted, without_timing
from jaxdigits import backend, checkpoint, data, drivers, ensemble, inputs
from jaxdigits import members, runs, step, train
from jaxdigits.config import Config, validate
from jaxdigits.errors import UserError
from jaxdigits.metrics import read_jsonl

# Dropout and augmentation on: each member's keys must be its own single run's keys.
SEEDS = Config(model="mlp", hidden=(32,), epochs=2, batch_size=64, max_train_examples=256,
               validation_size=200, dropout=0.1, augment_shift=1, eval_batch_size=500,
               num_models=4, driver="step")
SWEEP = Config(model="linear", optimizer="nesterov", schedule="warmup_cosine", epochs=2,
               batch_size=64, max_train_examples=256, validation_size=200, eval_batch_size=500,
               sweep="learning_rate=0.01,0.1;momentum=0.5,0.9", driver="step")


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("many") / "seeds"
    return path, train.train_and_evaluate(SEEDS, path, quiet=True)


@pytest.mark.slow
def test_four_seeds_in_one_program_equal_four_separate_runs(seed_run, tmp_path):
    path, result = seed_run
    configs = members.member_configs(SEEDS)
    assert [c.seed for c in configs] == [0, 1, 2, 3] and {c.num_models for c in configs} == {1}
    for k, config in enumerate(configs):
        single = train.train_and_evaluate(config, tmp_path / str(k), quiet=True)
        member = result["members"][k]
        assert member["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1e-4)
        assert member["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
        assert_same_run(tmp_path / str(k), path / f"member_{k}")
    assert len({m["test_accuracy"] for m in result["members"]}) > 1  # Different seeds, models.


@pytest.mark.slow
def test_evaluate_reports_members_and_the_ensemble(seed_run):
    path, result = seed_run
    out = ensemble.evaluate_ensemble(members.member_paths(path), which="latest")
    assert [m["accuracy"] for m in out["members"]] == [m["test_accuracy"] for m in result["members"]]
    logits = []
    for k in range(4):
        setup, params, _ = runs.load_run(path / f"member_{k}", "latest")
        images = jax.jit(setup.model.apply)(params, inputs.normalise(
            inputs.prepare_data(setup.config)[3][0], setup.mean, setup.std))
        logits.append(jax.nn.softmax(images))
    labels = inputs.prepare_data(SEEDS)[3][1]
    expected = (np.mean(logits, 0).argmax(-1) == labels).mean()
    assert out["ensemble"]["accuracy"] == pytest.approx(expected, abs=1e-4)
    assert out["ensemble"]["accuracy"] == pytest.approx(result["ensemble"]["test_accuracy"], abs=1e-4)
    assert out["ensemble"]["count"] == 10000 and out["ensemble"]["members"] == 4
    cli = run_cli("jaxdigits.evaluate", f"--workdir={path}", "--which=latest")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "member_3: mlp seed 3" in cli.stdout and "ensemble of 4 (mean probability), test" in cli.stdout
    val = ensemble.evaluate_ensemble(members.member_paths(path), split="validation")
    assert "ensemble" not in val  # Each seed carved its own validation split.


@pytest.mark.slow
def test_a_sweep_equals_separate_runs_and_writes_its_table(tmp_path):
    result = train.train_and_evaluate(SWEEP, tmp_path / "sweep", quiet=True)
    configs = members.member_configs(SWEEP)
    assert [(c.learning_rate, c.momentum) for c in configs] == [(0.01, 0.5), (0.01, 0.9),
                                                                 (0.1, 0.5), (0.1, 0.9)]
    for k in (0, 3):
        train.train_and_evaluate(configs[k], tmp_path / str(k), quiet=True)
        assert_same_run(tmp_path / str(k), tmp_path / "sweep" / f"member_{k}")
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["learning_rate"]) for r in rows] == [0.01, 0.01, 0.1, 0.1]
    assert [float(r["test_accuracy"]) for r in rows] == [m["test_accuracy"] for m in result["members"]]
    assert "| member_3 | 0.1 | 0.9 | 0 |" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_an_interrupted_many_model_run_resumes_exactly(tmp_path, monkeypatch):
    config = dataclasses.replace(SWEEP, sweep="learning_rate=0.01,0.1")
    whole = train.train_and_evaluate(config, tmp_path / "whole", quiet=True)
    train_interrupted(config, tmp_path / "cut", monkeypatch)
    resumed = train.train_and_evaluate(config, tmp_path / "cut", quiet=True, resume=True)
    assert resumed == whole
    for k in range(2):
        assert without_timing(read_jsonl(tmp_path / "cut" / f"member_{k}" / "metrics.jsonl")) \
            == without_timing(read_jsonl(tmp_path / "whole" / f"member_{k}" / "metrics.jsonl"))


def test_bad_sweeps_are_refused():
    with pytest.raises(UserError, match="--sweep can vary learning_rate"):
        members.parse_sweep("dropout=0.1,0.2")
    with pytest.raises(UserError, match="must be numbers"):
        members.parse_sweep("learning_rate=fast")
    with pytest.raises(UserError, match="--learning_rate must be positive"):
        members.member_configs(Config(sweep="learning_rate=0.1,-1"))
    with pytest.raises(UserError, match="--num_models must be at least 1"):
        validate(Config(num_models=0))


@pytest.mark.slow
def test_a_diverging_member_is_dropped_and_the_others_go_on(tmp_path, monkeypatch):
    """A learning rate that overflows in the first epoch: that member stops saving, leaves the
    ensemble and evaluate's members; the other member is its separate run, to float tolerance."""
    config = dataclasses.replace(SWEEP, optimizer="sgd", sweep="learning_rate=0.01,1e38")
    result = train.train_and_evaluate(config, tmp_path / "sweep", quiet=True)
    good, bad = result["members"]
    assert bad["diverged_in_epoch"] == 1 and bad["test_accuracy"] is None
    assert (tmp_path / "sweep" / "member_1" / "diverged.json").exists()
    assert checkpoint.saved_epochs(tmp_path / "sweep" / "member_1" / "checkpoints") == []
    single = train.train_and_evaluate(members.member_configs(config)[0], tmp_path / "0", quiet=True)
    assert_same_run(tmp_path / "0", tmp_path / "sweep" / "member_0")
    assert result["ensemble"]["members"] == 1
    assert result["ensemble"]["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1e-4)
    assert "the 1 that did not diverge" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert members.member_paths(tmp_path / "sweep") == [tmp_path / "sweep" / "member_0"]
    monkeypatch.setattr(drivers, "run_epoch", None)  # A complete run is rescored, not retrained.
    assert train.train_and_evaluate(config, tmp_path / "sweep", quiet=True) == result


@pytest.mark.slow
def test_a_run_whose_every_member_diverges_stops_with_one_sentence(tmp_path):
    proc = run_cli("jaxdigits.train", "--model=linear", "--optimizer=sgd", "--schedule=constant", "--epochs=2",
                   "--sweep=learning_rate=1e38,3e38", "--max_train_examples=256",
                   "--validation_size=200", "--quiet", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: training diverged for every member (in epochs 1, 1)")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cnn_members_looped_on_cpu_equal_separate_runs_and_the_vmapped_step(tmp_path):
    """On CPU conv-net members are looped inside the step (no grouped convolutions); either
    arrangement is the separate runs' math."""
    config = dataclasses.replace(SEEDS, model="cnn_tiny", hidden=(16,), num_models=2,
                                 max_train_examples=128)
    assert backend.member_loop(config.members, config.model) == (jax.default_backend() == "cpu")
    result = train.train_and_evaluate(config, tmp_path / "many", quiet=True)
    single = train.train_and_evaluate(members.member_configs(config)[1], tmp_path / "1", quiet=True)
    assert result["members"][1]["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
    assert_same_run(tmp_path / "1", tmp_path / "many" / "member_1")

    ds = data.load_dataset("mnist")
    group = members.make_members(config, ds)
    keys = [jax.random.split(jax.random.key(c.seed), 3) for c in group.configs]
    pool = inputs.to_device(ds.train_images, ds.train_labels)
    mean, std = np.asarray(group.mean), np.asarray(group.std)
    order = group.train_idx[:, :128]
    after = []
    for loop in (True, False):
        state = members.init_states(group, [k[0] for k in keys])
        acc = drivers.stack([step.zero_metrics()] * 2)
        run = drivers.make_many_runner(group.setup, "step", mean, std, loop)
        for start in (0, 1):
            state, acc = run(state, acc, pool, order, start, jax.numpy.stack([k[2] for k in keys]),
                             num_steps=1)
        after.append(state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *after)
