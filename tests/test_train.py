"""Training: the step and its drivers, evaluation of every example, runs on real MNIST."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import count_compiles, run_driver, setup_on
from jaxdigits import checkpoint, evaluate, inputs
from jaxdigits import metrics, optimizers, runs, scoring, step, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError
from jaxdigits.metrics import read_jsonl


def _setup(mnist, n=1024, **overrides):
    return setup_on(mnist, Config(**{"model": "mlp", "batch_size": 64, "epochs": 1, **overrides}), n)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_drivers_compute_the_same_steps(mnist, model):
    """Same data, keys, dropout and augmentation whatever the driver; the programs differ only in
    float rounding. Momentum SGD keeps that rounding at its own size (Adam divides by sqrt(v) and
    can blow a 1e-9 gradient difference on a near-zero gradient up to a 1e-6 parameter change)."""
    setup, data = _setup(mnist, n=512, model=model, dropout=0.1, augment_shift=2,
                         optimizer="momentum", learning_rate=0.05, schedule="constant")
    reference, ref_acc = run_driver(setup, data, "step", 6, 1)
    for driver, k in [("unroll", 3), ("scan", 6), ("unroll", 4)]:
        state, acc = run_driver(setup, data, driver, 6, k)
        assert int(state.step) == 6 and int(acc["count"]) == 6 * 64
        assert int(acc["correct"]) == int(ref_acc["correct"])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     state.params, reference.params)


def test_pixel_stats_match_numpy_over_several_chunks():
    images = np.random.default_rng(0).integers(0, 256, (3000, 28, 28, 1), dtype=np.uint8)  # 2.2 chunks
    mean, std = inputs.pixel_stats(images)
    values = images.astype(np.float64) / 255.0
    np.testing.assert_allclose([mean, std], [values.mean(), values.std()], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 7, 2**31 + 5, 2**32 - 1])
def test_run_keys_are_the_python_ints_keys_from_one_program(seed):
    with count_compiles(None) as compiles:
        got = step.run_keys(seed)
    assert len(got) == 3 and compiles() <= 1  # Op by op: four programs.
    want = jax.random.split(jax.random.key(seed), 3)  # Op by op, the seed a Python int.
    for k, key in enumerate(got):
        np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(want[k]))


def test_epoch_order_at_the_low_optimisation_level_is_the_permutation():
    key = jax.random.key(3)
    for epoch in (1, 2):
        want = jax.random.permutation(jax.random.fold_in(key, epoch), 55_000)  # Op by op.
        got = inputs.epoch_order(key, epoch, 55_000)
        assert got.dtype == jnp.int32
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_step_compiles_once(mnist):
    setup, data = _setup(mnist)
    with count_compiles("run") as compiles:
        run_driver(setup, data, "unroll", 12, 4)  # Three calls with different start offsets.
    assert compiles() == 1


def test_evaluation_scores_every_example(mnist):
    setup, _ = _setup(mnist, eval_batch_size=1000)
    params = step.init_state(setup, jax.random.key(0)).params
    images, labels = mnist.test_images[:1001], mnist.test_labels[:1001]
    result = scoring.make_evaluator(setup)(params, inputs.to_device(images, labels))
    x = inputs.normalise(jnp.asarray(images), setup.mean, setup.std)
    logits = np.asarray(setup.model.apply(params, x))
    assert result["count"] == 1001
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == labels), abs=1e-12)
    expected_loss = float(np.mean(-np.asarray(jax.nn.log_softmax(logits))[np.arange(1001), labels]))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


@pytest.mark.slow
def test_short_cnn_run_on_real_mnist_learns(tmp_path):
    config = Config(model="cnn", epochs=2, max_train_examples=4096, validation_size=2000)
    final = train.train_and_evaluate(config, tmp_path / "run", quiet=True)
    history = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["val_accuracy"] > 0.93
    assert final["test_count"] == 10000 and final["test_accuracy"] > 0.93


def test_checkpoint_round_trip_is_exact(mnist, tmp_path):
    setup, data = _setup(mnist, optimizer="adam")
    state, _ = run_driver(setup, data, "unroll", 4, 2)
    saver = checkpoint.Checkpointer(tmp_path, keep=2)
    meta = {"epoch": 1, "history": [{"epoch": 1, "val_accuracy": 0.5}]}
    saver.save(1, state, meta, is_best=True)
    saver.close()
    target = step.init_state(setup, jax.random.key(9))
    for which in ["checkpoints", "best"]:
        restored, restored_meta = checkpoint.restore(tmp_path / which, 1, target)
        assert restored_meta == meta
        assert jax.tree.structure(restored) == jax.tree.structure(state)
        jax.tree.map(np.testing.assert_array_equal, restored, state)


def test_keeps_the_last_few_and_the_best(tmp_path, mnist):
    setup, data = _setup(mnist)
    state = step.init_state(setup, jax.random.key(0))
    saver = checkpoint.Checkpointer(tmp_path, keep=2)
    for epoch, acc in enumerate([0.5, 0.9, 0.6, 0.7], start=1):
        saver.save(epoch, state, {"epoch": epoch}, is_best=acc == 0.9)
    saver.close()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [3, 4]
    assert [p.name for p in (tmp_path / "best").iterdir() if p.name.isdigit()] == ["2"]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    """An optimizer that turns the parameters to NaN in epoch 2 stops the run there."""
    def poisoned(lr, cfg):
        def update_fn(updates, state, params=None):
            bad = state >= 8  # 8 steps per epoch below: epoch 2 goes wrong.
            updates = jax.tree.map(lambda g: jnp.where(bad, jnp.nan, -0.01 * g), updates)
            return updates, state + 1
        return optax.GradientTransformation(lambda p: jnp.zeros([], jnp.int32), update_fn)

    monkeypatch.setitem(optimizers.OPTIMIZERS, "poisoned", poisoned)
    config = Config(model="linear", optimizer="poisoned", epochs=3, batch_size=128,
                    max_train_examples=1024, validation_size=1000)
    with pytest.raises(UserError, match="diverged in epoch 2"):
        train.train_and_evaluate(config, tmp_path, quiet=True)
    assert checkpoint.find(tmp_path, "latest")[1] == 1
    _, params, meta = runs.load_run(tmp_path, "latest")
    assert meta["epoch"] == 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1]


LINEAR = Config(model="linear", epochs=2, max_train_examples=2048, validation_size=1000)


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """A finished LINEAR run, shared by the tests below that read it or copy it: (workdir, final)."""
    workdir = tmp_path_factory.mktemp("linear") / "run"
    return workdir, train.train_and_evaluate(LINEAR, workdir, quiet=True)


def _copy(run, tmp_path):
    """A copy of a shared run, for a test that writes into it."""
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.slow
def test_same_seed_same_numbers(linear_run, tmp_path):
    a = linear_run[1]
    b = train.train_and_evaluate(LINEAR, tmp_path / "b", quiet=True)
    c = train.train_and_evaluate(dataclasses.replace(LINEAR, seed=1), tmp_path / "c", quiet=True)
    assert a == b and a != c


@pytest.mark.slow
def test_resume_of_a_finished_run_changes_nothing(linear_run, tmp_path):
    workdir, first = _copy(linear_run[0], tmp_path), linear_run[1]
    before = (workdir / "metrics.jsonl").read_text()
    again = train.train_and_evaluate(LINEAR, workdir, quiet=True, resume=True)
    assert first == again
    assert len(read_jsonl(workdir / "metrics.jsonl")) == 3  # The 2 epochs and the test record.
    assert (workdir / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_a_workdir_with_another_config_is_refused(linear_run):
    with pytest.raises(UserError, match="different config: model='mlp'"):
        train.train_and_evaluate(dataclasses.replace(LINEAR, model="mlp"), linear_run[0], quiet=True)
    assert runs.read_config(linear_run[0]) == LINEAR  # Refused before anything was written.


@pytest.mark.slow
def test_evaluate_reproduces_the_test_score(linear_run):
    workdir, final = linear_run
    result = evaluate.evaluate_run(workdir, which="latest")
    assert result["count"] == 10000
    assert result["accuracy"] == final["test_accuracy"] and result["loss"] == pytest.approx(final["test_loss"])
    assert json.loads((workdir / "results.json").read_text()) == final


@pytest.mark.slow
def test_a_run_without_validation_keeps_the_best_by_train_loss(tmp_path, capsys):
    config = Config(model="linear", epochs=2, max_train_examples=2048, validation_size=0)
    final = train.train_and_evaluate(config, tmp_path, quiet=True)
    assert "best/ (best by training loss)." in capsys.readouterr().out
    history = read_jsonl(tmp_path / "metrics.jsonl")
    assert "val_accuracy" not in history[0] and final["test_count"] == 10000
    best_epoch = min(history[:2], key=lambda r: r["train_loss"])["epoch"]
    assert checkpoint.find(tmp_path, "best")[1] == best_epoch
    with pytest.raises(UserError, match="has no validation examples"):
        evaluate.evaluate_run(tmp_path, split="validation")


def test_default_workdirs_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runs.default_workdir(Config())
    first.mkdir(parents=True)
    second = runs.default_workdir(Config())
    assert second != first and not second.exists() and second.parent == first.parent


def test_write_atomic_gives_a_normal_file_mode(tmp_path):
    metrics.write_atomic(tmp_path / "a.json", "{}")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "a.json").read_text() == "{}"
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask  # Not mkstemp's 0600.
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # No temporary file left behind.
