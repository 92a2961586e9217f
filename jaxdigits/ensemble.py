"""Ensembles of saved runs: each member's score and the mean of their probabilities.

    python -m jaxdigits.evaluate --workdir=runs/mlp-x4              # a --num_models run
    python -m jaxdigits.evaluate --workdir=runs/a,runs/b,runs/c      # separate runs
    python -m jaxdigits.evaluate --workdir=runs/a,runs/b --json      # one JSON object instead

The ensemble predicts the class of highest mean probability over its members (softmax of each
member's logits, averaged; `scoring.ensemble_metrics`); its loss is the cross-entropy of that mean.
"""

import numpy as np

from jaxdigits import data, report, runs, scoring
from jaxdigits.errors import UserError
from jaxdigits.inputs import to_device


def evaluate_ensemble(paths, *, which: str = "best", split: str = "test", data_dir=None) -> dict:
    """Every member's loss and accuracy on `split`, and the ensemble's (mean of probabilities).

    `paths`: run folders (the members of a many-model run, or separate runs of one dataset).
    On the validation split the ensemble is scored only if all members share that split.
    """
    logits, results, splits, datasets = [], [], set(), {}
    for path in paths:
        setup, params, meta = runs.load_run(path, which)
        c = setup.config
        if c.dataset not in datasets:  # Load once; each member carves its own split.
            datasets[c.dataset] = data.load_dataset(c.dataset, data_dir)
        ds = datasets[c.dataset]
        if split == "test":
            images, labels = ds.test_images, ds.test_labels
        else:
            _, _, images, labels = data.split_validation(ds.train_images, ds.train_labels,
                                                         c.validation_size, c.seed)
        if not len(labels):
            raise UserError(f"the run at {path} has no {split} examples (--validation_size=0).")
        logits.append(scoring.predict(setup, params, to_device(images, labels)))
        splits.add((meta["dataset"], labels.tobytes(), images.tobytes()))
        results.append({"path": str(path), "epoch": meta["epoch"], "scored": report.scored_label(meta),
                        "model": setup.config.model, "seed": setup.config.seed,
                        **scoring.metrics_of(logits[-1], labels)})
    out = {"split": split, "dataset": meta["dataset"], "members": results}
    if len(splits) == 1:
        out["ensemble"] = scoring.ensemble_metrics(np.stack(logits), labels)
    return out


def format_ensemble(result: dict) -> str:
    """One labelled line per member (which checkpoint was scored), then the ensemble's."""
    split = result["split"]
    lines = [f"{m['path']}: {m['model']} seed {m['seed']}, {split} accuracy "
             f"{100 * m['accuracy']:.2f} % ({m['scored']}), loss {m['loss']:.4f}"
             for m in result["members"]]
    if "ensemble" in result:
        e = result["ensemble"]
        lines.append(f"ensemble of {e['members']} (mean probability), {split} accuracy "
                     f"{100 * e['accuracy']:.2f} % on all {e['count']} images, loss {e['loss']:.4f}")
    else:
        lines.append(f"no ensemble: the members do not share one {split} split.")
    return "\n".join(lines)
