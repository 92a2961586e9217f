"""Experiment 10: training by hand, no flax and no optax: jax.grad takes the gradient tape's place.

    python -m experiments.exp10_by_hand
    -> see docs/lessons.md (the book: a test accuracy of about 0.81)

The book's from-scratch chapter, piece by piece:
- a dense layer: `w` drawn uniformly from [0, 0.1), `b` zeros, an activation (`naive_dense`);
- a sequential container: the layers applied in turn (`sequential`);
- a batch generator: consecutive slices of 128, unshuffled, the last one partial (`batches`);
- one training step: predictions, the per-sample cross-entropy, its mean, its gradient, and every
  weight moved by `-learning_rate * gradient` (`training_step`);
- `fit`: epochs of steps. The model is 784-512-10, ReLU then softmax, SGD at 1e-3, batch 128,
  10 epochs, pixels divided by 255.
The loss is the book's: Keras' `sparse_categorical_crossentropy` on softmax outputs clips the
probabilities to [1e-7, 1 - 1e-7] before taking their log, so a sample whose true class the net
gives less than 1e-7 contributes no gradient. With all weights positive at the start the logits
are large and many samples start there; that is why this network learns slowly and ends near
0.81. `--loss=log_softmax` takes the log of the softmax exactly (the stable form `train` uses) to
show the difference. Outputs: results.json, by_hand.png, metrics.jsonl, tensorboard/ and the
final weights in checkpoints/.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import _common
from jaxdigits import cli, data
from jaxdigits.errors import UserError

SECTION = "Training by hand: dense layer, sequential container, batch generator, fit"
TEXT_ACCURACY = 0.81  # The book's test accuracy for this loop.
EPSILON = 1e-7  # Keras' clipping of probabilities.
LOSSES = ("keras", "log_softmax")


def naive_dense(key, input_size: int, output_size: int):
    """A dense layer's weights: w ~ U[0, 0.1) [input, output], b = 0 [output]."""
    return {"w": jax.random.uniform(key, (input_size, output_size), minval=0.0, maxval=0.1),
            "b": jnp.zeros(output_size)}


ACTIVATIONS = {"relu": jax.nn.relu, "softmax": jax.nn.softmax}


def sequential(params: list, activations: tuple, x):
    """The container: each layer's `activation(x @ w + b)` in turn."""
    for layer, activation in zip(params, activations):
        x = ACTIVATIONS[activation](x @ layer["w"] + layer["b"])
    return x


def batches(images, labels, batch_size: int):
    """The book's batch generator: consecutive slices, in order, the last one partial."""
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size], labels[start:start + batch_size]


def per_sample_loss(probabilities, labels):
    """Keras' cross-entropy of softmax outputs [b, 10] -> [b]: clipped, renormalised, logged."""
    log_p = jax.nn.log_softmax(jnp.log(jnp.clip(probabilities, EPSILON, 1 - EPSILON)))
    return -jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]


def make_training_step(activations: tuple, learning_rate: float, loss: str):
    """`training_step(params, images, labels) -> (params, mean loss)`, one compiled function."""

    def mean_loss(params, images, labels):
        if loss == "log_softmax":  # The same network, the last layer's log-softmax taken exactly.
            hidden = sequential(params[:-1], activations[:-1], images)
            logits = hidden @ params[-1]["w"] + params[-1]["b"]
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()
        return per_sample_loss(sequential(params, activations, images), labels).mean()

    @jax.jit
    def training_step(params, images, labels):
        value, gradients = jax.value_and_grad(mean_loss)(params, images, labels)
        params = jax.tree.map(lambda w, g: w - learning_rate * g, params, gradients)
        return params, value

    return training_step


def fit(params, activations, images, labels, *, epochs: int, batch_size: int,
        learning_rate: float, loss: str):
    """The book's `fit`; returns (params, the loss of every step)."""
    training_step = make_training_step(activations, learning_rate, loss)
    step_losses = []
    for _ in range(epochs):
        for batch_images, batch_labels in batches(images, labels, batch_size):
            params, value = training_step(params, batch_images, batch_labels)
            step_losses.append(value)
    return params, np.asarray(jax.device_get(step_losses), np.float64)


def accuracy(params, activations, images, labels) -> float:
    predictions = sequential(params, activations, images)
    return float(jnp.mean(jnp.argmax(predictions, axis=1) == labels))


def plot(path, step_losses, steps_per_epoch, accuracy_value):
    fig, axes = _common.subplots(1, 1, width=6.5)
    ax = axes[0, 0]
    ax.plot(np.arange(1, len(step_losses) + 1) / steps_per_epoch, step_losses, linewidth=0.6)
    ax.set(xlabel="epoch", ylabel="batch loss (clipped cross-entropy)", yscale="log",
           title=f"Training by hand: test accuracy {accuracy_value:.3f} "
                 f"(the book: about {TEXT_ACCURACY})")
    return _common.save_figure(fig, path)


def run(workdir, *, epochs=10, batch_size=128, learning_rate=1e-3, hidden=512, loss="keras",
        train_examples=0, seed=0) -> dict:
    _common.check_positive(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                           hidden=hidden)
    if loss not in LOSSES:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}.")
    workdir = _common.prepare_workdir(workdir)
    ds = data.load_dataset("mnist", allow_download=False)
    flat = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255  # [n, 784] in [0, 1]
    train_x, train_y = flat(ds.train_images), ds.train_labels
    if train_examples:
        train_x, train_y = train_x[:train_examples], train_y[:train_examples]
    first, second = jax.random.split(jax.random.key(seed))
    params = [naive_dense(first, 784, hidden), naive_dense(second, hidden, 10)]
    activations = ("relu", "softmax")
    start = time.perf_counter()
    params, step_losses = fit(params, activations, train_x, train_y, epochs=epochs,
                              batch_size=batch_size, learning_rate=learning_rate, loss=loss)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(params, activations, flat(ds.test_images), ds.test_labels)
    steps_per_epoch = -(-len(train_x) // batch_size)
    results = {
        "experiment": "exp10_by_hand",
        "flags": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                  "hidden": hidden, "loss": loss, "train_examples": train_examples, "seed": seed},
        "test_accuracy": test_accuracy, "test_count": len(ds.test_labels),
        "text_test_accuracy": TEXT_ACCURACY, "steps": len(step_losses),
        "first_loss": float(step_losses[0]), "last_epoch_loss": float(
            step_losses[-steps_per_epoch:].mean()), "train_seconds": seconds,
    }
    plot(workdir / "by_hand.png", step_losses, steps_per_epoch, test_accuracy)
    return _common.finish(workdir, results, state={"layers": params},
                          curves={"train_loss": step_losses})


def headline(r) -> str:
    f = r["flags"]
    return (f"784-{f['hidden']}-10 by hand (jax.grad, w -= lr * grad), SGD {f['learning_rate']:g}, "
            f"batch {f['batch_size']}, {f['epochs']} epochs, {f['loss']} loss: test accuracy "
            f"{r['test_accuracy']:.4f} (the book: about {r['text_test_accuracy']})")


def text_numbers(r) -> dict:
    """The book's number beside the measured one, with the tolerance the tests allow."""
    return {"test_accuracy": {"measured": r["test_accuracy"], "text": TEXT_ACCURACY,
                              "tolerance": 0.03}}


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, epochs=f.epochs, batch_size=f.batch_size, learning_rate=f.learning_rate,
            hidden=f.hidden, loss=f.loss, seed=f.seed)
    print(headline(r) + (". The loss is Keras' (probabilities clipped to [1e-7, 1 - 1e-7]: "
                          "saturated samples give no gradient), as the book's loop uses it"
                          if f.loss == "keras" else ". The exact log-softmax, not the book's "
                          "clipped loss") + f". Wrote {f.workdir}/results.json, by_hand.png, "
          "metrics.jsonl, checkpoints/.")


def define():
    _common.define_workdir_flag("exp10_by_hand")
    flags.DEFINE_integer("epochs", 10, "Epochs over the 60,000 training images.")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_float("learning_rate", 1e-3, "SGD step: w -= learning_rate * gradient.")
    flags.DEFINE_integer("hidden", 512, "Width of the hidden ReLU layer.")
    flags.DEFINE_enum("loss", "keras", LOSSES, "keras: the book's clipped cross-entropy; "
                      "log_softmax: the exact log of the softmax.")
    flags.DEFINE_integer("seed", 0, "Seed of the uniform initialisation.")


if __name__ == "__main__":
    cli.run(main, define)
