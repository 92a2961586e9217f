"""The pieces of the accurate recipes: batch normalisation, the parameters' moving average, label
smoothing, mirroring and test-time augmentation, each through the step, resume, evaluate, export
and K models."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_run, restored_states, setup_on, train_interrupted, without_timing
from jaxdigits import evaluate, export, inputs, losses, members, models, predictor, runs, step
from jaxdigits import augment, recipes, train, tta
from jaxdigits.config import Config
from jaxdigits.metrics import read_jsonl

# Every piece on at once, small enough for seconds per run.
PARTS = Config(model="cnn_tiny", features=(4, 8), hidden=(16,), batch_norm=True, ema_decay=0.9,
               label_smoothing=0.1, tta_shift=1, tta_flip=True, augment_shift=1,
               augment_flip=True, dropout=0.1, epochs=2,
               batch_size=32, max_train_examples=256, validation_size=200, eval_batch_size=500,
               driver="step")


def test_label_smoothing_is_the_cross_entropy_against_smoothed_targets():
    logits = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    labels = np.array([0, 3, 9, 3, 1])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.full((5, 10), 0.2 / 10)
    targets[np.arange(5), labels] += 0.8
    expected = -(targets * log_p).sum(-1)
    got = losses.cross_entropy(logits=jnp.asarray(logits), labels=jnp.asarray(labels), smoothing=0.2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    plain = losses.cross_entropy(logits=jnp.asarray(logits), labels=jnp.asarray(labels))
    np.testing.assert_allclose(plain, -log_p[np.arange(5), labels], rtol=1e-5)


def _np_shift(images, dy, dx):
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_tta_scores_the_mean_of_the_shifted_predictions():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 8, 8, 1)).astype(np.float32)
    w = rng.normal(size=(64, 10)).astype(np.float32) / 100
    logits_fn = lambda x: jnp.reshape(x, (x.shape[0], -1)) @ w
    assert tta.offsets(1)[0] == (0, 0) and len(set(tta.offsets(2))) == 25
    for s in (1, 2):
        views = [_np_shift(images, dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
        probs = np.mean([np.asarray(jax.nn.softmax(logits_fn(v))) for v in views], axis=0)
        np.testing.assert_allclose(np.exp(tta.predict(logits_fn, jnp.asarray(images), s)), probs,
                                   rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(tta.predict(logits_fn, images, 0), logits_fn(images))
    np.testing.assert_array_equal(tta.shift(images, 2, -1), _np_shift(images, 2, -1))
    mirrored = images[:, :, ::-1]
    views = [_np_shift(x, dy, dx) for x in (images, mirrored) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    probs = np.mean([np.asarray(jax.nn.softmax(logits_fn(v))) for v in views], axis=0)
    np.testing.assert_allclose(np.exp(tta.predict(logits_fn, jnp.asarray(images), 1, flip=True)),
                               probs, rtol=1e-5, atol=1e-7)
    probs = np.mean([np.asarray(jax.nn.softmax(logits_fn(v))) for v in (images, mirrored)], axis=0)
    np.testing.assert_allclose(np.exp(tta.predict(logits_fn, jnp.asarray(images), 0, flip=True)),
                               probs, rtol=1e-5, atol=1e-7)


def test_random_flip_mirrors_about_half_the_images_and_nothing_else():
    images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (1000, 6, 5, 1)), jnp.uint8)
    out = np.asarray(jax.jit(augment.random_flip)(jax.random.key(0), images))
    same = (out == np.asarray(images)).all(axis=(1, 2, 3))
    mirrored = (out == np.asarray(images)[:, :, ::-1]).all(axis=(1, 2, 3))
    assert out.dtype == np.uint8 and (same ^ mirrored).all()  # Each image one or the other.
    assert 450 < mirrored.sum() < 550
    np.testing.assert_array_equal(out, augment.random_flip(jax.random.key(0), images))


def test_the_moving_average_follows_the_parameters_by_its_decay():
    rest = {"ema": {"w": jnp.array([1.0, 2.0])}, "batch_stats": {"m": jnp.zeros(2)}}
    params = {"w": jnp.array([3.0, 0.0])}
    early = step.update_ema(rest, params, jnp.asarray(0), 0.999)  # decay min(0.999, 1 / 10)
    np.testing.assert_allclose(early["ema"]["w"], 0.1 * np.array([1, 2]) + 0.9 * np.array([3, 0]),
                               rtol=1e-6)
    late = step.update_ema(rest, params, jnp.asarray(10**6), 0.9)
    np.testing.assert_allclose(late["ema"]["w"], [1.2, 1.8], rtol=1e-6)
    assert late["batch_stats"] is rest["batch_stats"]
    assert step.update_ema({}, params, 0, 0.9) == {}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_statistics_are_threaded_through_the_step(mnist, dtype):
    setup, data = setup_on(mnist, dataclasses.replace(PARTS, dtype=dtype), 256)
    state = step.init_state(setup, jax.random.key(0))
    params, rest = models.split(state.params)
    assert set(rest) == {"batch_stats", "ema"} and "BatchNorm_0" in rest["batch_stats"]
    # The optimizer sees the trained parameters alone: no statistics or averages in its state.
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(setup.tx.init(params))
    batch_step = jax.jit(step.make_batch_step(setup))
    after = state
    for i in range(3):
        idx = jnp.arange(32 * i, 32 * (i + 1))
        after, _ = batch_step(after, step.zero_metrics(), data, idx, jax.random.key(1),
                              setup.mean, setup.std)
    new_params, new_rest = models.split(after.params)
    stats = new_rest["batch_stats"]["BatchNorm_0"]
    assert not np.allclose(stats["mean"], rest["batch_stats"]["BatchNorm_0"]["mean"])
    assert {x.dtype for x in jax.tree.leaves(after.params)} == {jnp.dtype(jnp.float32)}
    # The average is neither the old nor the new parameters; scoring reads it and the statistics.
    kernel = lambda p: np.asarray(p["Conv_0"]["kernel"])
    assert not np.allclose(kernel(new_rest["ema"]), kernel(new_params))
    images = inputs.normalise(data.images[:64], setup.mean, setup.std)
    by_hand = setup.model.apply(models.join(new_rest["ema"], {"batch_stats": new_rest["batch_stats"]}),
                                images)
    np.testing.assert_array_equal(setup.model.apply(after.params, images), by_hand)
    assert not np.allclose(setup.model.apply(after.params, images),
                           setup.model.apply(after.params, images, train=True, key=jax.random.key(2)))


@pytest.mark.slow
def test_a_run_with_every_piece_resumes_exactly_and_scores_alike_everywhere(tmp_path, monkeypatch):
    whole = train.train_and_evaluate(PARTS, tmp_path / "whole", quiet=True)
    train_interrupted(PARTS, tmp_path / "cut", monkeypatch)
    assert train.train_and_evaluate(PARTS, tmp_path / "cut", quiet=True, resume=True) == whole
    assert without_timing(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == without_timing(
        read_jsonl(tmp_path / "whole" / "metrics.jsonl"))
    jax.tree.map(np.testing.assert_array_equal,
                 *restored_states([tmp_path / "whole", tmp_path / "cut"], 2))
    setup, _, _ = runs.load_run(tmp_path / "whole", "latest")

    scored = evaluate.evaluate_run(tmp_path / "whole", which="latest")
    assert scored["accuracy"] == whole["test_accuracy"]
    assert scored["loss"] == pytest.approx(whole["test_loss"], rel=1e-5)
    manifest, program, params = export.export_run(tmp_path / "whole", which="latest")
    assert manifest["accuracy"]["test"] == whole["test_accuracy"]
    assert "ema" not in str(manifest["params"])  # The average is exported in place of the params.
    assert manifest["parameters"] == models.count_params(setup.model.init(jax.random.key(0), (28, 28, 1)))
    model = predictor.from_parts(manifest, program, params)
    _, _, _, (images, labels) = inputs.prepare_data(setup.config)
    probs = model.predict(images[:100].astype(np.float32) / 255)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-5)


@pytest.mark.slow
def test_k_models_with_batch_norm_and_averages_equal_their_single_runs(tmp_path):
    config = dataclasses.replace(PARTS, num_models=2)
    result = train.train_and_evaluate(config, tmp_path / "many", quiet=True)
    single_config = members.member_configs(config)[1]
    single = train.train_and_evaluate(single_config, tmp_path / "1", quiet=True)
    assert result["members"][1]["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
    assert result["members"][1]["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1e-4)
    assert_same_run(tmp_path / "1", tmp_path / "many" / "member_1")


def test_the_ablation_takes_out_each_ingredient_a_recipe_has():
    from benchmarks import ablation

    config = Config(model="cnn", batch_norm=True, ema_decay=0.999, augment_shift=2, tta_shift=1)
    assert ablation.present(config) == ["batch_norm", "ema", "tta", "shift"]
    assert ablation.present(Config(model="cnn_deep", batch_norm=True)) == []  # Always has it.
    assert ablation.present(Config(augment_flip=True, tta_flip=True)) == ["tta", "flip"]
    # The table reads validation accuracy: asked to train on every training image, the ablation
    # holds out the default 5,000 again; any other split given stands.
    assert ablation.base_config("accurate", "") == recipes.config("accurate")
    assert ablation.base_config("accurate", "validation_size=0") == recipes.config("accurate")
    assert ablation.base_config("accurate", "validation_size=3000").validation_size == 3000
    results = {"whole": [{"val_accuracy": 0.99, "seconds": 10.0}, {"val_accuracy": 0.992, "seconds": 12.0}],
               "ema": [{"val_accuracy": 0.985, "seconds": 9.0}, {"val_accuracy": 0.987, "seconds": 9.0}]}
    assert ablation.table("accurate", results) == [["`accurate`", "99.10", "", "11", "2"],
                                                    ["without ema", "98.60", "-0.50", "9", "2"]]
    # A recipe taken apart with overrides says so in its first row.
    assert ablation.table("accurate", results, "augment_rotate=10")[0][0] == \
        "`accurate` with `augment_rotate=10`"
    rotated = ablation.base_config("accurate", "augment_rotate=10,augment_scale=0.1")
    assert ablation.present(rotated) == ["batch_norm", "ema", "label_smoothing", "tta",
                                         "rotate_scale", "shift"]
