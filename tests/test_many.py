"""K models in one vmapped program equal K separate runs; sweeps, tables, ensembles, resume."""

import csv
import dataclasses

import jax
import numpy as np
import pytest

from conftest import run_cli
from jaxdigits import checkpoint, ensemble, evaluate, many, optimizers, train
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


def _assert_same_run(single, member):
    """A member folder holds what the separate run wrote: metrics, parameters, optimizer state."""
    ra, rb = read_jsonl(single / "metrics.jsonl"), read_jsonl(member / "metrics.jsonl")
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert set(x) == set(y)
        for key in set(x) - {"seconds", "images_per_second"}:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
    setup, _, _ = evaluate.load_run(single, "latest")  # Loading builds no optimizer: add it.
    setup = setup._replace(tx=optimizers.make_optimizer(setup.config, setup.steps_per_epoch))
    target = train.init_state(setup, jax.random.key(0))
    a, _ = checkpoint.restore(single / "checkpoints", 2, target)
    b, _ = checkpoint.restore(member / "checkpoints", 2, target)  # Same structure: plain state.
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("many") / "seeds"
    return path, train.train_and_evaluate(SEEDS, path, quiet=True)


def test_four_seeds_in_one_program_equal_four_separate_runs(seed_run, tmp_path):
    path, result = seed_run
    configs = many.member_configs(SEEDS)
    assert [c.seed for c in configs] == [0, 1, 2, 3] and {c.num_models for c in configs} == {1}
    for k, config in enumerate(configs):
        single = train.train_and_evaluate(config, tmp_path / str(k), quiet=True)
        member = result["members"][k]
        assert member["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1e-4)
        assert member["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
        _assert_same_run(tmp_path / str(k), path / f"member_{k}")
    assert len({m["test_accuracy"] for m in result["members"]}) > 1  # Different seeds, models.


def test_evaluate_reports_members_and_the_ensemble(seed_run):
    path, result = seed_run
    out = ensemble.evaluate_ensemble(many.member_paths(path), which="latest")
    assert [m["accuracy"] for m in out["members"]] == [m["test_accuracy"] for m in result["members"]]
    logits = []
    for k in range(4):
        setup, params, _ = evaluate.load_run(path / f"member_{k}", "latest")
        images = setup.model.apply(params, train.normalise(
            train.prepare_data(setup.config)[3][0], setup.mean, setup.std))
        logits.append(jax.nn.softmax(images))
    labels = train.prepare_data(SEEDS)[3][1]
    expected = (np.mean(logits, 0).argmax(-1) == labels).mean()
    assert out["ensemble"]["accuracy"] == pytest.approx(expected, abs=1e-4)
    assert out["ensemble"]["accuracy"] == pytest.approx(result["ensemble"]["test_accuracy"], abs=1e-4)
    assert out["ensemble"]["count"] == 10000 and out["ensemble"]["members"] == 4
    cli = run_cli("jaxdigits.evaluate", f"--workdir={path}", "--which=latest")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "member_3: mlp seed 3" in cli.stdout and "ensemble of 4 (mean probability), test" in cli.stdout
    val = ensemble.evaluate_ensemble(many.member_paths(path), split="validation")
    assert "ensemble" not in val  # Each seed carved its own validation split.


def test_a_sweep_equals_separate_runs_and_writes_its_table(tmp_path):
    result = train.train_and_evaluate(SWEEP, tmp_path / "sweep", quiet=True)
    configs = many.member_configs(SWEEP)
    assert [(c.learning_rate, c.momentum) for c in configs] == [(0.01, 0.5), (0.01, 0.9),
                                                                 (0.1, 0.5), (0.1, 0.9)]
    for k in (0, 3):
        train.train_and_evaluate(configs[k], tmp_path / str(k), quiet=True)
        _assert_same_run(tmp_path / str(k), tmp_path / "sweep" / f"member_{k}")
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["learning_rate"]) for r in rows] == [0.01, 0.01, 0.1, 0.1]
    assert [float(r["test_accuracy"]) for r in rows] == [m["test_accuracy"] for m in result["members"]]
    assert "| member_3 | 0.1 | 0.9 | 0 |" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_an_interrupted_many_model_run_resumes_exactly(tmp_path, monkeypatch):
    config = dataclasses.replace(SWEEP, sweep="learning_rate=0.01,0.1")
    whole = train.train_and_evaluate(config, tmp_path / "whole", quiet=True)
    real_epoch = many.train_epoch

    def interrupted(*args, **kwargs):
        if "epoch 2/" in args[7]:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(many, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, tmp_path / "cut", quiet=True)
    monkeypatch.setattr(many, "train_epoch", real_epoch)
    resumed = train.train_and_evaluate(config, tmp_path / "cut", quiet=True, resume=True)
    assert resumed == whole
    for k in range(2):
        strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
                            for r in rs]
        assert strip(read_jsonl(tmp_path / "cut" / f"member_{k}" / "metrics.jsonl")) == strip(
            read_jsonl(tmp_path / "whole" / f"member_{k}" / "metrics.jsonl"))


def test_bad_sweeps_are_refused():
    with pytest.raises(UserError, match="--sweep can vary learning_rate"):
        many.parse_sweep("dropout=0.1,0.2")
    with pytest.raises(UserError, match="must be numbers"):
        many.parse_sweep("learning_rate=fast")
    with pytest.raises(UserError, match="--learning_rate must be positive"):
        many.member_configs(Config(sweep="learning_rate=0.1,-1"))
    with pytest.raises(UserError, match="--num_models must be at least 1"):
        validate(Config(num_models=0))
