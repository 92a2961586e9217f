"""The lessons beyond the first nine (experiments/exp10 ... exp18) and the page that lists them all.

Each lesson is checked on tiny settings against the text's own number where the text gives one
(to the tolerance stated here) and otherwise against an independent computation (numpy, scipy);
the committed full runs (results/lessons.json, written by `python -m experiments.run_all`) are
checked against the text's numbers too, so a page that claims a number is a page that met it.
"""

import json
import sys

import numpy as np
import pytest

from conftest import ROOT
from jaxdigits import classic

sys.path.insert(0, str(ROOT))  # `experiments` is a folder beside the package.

from experiments import (_common, exp10_by_hand, exp11_backprop, exp12_nonlinearity,  # noqa: E402
                         exp13_line_search, exp14_averages, exp15_conv_worked, exp16_text_mnist,
                         exp17_unsupervised, exp18_more_learners, run_all)

LESSONS_JSON = json.loads((ROOT / "results" / "lessons.json").read_text())


def test_every_lesson_is_run_listed_and_described():
    scripts = sorted(p.stem for p in (ROOT / "experiments").glob("exp*.py"))
    assert sorted(run_all.LESSONS) == scripts
    for name in scripts:
        module = __import__(f"experiments.{name}", fromlist=["run"])
        assert module.SECTION and callable(module.headline) and callable(module.run), name
    commands = [row[2] for row in LESSONS_JSON["rows"]]
    assert commands == [f"`python -m experiments.{n}`" for n in run_all.LESSONS]


def test_the_committed_runs_meet_the_text():
    """The full runs behind docs/lessons.md, against the numbers the text prints."""
    checks = LESSONS_JSON["text_numbers"]
    assert set(checks) == {"exp10_by_hand", "exp11_backprop", "exp13_line_search",
                           "exp16_text_mnist"}
    for lesson, numbers in checks.items():
        for name, c in numbers.items():
            text = c["text"]
            low, high = (text, text) if not isinstance(text, list) else text
            assert low - c["tolerance"] <= c["measured"] <= high + c["tolerance"], (lesson, name, c)


def test_every_figure_is_committed_and_small():
    figures = json.loads((ROOT / "results" / "lessons_figures.json").read_text())["rows"]
    assert len(figures) >= 30
    for _, cell in figures:
        path = ROOT / "docs" / cell.split("](")[1].rstrip(")")
        assert path.is_file() and path.stat().st_size < 300_000, path


@pytest.mark.slow
def test_backprop_by_hand_is_the_books_graph_and_jax_grad(tmp_path):
    r = exp11_backprop.run(tmp_path, steps=50)
    g = r["graph"]
    assert (g["loss"], g["grad_w"], g["grad_b"]) == (3.0, 2.0, 1.0)  # The book's numbers, exact.
    assert (g["jax_grad_w"], g["jax_grad_b"]) == (2.0, 1.0)
    assert max(r["two_layer"]["max_abs_difference"].values()) < 1e-12  # float64
    assert r["two_layer"]["final_loss"] < 0.5 * r["two_layer"]["initial_loss"]
    with exp11_backprop.jax.enable_x64():  # The state was float64: its digest must match.
        target = exp11_backprop.make_problem(64, 5, 8, 3, 0)[0]
        state, meta = _common.load_state(tmp_path, target)  # The checkpoint loads back.
    assert meta["experiment"] == "exp11_backprop" and state["w1"].shape == (5, 8)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 50
    assert any((tmp_path / "tensorboard").iterdir())


def test_line_search_worked_examples(tmp_path):
    r = exp13_line_search.run(tmp_path)
    text, armijo = r["backtracking_text"], r["backtracking_armijo"]
    assert [t["alpha"] for t in text["tried"]] == pytest.approx([0.5, 0.4, 0.32])
    assert text["alpha"] == pytest.approx(0.32, abs=1e-12) and text["x"] == pytest.approx(2.6)
    assert armijo["alpha"] == pytest.approx(0.32) and armijo["x"] == pytest.approx(2.6)
    xs = [0.1]  # Gradient descent with f'(x) = 4x^3 - 9x^2 written out, in float64.
    for _ in range(20):
        xs.append(xs[-1] - 0.1 * (4 * xs[-1] ** 3 - 9 * xs[-1] ** 2))
    np.testing.assert_allclose(r["gradient_descent"]["iterates"], xs, rtol=1e-5)
    assert r["gradient_descent"]["contraction_at_minimum"] == pytest.approx(-1.025, abs=1e-5)
    assert r["exact"]["t"] == pytest.approx(0.25) and r["exact"]["x"] == pytest.approx(2.25)
    assert r["exact"]["max_abs_cosine_successive_gradients"] < 1e-9


def test_moving_average_and_ewma(tmp_path):
    r = exp14_averages.run(tmp_path, points=120)
    x = np.random.default_rng(1).normal(size=50)
    np.testing.assert_allclose(exp14_averages.moving_average(x, 5)[4:],
                               np.convolve(x, np.ones(5) / 5, "valid"))
    assert r["optax_vs_by_hand"] < 1e-5  # optax.ema is the recursion written out,
    np.testing.assert_allclose(exp14_averages.ewma(x, 0.9, debias=True),  # and jaxdigits.classic's.
                               classic.ema(x, 0.9, debias=True), rtol=1e-5, atol=1e-6)
    weights = 0.1 * 0.9 ** np.arange(50)[::-1]  # EWMA as a weighted sum of every past point
    assert exp14_averages.ewma(x, 0.9, debias=False)[-1] == pytest.approx(weights @ x, abs=1e-5)
    mse = r["mse_vs_signal"]
    assert mse["moving average"] < mse["noisy series"] and mse["EWMA"] < mse["noisy series"]
    assert r["mean_error_first_20"]["EWMA"] < r["mean_error_first_20"]["EWMA, bias-corrected"]


@pytest.mark.slow
def test_convolution_arrays_against_scipy(tmp_path):
    from scipy.signal import correlate2d

    r = exp15_conv_worked.run(tmp_path, steps=100, test_size=100)
    a = r["arrays"]
    np.testing.assert_array_equal(a["identity_output"], exp15_conv_worked.SLASH)
    for k in ("/", "\\"):
        np.testing.assert_allclose(a["outputs"][k], correlate2d(a["image"], a["kernels"][k],
                                                                "same"), atol=1e-6)
    assert r["kernels_unchanged"] and r["train_size"] == 60 and r["train_accuracy"] == 1.0
    p = np.asarray(r["examples"]["probabilities"])
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    assert p[0, 0] > 0.9 and p[1, 1] > 0.9


@pytest.mark.slow
def test_nonlinearity_minima_and_momentum(tmp_path):
    r = exp12_nonlinearity.run(tmp_path, points=300, steps=600)
    grid = np.linspace(-2, 2, 400001)  # The minima by brute force, independently of np.roots.
    values = exp12_nonlinearity.surface(np.stack([grid, np.zeros_like(grid)]))
    left, right = grid < 0, grid > 0
    assert r["minima"]["global"][0] == pytest.approx(grid[left][values[left].argmin()], abs=1e-4)
    assert r["minima"]["local"][0] == pytest.approx(grid[right][values[right].argmin()], abs=1e-4)
    gd, momentum = r["descent"].values()
    assert gd["basin"] == "local" and momentum["basin"] == "global"
    assert r["moons"]["linear"]["test_accuracy"] < 0.95 < r["moons"]["mlp"]["test_accuracy"]


@pytest.mark.slow
def test_training_by_hand_pieces(tmp_path):
    """The pieces against numpy; the book's 0.81 is the committed full run's (above): this
    network starts with every weight positive and learns slowly, so 32 steps only lower the loss."""
    r = exp10_by_hand.run(tmp_path, epochs=2, train_examples=2048)
    assert r["steps"] == 32 and r["test_count"] == 10000
    assert r["last_epoch_loss"] < 0.7 * r["first_loss"]
    layer = exp10_by_hand.naive_dense(exp10_by_hand.jax.random.key(0), 784, 512)
    assert 0 <= float(layer["w"].min()) and float(layer["w"].max()) < 0.1 and not layer["b"].any()
    sizes = [len(y) for _, y in exp10_by_hand.batches(np.zeros(300), np.arange(300), 128)]
    assert sizes == [128, 128, 44]  # In order, the last batch partial, as the book's generator.
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])  # Keras' clipped loss, written in numpy:
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    expected = -np.log(clipped[[0, 1], [0, 2]] / clipped.sum(1))
    got = exp10_by_hand.per_sample_loss(p, np.array([0, 2]))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_text_presets_are_the_texts():
    convnet = exp16_text_mnist.preset_config("tf1_convnet", iterations=5000, seed=0)
    assert (convnet.model, convnet.hidden, convnet.dropout, convnet.optimizer) == (
        "cnn", (1024,), 0.5, "rmsprop")
    assert (convnet.learning_rate, convnet.batch_size, convnet.epochs) == (1e-3, 100, 10)
    keras = exp16_text_mnist.preset_config("keras_softmax", iterations=0, seed=0)
    assert (keras.model, keras.optimizer, keras.learning_rate, keras.batch_size, keras.epochs) == (
        "linear", "adam", 0.1, 64, 3)
    softmax = exp16_text_mnist.preset_config("tf1_softmax", iterations=20000, seed=0)
    assert softmax.learning_rate == pytest.approx(1e-4 * 100) and softmax.epochs == 40
    with pytest.raises(exp16_text_mnist.UserError, match="multiple of 500"):
        exp16_text_mnist.preset_config("tf1_convnet", iterations=4999, seed=0)


@pytest.mark.slow
def test_keras_softmax_preset_on_a_budget(tmp_path):
    r = exp16_text_mnist.run(tmp_path, presets=("keras_softmax",), max_train_examples=4096)
    row = r["presets"]["keras_softmax"]
    assert row["iterations"] == 3 * (4096 // 64) and row["test_count"] == 10000
    assert row["test_accuracy"] > 0.8
    saved = json.loads((tmp_path / "keras_softmax" / "results.json").read_text())
    assert saved["test_accuracy"] == row["test_accuracy"]
    assert (tmp_path / "keras_softmax" / "checkpoints").is_dir()


@pytest.mark.slow
def test_unsupervised_on_a_few_images(tmp_path, tiny_run):
    r = exp17_unsupervised.run(tmp_path, examples=400, hierarchical_examples=200,
                               cnn_workdir=str(tiny_run[0]), ks=(2, 20), ica_iterations=50)
    from jaxdigits import data

    images = data.load_dataset("mnist", allow_download=False).test_images[:400]
    x = images.reshape(400, -1) / 255
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)  # PCA's variance from numpy's SVD
    np.testing.assert_allclose(r["pca"]["explained_variance_ratio"], (s ** 2 / (s ** 2).sum())[:50],
                               rtol=1e-4)
    assert r["kmeans"]["10"]["purity"] > 0.4 and r["embeddings"]["dimension"] == 128
    assert r["embeddings"]["kmeans10"]["purity"] > r["kmeans"]["10"]["purity"]
    inertias = [r["kmeans"][k]["inertia"] for k in ("2", "10", "20")]
    assert inertias == sorted(inertias, reverse=True)


def test_regression_metrics_and_learners(tmp_path):
    r = exp18_more_learners.run(tmp_path, train_examples=500, test_examples=300, points=60)
    y, p = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
    m = exp18_more_learners.regression_metrics(y, p)
    assert m["mse"] == pytest.approx(np.mean((y - p) ** 2))
    assert m["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert r["svr"]["rbf"]["rmse"] < 0.5 * r["svr"]["linear"]["rmse"]
    assert r["svc"]["test_accuracy"] > 0.8 and r["svc"]["test_count"] == 300
    assert np.asarray(r["svc"]["confusion"]).sum() == 300
    assert r["multilabel"]["exact_match"] > 0.7
