"""Experiment 18: other supervised learners: a support vector classifier on MNIST, linear and RBF
support vector regression in 1-D, the regression metrics, and a multilabel classifier.

    python -m experiments.exp18_more_learners
    -> see docs/lessons.md

With scikit-learn, pixels / 255 flattened to 784:
- SVC (RBF kernel, C = 5, gamma "scale") trained on the first 5,000 training images and scored
  on all 10,000 test images, with its confusion matrix;
- SVR on y = sin(x) + noise (sd 0.1), 200 points in [0, 5]: the linear kernel can only draw a
  line, the RBF kernel follows the curve; each scored on 200 held-out points by MSE, MAE and
  RMSE (sklearn.metrics, checked against numpy in the tests) and R^2;
- multilabel: each digit gets two labels at once, "large" (>= 7) and "odd", and a k-nearest
  neighbours classifier (k = 5; it handles several labels natively) predicts both, scored by
  the per-label accuracy, the exact-match ratio and the macro F1.
Outputs: results.json, svr.png, svc_confusion.png, metrics.jsonl, tensorboard/ and
checkpoints/ (the fitted models' arrays).
"""

import time

import numpy as np
from absl import flags

from experiments import _common
from jaxdigits import cli, data

SECTION = "Other supervised learners: SVC, linear and RBF SVR, regression metrics, multilabel"


def regression_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 5, n))[:, None]
    return x, np.sin(x[:, 0]) + rng.normal(0, 0.1, n)


def regression_metrics(y_true, y_pred) -> dict:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    mse = float(mean_squared_error(y_true, y_pred))
    return {"mse": mse, "mae": float(mean_absolute_error(y_true, y_pred)),
            "rmse": float(np.sqrt(mse)), "r2": float(r2_score(y_true, y_pred))}


def svr(points: int, seed: int):
    from sklearn.svm import SVR

    x, y = regression_data(points, seed)
    x_test, y_test = regression_data(points, seed + 1)
    fitted = {"linear": SVR(kernel="linear", C=1.0, epsilon=0.1).fit(x, y),
              "rbf": SVR(kernel="rbf", C=10.0, gamma=1.0, epsilon=0.1).fit(x, y)}
    scores = {k: regression_metrics(y_test, m.predict(x_test)) for k, m in fitted.items()}
    return fitted, scores, (x, y)


def svc(train_x, train_y, test_x, test_y):
    from sklearn.metrics import confusion_matrix
    from sklearn.svm import SVC

    start = time.perf_counter()
    model = SVC(C=5.0, kernel="rbf", gamma="scale").fit(train_x, train_y)
    predicted = model.predict(test_x)
    return model, {"test_accuracy": float(np.mean(predicted == test_y)),
                   "test_count": len(test_y), "support_vectors": int(model.n_support_.sum()),
                   "seconds": time.perf_counter() - start,
                   "confusion": confusion_matrix(test_y, predicted)}


def multilabel(train_x, train_y, test_x, test_y) -> dict:
    from sklearn.metrics import f1_score
    from sklearn.neighbors import KNeighborsClassifier

    def targets(y):
        return np.stack([y >= 7, y % 2 == 1], 1)  # [n, 2]: "large", "odd"

    predicted = KNeighborsClassifier(5).fit(train_x, targets(train_y)).predict(test_x)
    truth = targets(test_y)
    return {"labels": ["large (>= 7)", "odd"],
            "accuracy_per_label": (predicted == truth).mean(0),
            "exact_match": float((predicted == truth).all(1).mean()),
            "f1_macro": float(f1_score(truth, predicted, average="macro"))}


def plot_svr(path, fitted, scores, x, y):
    fig, axes = _common.subplots(1, 1, width=6.5)
    ax = axes[0, 0]
    grid = np.linspace(0, 5, 300)[:, None]
    ax.plot(x[:, 0], y, ".", color="gray", label="training points")
    ax.plot(grid[:, 0], np.sin(grid[:, 0]), "k:", label="sin(x)")
    for name, model in fitted.items():
        ax.plot(grid[:, 0], model.predict(grid),
                label=f"SVR {name}: test RMSE {scores[name]['rmse']:.3f}")
    ax.set(xlabel="x", ylabel="y", title="Support vector regression")
    ax.legend(fontsize=8)
    return _common.save_figure(fig, path)


def plot_confusion(path, confusion, accuracy):
    fig, axes = _common.subplots(1, 1, width=5.2, height=4.6)
    ax = axes[0, 0]
    ax.imshow(np.log1p(confusion), cmap="Blues")
    for (r, c), v in np.ndenumerate(confusion):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title=f"SVC (RBF) on MNIST: {100 * accuracy:.2f} %")
    return _common.save_figure(fig, path)


def run(workdir, *, train_examples=5000, test_examples=0, points=200, seed=0) -> dict:
    _common.check_positive(train_examples=train_examples, points=points)
    workdir = _common.prepare_workdir(workdir)
    ds = data.load_dataset("mnist", allow_download=False)
    flat = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255
    train_x, train_y = flat(ds.train_images[:train_examples]), ds.train_labels[:train_examples]
    test_images = ds.test_images[:test_examples] if test_examples else ds.test_images
    test_x, test_y = flat(test_images), ds.test_labels[:len(test_images)]
    fitted, scores, (x, y) = svr(points, seed)
    model, svc_scores = svc(train_x, train_y, test_x, test_y)
    results = {
        "experiment": "exp18_more_learners",
        "flags": {"train_examples": train_examples, "test_examples": test_examples,
                  "points": points, "seed": seed},
        "svc": svc_scores, "svr": scores,
        "multilabel": multilabel(train_x, train_y, test_x, test_y),
    }
    plot_svr(workdir / "svr.png", fitted, scores, x, y)
    plot_confusion(workdir / "svc_confusion.png", svc_scores["confusion"],
                   svc_scores["test_accuracy"])
    state = {"svr_linear": {"coef": fitted["linear"].coef_,
                            "intercept": fitted["linear"].intercept_},
             "svr_rbf": {"dual_coef": fitted["rbf"].dual_coef_,
                         "support_vectors": fitted["rbf"].support_vectors_},
             "svc_support_per_class": model.n_support_}
    return _common.finish(workdir, results, state=state)


def headline(r) -> str:
    s, lin, rbf, m = r["svc"], r["svr"]["linear"], r["svr"]["rbf"], r["multilabel"]
    return (f"SVC (RBF, {r['flags']['train_examples']:,} training images): "
            f"{100 * s['test_accuracy']:.2f} % on {s['test_count']:,} test images; SVR on sin(x) + "
            f"noise: linear MSE {lin['mse']:.3f} / MAE {lin['mae']:.3f} / RMSE {lin['rmse']:.3f}, "
            f"RBF {rbf['mse']:.4f} / {rbf['mae']:.3f} / {rbf['rmse']:.3f}; multilabel k-NN "
            f"(large, odd): exact match {100 * m['exact_match']:.1f} %, macro F1 "
            f"{m['f1_macro']:.3f}")


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, train_examples=f.train_examples, seed=f.seed)
    print(headline(r) + f". Wrote {f.workdir}/results.json, svr.png, svc_confusion.png.")


def define():
    _common.define_workdir_flag("exp18_more_learners")
    flags.DEFINE_integer("train_examples", 5000, "Training images for the SVC and k-NN.")
    flags.DEFINE_integer("seed", 0, "Seed of the regression data.")


if __name__ == "__main__":
    cli.run(main, define)
