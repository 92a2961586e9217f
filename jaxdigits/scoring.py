"""Scoring: the one padded-batch path over every example, and the metrics of logits.

Every example of a split is scored: batches of `eval_batch_size` gathered and normalised on the
device, the last one padded by repeating the last example, and the padding masked out or cut off
(nothing is dropped, unlike `drop_remainder`). Training's validation and test scores, evaluate,
the report, ensembles, K-model runs and export all go through here.

Ensembles predict the class of highest mean probability over their members (softmax of each
member's logits, averaged); their loss is the cross-entropy of that mean.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdigits import losses, parallel, tta
from jaxdigits.drivers import take
from jaxdigits.inputs import DeviceData, normalise
from jaxdigits.step import Setup, compiler_options


def padded(start, batch_size: int, n):
    """Indices int32 [b] of the batch at `start` over `n` examples (past the end: the last
    example again) and the mask [b] of the real ones."""
    position = start + jnp.arange(batch_size)  # [b]
    return jnp.minimum(position, n - 1), position < n


def scorer(setup: Setup):
    """`logits(params, images, mean, std)` [b, classes] for raw images: the model's, or with
    `--tta_shift` the test-time-augmented prediction (`jaxdigits.tta`)."""
    model, shift, flip = setup.model, setup.config.tta_shift, setup.config.tta_flip

    def logits(params, images, mean, std):
        return tta.predict(lambda x: model.apply(params, normalise(x, mean, std)), images, shift,
                           flip)

    return logits


def make_evaluator(setup: Setup, mesh=None) -> "Evaluator":
    """`evaluate(params, data) -> {"loss", "accuracy", "count"}` over every example in `data`.

    Loss and correct predictions are summed on the device per batch, the padding masked out, and
    the batches' sums added on the host at the end (one transfer). The batch is gathered by its
    own small program, so the scoring program is compiled once for every split (validation and
    test differ only in their number of examples). With a `mesh` of several devices that divides
    the batch, each device scores its slice.
    """
    logits_of, batch_size = scorer(setup), setup.config.eval_batch_size
    mean, std = setup.mean, setup.std
    split = mesh is not None and mesh.size > 1 and batch_size % mesh.size == 0

    @jax.jit
    def gather(data, start):
        idx, mask = padded(start, batch_size, data.labels.shape[0])
        return data.images[idx], data.labels[idx], mask  # [b, H, W, C], [b], [b]

    @functools.partial(jax.jit, compiler_options=compiler_options(setup))
    def eval_batch(params, images, labels, mask):
        if split:
            images, labels, mask = (parallel.shard_batch(x, mesh) for x in (images, labels, mask))
        logits = logits_of(params, images, mean, std)
        per_example = losses.cross_entropy(logits=logits, labels=labels)
        return {"loss": jnp.where(mask, per_example, 0.0).sum(),
                "correct": jnp.where(mask, logits.argmax(-1) == labels, False).sum()}

    return Evaluator(gather, eval_batch, batch_size)


class Evaluator(NamedTuple):
    """`make_evaluator`'s scorer: call it as `evaluate(params, data)`."""
    gather: object  # jitted (data, start) -> (images, labels, mask) of the batch at `start`
    eval_batch: object  # jitted (params, images, labels, mask) -> {"loss", "correct"} sums
    batch_size: int

    def __call__(self, params, data: DeviceData) -> dict:
        n = int(data.labels.shape[0])
        totals = []
        for call, start in enumerate(range(0, n, self.batch_size)):
            totals.append(self.eval_batch(params, *self.gather(data, start)))
            parallel.settle(call, totals[-1])
        totals = jax.device_get(totals)
        loss = float(sum(np.float32(t["loss"]) for t in totals))  # float32, in order, as before.
        correct = int(sum(int(t["correct"]) for t in totals))
        return {"loss": loss / n, "accuracy": correct / n, "count": n}

    def compile_ahead(self, ahead, params, *splits) -> None:
        """Compiles with `ahead` (`jaxdigits.ahead`) the programs that score `splits` with
        `params` (abstract or concrete): each split's gather and the one scoring program."""
        for data in splits:
            ahead.compile(self.gather, data, 0)
        if splits:
            ahead.compile(self.eval_batch, params, *jax.eval_shape(self.gather, splits[0], 0))


def predict(setup: Setup, params, data: DeviceData) -> np.ndarray:
    """Logits float32 [N, classes] for every example of `data`."""
    logits_of, batch_size = scorer(setup), setup.config.eval_batch_size
    mean, std = setup.mean, setup.std

    @functools.partial(jax.jit, compiler_options=compiler_options(setup))
    def logits_batch(params, data, start):
        idx, _ = padded(start, batch_size, data.labels.shape[0])
        return logits_of(params, data.images[idx], mean, std)  # [b, classes]

    n = int(data.labels.shape[0])
    chunks = [np.asarray(logits_batch(params, data, start)) for start in range(0, n, batch_size)]
    return np.concatenate(chunks)[:n]


def make_member_scorer(setup: Setup, loop: bool = False):
    """`score(params, data, rows, mean, std) -> logits` float32 [K, n, classes] of K members
    (params, `mean` and `std` [K] stacked), member k scoring `data` rows `rows[k]` (int32 [K, n]).
    `loop`: the members written out one after another rather than `jax.vmap`'d (same math)."""
    logits_of, batch_size = scorer(setup), setup.config.eval_batch_size

    @functools.partial(jax.jit, compiler_options=compiler_options(setup))
    def logits_batch(params, data, rows, start, mean, std):
        idx = rows[:, padded(start, batch_size, rows.shape[1])[0]]  # [K, b]
        one = lambda p, i, m, s: logits_of(p, data.images[i], m, s)
        if loop:
            return jnp.stack([one(take(params, k), idx[k], mean[k], std[k])
                              for k in range(idx.shape[0])])
        return jax.vmap(one)(params, idx, mean, std)  # [K, b, classes]

    def score(params, data, rows, mean, std):
        n, rows = rows.shape[1], jnp.asarray(rows)
        out = [np.asarray(logits_batch(params, data, rows, start, mean, std))
               for start in range(0, n, batch_size)]
        return np.concatenate(out, axis=1)[:, :n]

    return score


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
