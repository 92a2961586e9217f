"""Ensembles: members' predictions, their metrics, and the mean of their probabilities.

    python -m jaxdigits.evaluate --workdir=runs/mlp-x4              # a --num_models run
    python -m jaxdigits.evaluate --workdir=runs/a,runs/b,runs/c      # separate runs

The ensemble predicts the class of highest mean probability over its members (softmax of each
member's logits, averaged); its loss is the cross-entropy of that mean.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdigits import data, train
from jaxdigits.errors import UserError


def metrics_of(logits, labels) -> dict:
    """Loss and accuracy of one model's logits [n, classes]."""
    log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
    return {"loss": float(-jnp.take_along_axis(log_p, labels[:, None], 1).mean()),
            "accuracy": float((np.asarray(logits).argmax(-1) == labels).mean()),
            "count": int(len(labels))}


def ensemble_metrics(logits, labels) -> dict:
    """The ensemble's prediction: the mean of the members' probabilities. logits: [K, n, classes]."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1)).mean(0)  # [n, classes]
    loss = -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-30)).mean()
    return {"loss": float(loss), "accuracy": float((probs.argmax(-1) == labels).mean()),
            "count": int(len(labels)), "members": int(logits.shape[0])}


def predict(setup: train.Setup, params, images) -> np.ndarray:
    """Logits float32 [n, classes] of uint8 images [n, H, W, C], in padded eval batches."""
    apply = jax.jit(lambda p, x: setup.model.apply(p, train.normalise(x, setup.mean, setup.std)),
                    compiler_options=train.compiler_options(setup))
    b, n = setup.config.eval_batch_size, len(images)
    out = [np.asarray(apply(params, images[np.minimum(np.arange(i, i + b), n - 1)]))
           for i in range(0, n, b)]
    return np.concatenate(out)[:n]


def evaluate_ensemble(paths, *, which: str = "best", split: str = "test", data_dir=None) -> dict:
    """Every member's loss and accuracy on `split`, and the ensemble's (mean of probabilities).

    `paths`: run folders (the members of a many-model run, or separate runs of one dataset).
    On the validation split the ensemble is scored only if all members share that split.
    """
    from jaxdigits import evaluate

    logits, results, splits, datasets = [], [], set(), {}
    for path in paths:
        setup, params, meta = evaluate.load_run(path, which)
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
        logits.append(predict(setup, params, images))
        splits.add((meta["dataset"], labels.tobytes(), images.tobytes()))
        results.append({"path": str(path), "epoch": meta["epoch"], "model": setup.config.model,
                        "seed": setup.config.seed, **metrics_of(logits[-1], labels)})
    out = {"split": split, "dataset": meta["dataset"], "members": results}
    if len(splits) == 1:
        out["ensemble"] = ensemble_metrics(np.stack(logits), labels)
    return out
