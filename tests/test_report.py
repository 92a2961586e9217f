"""The evaluation report: its metrics against independent computations, its figures, and the CLI.

The trained run is a tiny linear model (2 epochs on 2,048 images) whose optimizer is a plug-in
registered only inside this process, so the CLI, run in a fresh process that has never heard of
it, proves that evaluating a run does not need its optimizer.
"""

import json

import jax
import matplotlib.image
import numpy as np
import optax
import pytest

from conftest import run_cli_cases
from jaxdigits import checkpoint, ensemble, evaluate, inputs, models, optimizers, plots, report, runs, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError

PLUGIN = "plugin_sgd_only_in_tests"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report") / "run"
    config = Config(model="linear", epochs=2, max_train_examples=2048, validation_size=1000,
                    optimizer=PLUGIN, learning_rate=0.5, schedule="constant")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optimizers, "OPTIMIZERS", dict(optimizers.OPTIMIZERS))
        optimizers.register_optimizer(PLUGIN, lambda lr, cfg: optax.sgd(lr))
        train.train_and_evaluate(config, workdir, quiet=True, allow_download=False)
    assert PLUGIN not in optimizers.OPTIMIZERS
    return workdir


def _assert_png(path, min_width, min_height):
    """The PNG opens, is at least this large, and is not blank (many distinct grey levels)."""
    pixels = matplotlib.image.imread(path)  # float [H, W, 4] in [0, 1]
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= min_height, (path, pixels.shape)
    grey = pixels[..., :3].mean(-1)
    assert grey.std() > 0.05 and len(np.unique(np.round(grey, 2))) > 20, path
    assert (grey < 0.5).mean() > 0.005, path  # Some dark ink: text, lines or digits.


def test_scores_match_a_hand_computed_example():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 2])
    confusion = report.confusion_matrix(labels, predictions, 4)  # Class 3: never seen, never predicted.
    np.testing.assert_array_equal(confusion[:3, :3], [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert confusion[3].sum() == confusion[:, 3].sum() == 0
    scores = report.class_scores(confusion)
    np.testing.assert_allclose(scores["precision"], [1 / 2, 2 / 3, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(scores["recall"], [1 / 2, 1, 1 / 2, 0], rtol=1e-6)
    np.testing.assert_allclose(scores["f1"], [1 / 2, 4 / 5, 2 / 3, 0], rtol=1e-6)
    avg = report.averages(scores)
    np.testing.assert_allclose(avg["macro_avg"]["recall"], (1 / 2 + 1 + 1 / 2) / 4, rtol=1e-6)
    np.testing.assert_allclose(avg["weighted_avg"]["precision"], (1 / 2 + 2 / 3 + 1) / 3, rtol=1e-6)
    assert report.mistaken_for(confusion) == [[(2, 1)], [(0, 1)], [], []]


def test_summary_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    n, c = 500, 5
    labels = rng.integers(0, c, n)
    logits = (rng.normal(size=(n, c)) + 2.0 * np.eye(c)[labels]).astype(np.float32)
    out = report.summarise(logits, labels, [f"c{i}" for i in range(c)], k=3)

    shifted = logits.astype(np.float64) - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    predictions = logits.argmax(1)
    np.testing.assert_allclose(out["loss"], -log_probs[np.arange(n), labels].mean(), rtol=1e-6)
    assert out["accuracy"] == np.mean(predictions == labels) and out["count"] == n
    confusion = np.zeros((c, c), int)
    for t, p in zip(labels, predictions):
        confusion[t, p] += 1
    assert out["confusion_matrix"]["counts"] == confusion.tolist()
    f1s, supports = [], []
    for k, row in enumerate(out["per_class"]):
        tp = sum(1 for t, p in zip(labels, predictions) if t == k and p == k)
        fp = sum(1 for t, p in zip(labels, predictions) if t != k and p == k)
        fn = sum(1 for t, p in zip(labels, predictions) if t == k and p != k)
        np.testing.assert_allclose([row["precision"], row["recall"], row["f1"]],
                                   [tp / (tp + fp), tp / (tp + fn), 2 * tp / (2 * tp + fp + fn)], rtol=1e-6)
        f1s.append(row["f1"])
        supports.append(tp + fn)
    np.testing.assert_allclose(out["macro_avg"]["f1"], np.mean(f1s), rtol=1e-6)
    np.testing.assert_allclose(out["weighted_avg"]["f1"], np.average(f1s, weights=supports), rtol=1e-6)
    for d, entry in enumerate(out["mistaken_for"]):  # Ranked counts of column d, off the diagonal.
        counts = [m["count"] for m in entry["true_classes"]]
        assert counts == sorted((confusion[t, d] for t in range(c) if t != d and confusion[t, d]), reverse=True)
    true_prob = np.exp(log_probs[np.arange(n), labels])
    for k, entry in enumerate(out["worst"]):
        expected = sorted(np.flatnonzero(labels == k), key=lambda i: true_prob[i])[:3]
        assert [e["index"] for e in entry["examples"]] == expected


def test_training_curves_of_one_epoch_without_validation(tmp_path):
    history = [{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8}]
    plots.save(plots.training_curves(history, "one epoch",
                                     {"epoch": 1, "loss": 0.4, "accuracy": 0.85, "label": "test"}),
               tmp_path / "curves.png")
    _assert_png(tmp_path / "curves.png", 600, 250)


def _snapshot(folder):
    """{relative path: (bytes, mtime_ns)} of every file under `folder`."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_cli_report_on_a_plugin_optimizer_run(run, tmp_path):
    out, out_json = tmp_path / "rep", tmp_path / "rep-json"
    before = _snapshot(run)
    args = [f"--workdir={run}", "--which=latest", "--worst_k=4", "--sample_class=3",
            "--num_samples=12"]
    proc, as_json = run_cli_cases("jaxdigits.evaluate", "jaxdigits.evaluate:define_flags", [
        ([*args, f"--report_dir={out}"], None), ([*args, f"--report_dir={out_json}", "--json"], None)])
    assert proc.returncode == 0 and as_json.returncode == 0, proc.stderr + as_json.stderr
    assert "Traceback" not in proc.stderr + as_json.stderr
    assert _snapshot(run) == before  # Re-scoring rewrites nothing of the run (metrics.jsonl too).
    rep = json.loads((out / "report.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert rep["count"] == 10000 and rep["accuracy"] == results["test_accuracy"]
    np.testing.assert_allclose(rep["loss"], results["test_loss"], rtol=1e-5)
    assert rep["run"]["optimizer"] == PLUGIN and rep["run"]["epoch"] == 2
    assert rep["run"]["scored"] == "latest checkpoint, epoch 2 of 2"
    assert [r["epoch"] for r in rep["history"]] == [1, 2]
    assert json.loads((out / "confusion_matrix.json").read_text()) == rep["confusion_matrix"]
    # The human ending: labelled lines, the same words train uses; no JSON on the terminal.
    assert "macro avg" in proc.stdout and "{" not in proc.stdout
    assert proc.stdout.strip().splitlines()[-5:] == [
        f"test accuracy {100 * rep['accuracy']:.2f} % (latest checkpoint, epoch 2 of 2)",
        f"  checkpoint  {run / 'checkpoints' / '2'}",
        f"  loss        {rep['loss']:.4f}",
        f"  images      10000 scored, {rep['errors']} wrong",
        f"  report      {out}/ (report.json, confusion_matrix.json, confusion_matrix.png, "
        "worst_examples.png, samples.png, training_curves.png)"]
    # --json: exactly one JSON object on stdout, the same numbers.
    brief = json.loads(as_json.stdout)
    assert brief == {"split": "test", "accuracy": rep["accuracy"], "loss": rep["loss"],
                     "count": 10000, "errors": rep["errors"],
                     "scored": "latest checkpoint, epoch 2 of 2",
                     "checkpoint": str(run / "checkpoints" / "2"), "epoch": 2, "epochs": 2,
                     "model": "linear", "dataset": "mnist", "report_dir": str(out_json)}

    # The whole pipeline against plain numpy on the same parameters.
    setup, params, _ = runs.load_run(run, "latest")
    images, labels = evaluate.split_data(run, setup.config, "test")
    logits = np.asarray(setup.model.apply(params, inputs.normalise(images, setup.mean, setup.std)))
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels, logits.argmax(1)), 1)
    assert rep["confusion_matrix"]["counts"] == confusion.tolist()
    np.testing.assert_allclose([r["recall"] for r in rep["per_class"]],
                               np.diag(confusion) / confusion.sum(1), rtol=1e-6)
    assert all(len(w["examples"]) == 4 for w in rep["worst"])

    _assert_png(out / "confusion_matrix.png", 600, 500)
    _assert_png(out / "worst_examples.png", 450, 1000)
    _assert_png(out / "samples.png", 800, 150)
    _assert_png(out / "training_curves.png", 800, 300)


@pytest.mark.slow
def test_validation_report_and_bad_options(run):
    setup, params, meta = runs.load_run(run)  # The plug-in optimizer is unknown here too.
    assert setup.tx is None
    rep = evaluate.report_run(run, split="validation", worst_k=2, num_samples=5)
    assert rep["count"] == 1000 and rep["split"] == "validation"
    assert (run / "report-validation" / "report.json").exists()
    assert sum(r["support"] for r in rep["per_class"]) == 1000
    images, labels = evaluate.split_data(run, setup.config, "validation")
    with pytest.raises(UserError, match="unknown class 'banana'"):
        report.make_report(setup, params, meta, images, labels, split="validation",
                           out_dir=run / "x", sample_class="banana")
    with pytest.raises(UserError, match=r"--worst_k must be in \[1, 20\] and --num_samples in"):
        report.make_report(setup, params, meta, images, labels, split="validation",
                           out_dir=run / "x", worst_k=0)
    folder, epoch = checkpoint.find(run, "latest")
    for model in [models.make_model("mlp"), models.make_model("linear", num_classes=5)]:
        wrong = model.init(jax.random.key(0), (28, 28, 1))  # Another structure, other shapes.
        with pytest.raises(UserError, match="do not fit the model its config describes"):
            checkpoint.restore_params(folder, epoch, wrong)



def test_the_scored_label_says_which_parameters(tmp_path):
    """The words evaluate (and train) print for the scored parameters, from the folder read."""
    for epoch in (3, 4, 5):
        (tmp_path / "checkpoints" / str(epoch)).mkdir(parents=True)
    meta = lambda folder, epoch, val=5000: {"checkpoint": str(tmp_path / folder / str(epoch)),
                                            "epoch": epoch,
                                            "config": {"epochs": 5, "validation_size": val}}
    assert report.scored_label(meta("best", 4)) == (
        "best checkpoint, epoch 4 of 5, chosen by validation accuracy")
    assert report.scored_label(meta("best", 4, val=0)) == (
        "best checkpoint, epoch 4 of 5, chosen by training loss")
    assert report.scored_label(meta("checkpoints", 5)) == "latest checkpoint, epoch 5 of 5"
    assert report.scored_label(meta("checkpoints", 3)) == (
        f"checkpoint {tmp_path / 'checkpoints' / '3'}, epoch 3 of 5")


def test_ensemble_ending_labels_each_member():
    result = {"split": "test", "members": [
        {"path": "runs/x/member_0", "model": "mlp", "seed": 0, "accuracy": 0.98, "loss": 0.07,
         "scored": "best checkpoint, epoch 9 of 10, chosen by validation accuracy"}],
        "ensemble": {"members": 1, "accuracy": 0.98, "count": 10000, "loss": 0.07}}
    assert ensemble.format_ensemble(result).splitlines() == [
        "runs/x/member_0: mlp seed 0, test accuracy 98.00 % (best checkpoint, epoch 9 of 10, "
        "chosen by validation accuracy), loss 0.0700",
        "ensemble of 1 (mean probability), test accuracy 98.00 % on all 10000 images, loss 0.0700"]
