"""What each ingredient of a recipe buys: the recipe, then the recipe with each piece removed in
turn, each trained in full; the validation accuracy of the model it scores, the seconds it took.
The test set is scored by `train.train_and_evaluate`, as always, and recorded, but the table
and every choice read validation only.

    python -m benchmarks.ablation --recipe=accurate --seeds=0 --json=results/ablation_accurate.json
    python -m benchmarks.ablation --recipe=speedrun --remove=batch_norm,label_smoothing

Writes a results file (`results/render.py` renders it into docs/training.md, the speedrun's into
docs/performance.md) whose rows are the recipe and each removal, with the difference in
validation accuracy from the whole recipe.
"""

import dataclasses
import os
import statistics
import time

import jax
from absl import app, flags

from benchmarks import common
from jaxdigits import cli, config as config_lib, errors, recipes

FLAGS = flags.FLAGS

# Ingredient -> the Config values that remove it (applied where the recipe has it on).
INGREDIENTS = {
    "batch_norm": {"batch_norm": False},
    "ema": {"ema_decay": 0.0},
    "label_smoothing": {"label_smoothing": 0.0},
    "tta": {"tta_shift": 0, "tta_flip": False},
    "flip": {"augment_flip": False},
    "elastic": {"augment_elastic": 0.0},
    "rotate_scale": {"augment_rotate": 0.0, "augment_scale": 0.0},
    "shift": {"augment_shift": 0},
    "dropout": {"dropout": 0.0},
}


def define_flags() -> None:
    flags.DEFINE_string("recipe", "accurate", "The recipe to take apart.")
    flags.DEFINE_string("overrides", "", "Config overrides on the recipe, name=value,...")
    flags.DEFINE_list("remove", [], "Ingredients to remove in turn (default: every one the recipe "
                      f"has on): {', '.join(INGREDIENTS)}.")
    flags.DEFINE_list("seeds", ["0"], "Seeds; the table shows their mean.")
    flags.DEFINE_string("json", None, "Write the results file here.")


def present(config: config_lib.Config) -> list[str]:
    """The ingredients `config` has on (cnn_deep always has batch normalisation)."""
    return [name for name, off in INGREDIENTS.items()
            if dataclasses.replace(config, **off) != config
            and not (name == "batch_norm" and config.model == "cnn_deep")]


def base_config(recipe: str, overrides: str) -> config_lib.Config:
    """The recipe with `overrides`, holding out validation images: the table reads validation
    accuracy, so `validation_size=0` (train on every training image) gets the default split."""
    base = common.config_with(overrides, recipes.config(recipe))
    return dataclasses.replace(base, validation_size=base.validation_size
                               or config_lib.Config().validation_size)


def run(config: config_lib.Config) -> dict:
    """Trains `config` in a temporary folder: its last validation accuracy, test accuracy, seconds."""
    final, records, seconds = common.train_in_tmp(config)
    val = [r["val_accuracy"] for r in records if "val_accuracy" in r]
    return {"val_accuracy": val[-1], "test_accuracy": final["test_accuracy"], "seconds": seconds}


def table(name: str, results: dict, overrides: str = "") -> list[list[str]]:
    """Rows: the whole recipe (with `overrides`, if any), then each removal, with its validation
    accuracy and cost."""
    whole = statistics.fmean(r["val_accuracy"] for r in results["whole"])
    whole_label = f"`{name}` with `{overrides}`" if overrides else f"`{name}`"
    rows = []
    for label, runs in results.items():
        val = statistics.fmean(r["val_accuracy"] for r in runs)
        seconds = statistics.fmean(r["seconds"] for r in runs)
        change = "" if label == "whole" else f"{100 * (val - whole):+.2f}"
        rows.append([whole_label if label == "whole" else f"without {label}",
                     f"{100 * val:.2f}", change, f"{seconds:,.0f}", str(len(runs))])
    return rows


def main(argv):
    cli.start(argv)
    start_load = os.getloadavg()[0]
    base = base_config(FLAGS.recipe, FLAGS.overrides)
    removals = FLAGS.remove or present(base)
    unknown = sorted(set(removals) - set(INGREDIENTS))
    if unknown:
        raise errors.UserError(f"unknown ingredients {unknown}; choose from {', '.join(INGREDIENTS)}.")
    configs = {"whole": base, **{n: dataclasses.replace(base, **INGREDIENTS[n]) for n in removals}}
    results = {label: [] for label in configs}
    for seed in FLAGS.seeds:
        for label, config in configs.items():
            results[label].append(run(dataclasses.replace(config, seed=int(seed))))
            r = results[label][-1]
            print(f"{label} seed {seed}: validation {100 * r['val_accuracy']:.2f} %, "
                  f"{r['seconds']:.0f} s", flush=True)
    overrides = f" --overrides={FLAGS.overrides}" if FLAGS.overrides else ""
    command = (f"python -m benchmarks.ablation --recipe={FLAGS.recipe}{overrides} "
               f"--seeds={','.join(FLAGS.seeds)}")
    m = common.machine()
    load = max(m["load_average"][0], start_load)
    common.write_json(FLAGS.json, {
        "table": f"ablation_{FLAGS.recipe}",
        "page": "docs/performance.md" if FLAGS.recipe == "speedrun" else "docs/training.md",
        "columns": ["recipe", "validation accuracy, %", "change, points", "seconds", "seeds"],
        "rows": table(FLAGS.recipe, results, FLAGS.overrides), "runs": results, "command": command,
        "machine": f"{m['cpu_count']}-core {m['cpu']}, load average up to {load:.1f}",
        "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
        "note": "Validation accuracy of the scored model after the last epoch, mean over the "
        "seeds; seconds of the whole training run, in one process after the others."})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
