"""Experiment 8: linear vs MLP vs CNN on MNIST (and Fashion-MNIST when it is on the machine).

    python -m experiments.exp8_model_zoo
    -> 1 epoch over 8,192 training images, all 10,000 test images (seed 0):
       | dataset       | model  | parameters | test accuracy | training s | whole run s |
       | mnist         | linear |      7,850 |       80.69 % |        8.7 |        18.3 |
       | mnist         | mlp    |    407,050 |       89.92 % |       11.7 |        21.1 |
       | mnist         | cnn    |    454,922 |       93.88 % |       72.2 |        94.9 |
       | fashion_mnist | linear |      7,850 |       72.62 % |        6.7 |         8.6 |
       | fashion_mnist | mlp    |    407,050 |       79.83 % |       10.8 |        13.3 |
       | fashion_mnist | cnn    |    454,922 |       80.63 % |       51.8 |        61.2 |
       (shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14 from other jobs: 72 s CPU,
       227 s wall; the times in the table are inflated alike. On an idle machine the CNN trains at
       about 900 images/s (README), i.e. about 9 s for this budget.)

Each model is jaxdigits' own (`models.make_model`), trained by the library's
`train.train_and_evaluate` with its default recipe (Adam 1e-3, batch 128, warm-up then cosine
decay, no augmentation) on the same small budget, so that the whole table takes about a minute
on 2 CPU cores: by default 1 epoch over the first 8,192 training images (64 steps; a multiple of
the 8-step compiled chunk, so each model compiles once) and no validation split. Every model is
scored on the full 10,000-image test set. Time is the wall time of the whole run (loading and
checking the data, compiling, training, scoring the test set); the training time is that of the
epoch(s), compilation included. With the full recipes (README: 55,000 images, 10 or 5 epochs)
the same models reach 92.5 / 98.3 / 99.4 % on MNIST; raise --train_examples and --epochs to
approach them. Datasets not available offline (Fashion-MNIST comes from Debian's
dataset-fashion-mnist, /usr/share/datasets/fashion-mnist) are skipped, and the skip is recorded.
Outputs: results.json, table.md, model_zoo.png, and one jaxdigits run folder per dataset and model
under runs/.
"""

import dataclasses
import pathlib
import shutil
import time

import jax
import numpy as np
from absl import app, flags

from experiments import _common
from jaxdigits import cli, data, models, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError, report_user_errors
from jaxdigits.metrics import read_jsonl, write_atomic

SECTION = "Linear, MLP and CNN on MNIST and Fashion-MNIST with the library's recipe"


def run_one(config: Config, workdir: pathlib.Path, ds: data.Dataset) -> dict:
    """Trains and scores one model in a fresh jaxdigits run folder; returns its table row."""
    if (workdir / "config.json").exists():
        shutil.rmtree(workdir)  # A previous run of this experiment: start it again, timed.
    start = time.perf_counter()
    final = train.train_and_evaluate(config, workdir, allow_download=False, quiet=True)
    seconds = time.perf_counter() - start
    epochs = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train_loss" in r]
    model = models.make_model(config.model, num_classes=ds.num_classes)
    shape = tuple(ds.train_images.shape[1:])
    params = jax.eval_shape(lambda key: model.init(key, shape), jax.random.key(0))  # No compute.
    return {"dataset": config.dataset, "model": config.model,
            "parameters": models.count_params(params),
            "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
            "test_count": final["test_count"], "train_seconds": sum(r["seconds"] for r in epochs),
            "seconds": seconds, "final_train_loss": epochs[-1]["train_loss"]}


def table(rows) -> str:
    lines = ["| dataset | model | parameters | test accuracy (10,000 images) | training s "
             "| whole run s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['model']} | {r['parameters']:,} | "
                     f"{100 * r['test_accuracy']:.2f} % | {r['train_seconds']:.1f} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(path, rows, budget):
    fig, axes = _common.subplots(1, 2, width=5.6)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    names = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / len(datasets)
    for i, dataset in enumerate(datasets):
        sub = {r["model"]: r for r in rows if r["dataset"] == dataset}
        xs = [j + i * width for j, m in enumerate(names) if m in sub]
        accs = [100 * sub[m]["test_accuracy"] for m in names if m in sub]
        secs = [sub[m]["seconds"] for m in names if m in sub]
        bars = axes[0, 0].bar(xs, accs, width, label=dataset)
        axes[0, 0].bar_label(bars, fmt="%.1f", fontsize=8)
        axes[0, 1].bar(xs, secs, width, label=dataset)
    for ax in axes[0]:
        ax.set_xticks([j + width * (len(datasets) - 1) / 2 for j in range(len(names))], names)
        ax.set(xlabel="model")
        ax.legend(fontsize=8)
    low = min(100 * r["test_accuracy"] for r in rows)
    axes[0, 0].set(ylabel="test accuracy, %", ylim=(max(low - 10, 0), 100),
                   title=f"Test accuracy ({budget})")
    axes[0, 1].set(ylabel="seconds (whole run)", title="Wall time, 2 CPU cores")
    return _common.save_figure(fig, path)


def run(workdir, *, datasets=("mnist", "fashion_mnist"), model_names=("linear", "mlp", "cnn"),
        train_examples=8192, epochs=1, seed=0) -> dict:
    _common.check_positive(train_examples=train_examples, epochs=epochs)
    unknown = [m for m in model_names if m not in models.MODELS]
    if unknown or not model_names:
        raise UserError(f"--models must name some of {', '.join(models.MODELS)}, got "
                        f"{','.join(model_names)}.")
    if not datasets:
        raise UserError("--datasets must name at least one dataset.")
    workdir = _common.prepare_workdir(workdir)
    rows, skipped = [], {}
    for dataset in datasets:
        if dataset not in data.REGISTRY and not dataset.startswith("tfds:"):
            raise UserError(f"unknown dataset {dataset!r}; choose from {', '.join(data.REGISTRY)} "
                            "or tfds:NAME.")
        try:
            ds = data.load_dataset(dataset, allow_download=False)
        except UserError as e:  # Not on this machine (or unreadable): recorded, not fatal.
            skipped[dataset] = str(e)
            print(f"skipped {dataset}: {e}")
            continue
        for name in model_names:
            config = dataclasses.replace(Config(), dataset=dataset, model=name, epochs=epochs,
                                         max_train_examples=train_examples, validation_size=0,
                                         seed=seed)
            rows.append(run_one(config, workdir / "runs" / f"{dataset}-{name}", ds))
    budget = f"{epochs} epoch(s) over {train_examples:,} training images"
    results = {"experiment": "exp8_model_zoo",
               "flags": {"datasets": list(datasets), "models": list(model_names),
                         "train_examples": train_examples, "epochs": epochs, "seed": seed},
               "budget": budget + ", Adam 1e-3, batch 128, warm-up + cosine; full test set",
               "rows": rows, "skipped": skipped}
    if rows:
        plot(workdir / "model_zoo.png", rows, budget)
    write_atomic(workdir / "table.md", table(rows))
    accuracies = np.asarray([row["test_accuracy"] for row in rows])
    return _common.finish(workdir, results, state={"test_accuracy": accuracies},
                          curves={"test_accuracy": [row["test_accuracy"] for row in rows]})


def headline(r) -> str:
    parts = []
    for dataset in dict.fromkeys(row["dataset"] for row in r["rows"]):
        accs = [f"{100 * row['test_accuracy']:.2f}" for row in r["rows"]
                if row["dataset"] == dataset]
        parts.append(f"{dataset} {' / '.join(accs)} %")
    models = " / ".join(dict.fromkeys(row["model"] for row in r["rows"]))
    return (f"{models} with the library's recipe on a budget ({r['budget'].split(',')[0]}), full "
            f"test sets: " + ", ".join(parts))


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, datasets=tuple(f.datasets), model_names=tuple(f.models),
            train_examples=f.train_examples, epochs=f.epochs, seed=f.seed)
    print(f"\nBudget: {r['budget']}.\n\n{table(r['rows'])}")
    print(f"Wrote {f.workdir}/results.json, table.md, model_zoo.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp8_model_zoo")
    flags.DEFINE_list("datasets", ["mnist", "fashion_mnist"], "Datasets; those not found offline "
                      "are skipped.")
    flags.DEFINE_list("models", list(models.MODELS), "Models to compare.")
    flags.DEFINE_integer("train_examples", 8192, "Training images used (the first of the split).")
    flags.DEFINE_integer("epochs", 1, "Epochs over them.")
    flags.DEFINE_integer("seed", 0, "Seed of every run.")
    app.run(report_user_errors(main))
