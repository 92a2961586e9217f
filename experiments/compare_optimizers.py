"""SGD, momentum, Nesterov, RMSProp, Adam and a plugged-in Lion on MNIST, same budget, several seeds.

    nice -n 10 python experiments/compare_optimizers.py --workdir=runs/compare_optimizers

Each optimizer trains the linear model and the CNN with `train.train_and_evaluate` under the
same budget (epochs, batch 128, training examples, warm-up + cosine schedule), at its own
conventional learning rate (`--learning_rates`; not tuned here), for each seed; the test
accuracy is over all 10,000 test images. Writes to --workdir: `curves.png` (train loss and
validation accuracy per epoch, mean over seeds with the min-max band), `results.md` (the table:
mean and standard deviation over seeds) and `results.json`. The default budget fits this
project's busy 2-core CPU in about 15 minutes: the linear model on all 55,000 training images,
the CNN on a 2,048-image subset only. Result and machine: BUILD_NOTES.md, docs/optimizers.md.
"""

import json
import pathlib
import statistics
import time

from absl import app, flags, logging

from jaxdigits import train
from jaxdigits.config import Config
from jaxdigits.errors import report_user_errors
from jaxdigits.metrics import write_atomic

_WORKDIR = flags.DEFINE_string("workdir", None, "Runs, curves and the table go here.", required=True)
_OPTIMIZERS = flags.DEFINE_list(
    "optimizers", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "examples/lion.py:lion"],
    "Registered names or module:factory / file.py:factory plug-ins.")
_LEARNING_RATES = flags.DEFINE_list(
    "learning_rates", ["sgd=0.1", "momentum=0.01", "nesterov=0.01", "rmsprop=0.001", "adam=0.001",
                       "examples/lion.py:lion=0.0003"],
    "Peak learning rate per optimizer, NAME=RATE (conventional defaults, not tuned).")
_MODELS = flags.DEFINE_list("models", ["linear", "cnn"], "Models to train.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 per optimizer and model.")
_EPOCHS = flags.DEFINE_list("epochs", ["linear=5", "cnn=5"], "Epochs per model, MODEL=N.")
_EXAMPLES = flags.DEFINE_list("max_train_examples", ["linear=0", "cnn=2048"],
                              "Training examples per model, MODEL=N (0: all 55,000).")
_VALIDATION = flags.DEFINE_integer("validation_size", 5000, "Held-out validation examples.")


def _mapping(values: list[str], cast) -> dict:
    return {k: cast(v) for k, _, v in (item.rpartition("=") for item in values)}


def run_all(workdir: pathlib.Path) -> list[dict]:
    """One `train_and_evaluate` per (model, optimizer, seed); finished runs are read back."""
    rates, epochs = _mapping(_LEARNING_RATES.value, float), _mapping(_EPOCHS.value, int)
    examples = _mapping(_EXAMPLES.value, int)
    runs = []
    for model in _MODELS.value:
        for name in _OPTIMIZERS.value:
            for seed in range(_SEEDS.value):
                config = Config(model=model, optimizer=name, learning_rate=rates.get(name, 1e-3),
                                epochs=epochs.get(model, 5), max_train_examples=examples.get(model, 0),
                                seed=seed, validation_size=_VALIDATION.value,
                                augment_shift=0, schedule="warmup_cosine")
                run_dir = workdir / "runs" / f"{model}-{_slug(name)}-seed{seed}"
                start = time.perf_counter()
                final = train.train_and_evaluate(config, run_dir, allow_download=False, quiet=True)
                history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
                runs.append({"model": model, "optimizer": name, "seed": seed,
                             "learning_rate": config.learning_rate, "epochs": config.epochs,
                             "train_examples": config.max_train_examples or 55000,
                             "test_accuracy": final["test_accuracy"],
                             "seconds": time.perf_counter() - start,
                             "history": [h for h in history if "train_loss" in h]})
    return runs


def _slug(name: str) -> str:
    return name.replace("/", "_").replace(":", "-").replace(".py", "")


def _label(name: str) -> str:
    return name.rpartition(":")[2] + (" (plug-in)" if ":" in name else "")


def table(runs: list[dict]) -> str:
    """Markdown: per model and optimizer, test accuracy and final train loss over seeds."""
    lines = ["| model (budget) | optimizer | lr | test accuracy, % (mean ± sd) | min - max | "
             "final train loss (mean ± sd) | seconds per run |", "|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in runs):
        for name in dict.fromkeys(r["optimizer"] for r in runs):
            group = [r for r in runs if r["model"] == model and r["optimizer"] == name]
            acc = [100 * r["test_accuracy"] for r in group]
            loss = [r["history"][-1]["train_loss"] for r in group]
            sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
            g = group[0]
            lines.append(
                f"| {model} ({g['epochs']} epochs x {g['train_examples']:,} images) | {_label(name)} | "
                f"{g['learning_rate']:g} | {statistics.mean(acc):.2f} ± {sd(acc):.2f} | "
                f"{min(acc):.2f} - {max(acc):.2f} | {statistics.mean(loss):.4f} ± {sd(loss):.4f} | "
                f"{statistics.mean(r['seconds'] for r in group):.0f} |")
    seeds = sorted({r["seed"] for r in runs})
    lines.append(f"\nSeeds {', '.join(map(str, seeds))}; test accuracy on all 10,000 test images.")
    return "\n".join(lines)


def plot(runs: list[dict], path: pathlib.Path) -> None:
    """Train loss and validation accuracy per epoch: mean over seeds, band from min to max."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # No display needed.
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(dict.fromkeys(r["model"] for r in runs))
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.4 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        for name in dict.fromkeys(r["optimizer"] for r in runs):
            group = [r for r in runs if r["model"] == model and r["optimizer"] == name]
            for ax, key in zip(row, ["train_loss", "val_accuracy"]):
                values = np.array([[h.get(key, np.nan) for h in r["history"]] for r in group])  # [seeds, epochs]
                epochs = np.arange(1, values.shape[1] + 1)
                line, = ax.plot(epochs, values.mean(0), marker="o", ms=3, label=_label(name))
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
        budget = f"{group[0]['train_examples']:,} training images"
        row[0].set(title=f"{model}: train loss ({budget})", xlabel="epoch", yscale="log")
        row[1].set(title=f"{model}: validation accuracy", xlabel="epoch")
        row[1].legend(fontsize=8)
        for ax in row:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=64)
    tmp.replace(path)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
    workdir = pathlib.Path(_WORKDIR.value)
    runs = run_all(workdir)
    write_atomic(workdir / "results.json", json.dumps(runs, indent=1) + "\n")
    write_atomic(workdir / "results.md", table(runs) + "\n")
    plot(runs, workdir / "curves.png")
    print(table(runs))
    print(f"Wrote {workdir}/results.md, results.json and curves.png.")


if __name__ == "__main__":
    app.run(report_user_errors(main))
