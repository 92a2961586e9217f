"""Choosing the speedrun recipe on validation accuracy: train candidate configs and print each
one's validation accuracy after every epoch and its wall time. The test set is scored by
`train.train_and_evaluate`, as always, but not used here to choose.

    python -m benchmarks.speedrun_search --candidates= --seeds=0,1 --json=/tmp/search.json
    python -m benchmarks.speedrun_search --candidates=learning_rate=0.003 \
        --candidates=batch_size=64,learning_rate=0.004 --seeds=0,1

Result, 2-core Intel Xeon (AVX-512), 2026-12-01 (then `experiments/speedrun_search.py`): the
recipe itself (`cnn_tiny`, Adam 6e-3, one-cycle, 2 epochs) reached 97.62, 99.02 % (seed 0) and
97.96, 99.14 % (seed 1) after epochs 1 and 2; candidates with 8/16 channels, 16/32/64 channels,
a dense layer of 128, batch 64 or fewer training images stayed under 99.0 % on seed 0 or
another seed. The rule: the fewest epochs whose validation accuracy reaches 99.0 %.
BUILD_NOTES.md.

Each candidate is "name=value,..." overrides of Config on the speedrun recipe
(jaxdigits/recipes.py; a tuple's values joined by ":", e.g. hidden=256); each runs in a
temporary folder.
"""

import dataclasses

from absl import app, flags

from benchmarks import common
from jaxdigits import cli, errors, recipes

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_multi_string("candidates", [""], "Config overrides on the speedrun recipe, "
                              "name=value,name=value; repeat the flag for more candidates.")
    flags.DEFINE_list("seeds", ["0"], "Seeds.")
    flags.DEFINE_string("json", None, "Write every run's validation accuracies here as JSON.")


def run(candidate: str, seed: int) -> dict:
    """Trains `candidate` with `seed`; its validation accuracy after each epoch and wall time."""
    config = dataclasses.replace(common.config_with(candidate, recipes.config("speedrun")),
                                 seed=seed)
    final, records, wall = common.train_in_tmp(config)
    return {"candidate": candidate, "seed": seed,
            "val_accuracy": [r["val_accuracy"] for r in records if "val_accuracy" in r],
            "test_accuracy_not_used": final["test_accuracy"], "train_seconds": wall}


def main(argv):
    cli.start(argv)
    runs = []
    for candidate in FLAGS.candidates:
        for seed in FLAGS.seeds:
            runs.append(run(candidate, int(seed)))
            val = ", ".join(f"{100 * a:.2f}" for a in runs[-1]["val_accuracy"])
            print(f"{candidate or '(the recipe)'} seed {seed}: validation accuracy {val} %, "
                  f"{runs[-1]['train_seconds']:.1f} s", flush=True)
    common.write_json(FLAGS.json, {"runs": runs, "recipe": recipes.RECIPES["speedrun"],
                                   "machine": common.machine()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
