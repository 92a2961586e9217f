"""Choosing the speedrun recipe on validation accuracy: train candidate configs, print each one's
validation accuracy after every epoch and its wall time (the test set is scored by
train_and_evaluate, as always, but not used here to choose).

    python experiments/speedrun_search.py --candidates='model=cnn_small,epochs=2,learning_rate=0.003' --seeds=0,1

Each candidate is a comma-separated list of Config overrides on top of the speedrun recipe
(jaxdigits/recipes.py). Results measured here are in BUILD_NOTES.md (issue 6).
"""

import dataclasses
import json
import pathlib
import tempfile
import time

from absl import app, flags

from jaxdigits import recipes, train
from jaxdigits.config import Config
from jaxdigits.metrics import read_jsonl

_CANDIDATES = flags.DEFINE_multi_string("candidates", [""], "Config overrides, k=v,k=v.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")


def parse(text: str) -> Config:
    base = recipes.config("speedrun")
    values = {}
    for kv in filter(None, text.split(",")):
        k, v = kv.split("=")
        kind = type(getattr(base, k))
        values[k] = tuple(int(x) for x in v.split(":")) if kind is tuple else kind(v)
    return dataclasses.replace(base, **values)


def main(argv):
    del argv  # Unused.
    for text in _CANDIDATES.value:
        for seed in _SEEDS.value:
            config = dataclasses.replace(parse(text), seed=int(seed))
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                train.train_and_evaluate(config, pathlib.Path(tmp) / "run", quiet=True)
                wall = time.perf_counter() - start
                records = read_jsonl(pathlib.Path(tmp) / "run" / "metrics.jsonl")
            val = [f"{100 * r['val_accuracy']:.2f}" for r in records if "val_accuracy" in r]
            print(json.dumps({"candidate": text, "seed": int(seed), "val_accuracy": val,
                              "train_seconds": round(wall, 1)}), flush=True)


if __name__ == "__main__":
    app.run(main)
