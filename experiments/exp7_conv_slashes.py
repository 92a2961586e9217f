"""Experiment 7: convolution, ReLU and max-pooling step by step, then a tiny CNN on slashes.

    python -m experiments.exp7_conv_slashes
    -> test accuracy on 400 noisy 6x6 slashes: kernels frozen 96.5%, kernels learned from random
       98.0% (loss 0.0008); each learned kernel's best |cosine| with a fixed diagonal: 0.31, 0.48
       (the learned kernels classify as well without turning into the hand-made diagonals)
       (seed 0; the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14 from
       other jobs: 7.6 s CPU, 29 s wall)

The images are 6x6: a diagonal stroke of 3 to 6 pixels at a random place, either a forward slash
"/" (class 0) or a backslash "\\" (class 1), plus Gaussian pixel noise (sd 0.2). The CNN:
  conv with two 3x3 kernels (VALID: 6x6 -> 4x4 x 2) -> ReLU -> 2x2 max-pool (-> 2x2 x 2)
  -> flatten (8) -> dense -> softmax over the 2 classes (jaxdigits.losses.cross_entropy).
The two fixed kernels are "diagonal detectors": +1 on one diagonal and -1 elsewhere, so a stroke
along that diagonal scores 3 and the other diagonal scores -1, which the ReLU zeroes; the max-pool
keeps the strongest response in each quarter of the image, wherever the stroke is. Then:
1. frozen: the kernels stay fixed and only the dense layer learns (optax.multi_transform with
   set_to_zero on the kernels);
2. trainable: the kernels start random and learn with the dense layer.
Both use Adam, full batch. Outputs: results.json, layers.png (each step on one image of each
class, fixed kernels), kernels.png (fixed and learned kernels, the two loss curves) and
learned_layers.png (each step with the learned kernels).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import _common
from jaxdigits import cli, losses
from jaxdigits.errors import report_user_errors

SIZE = 6
CLASSES = ("/ (forward)", "\\ (backward)")
DIAGONAL = 2 * np.eye(3) - 1  # +1 on the main diagonal "\", -1 elsewhere
FIXED_KERNELS = np.stack([DIAGONAL[:, ::-1], DIAGONAL], -1)[:, :, None, :]  # [3, 3, 1, 2]: "/", "\"

SECTION = "Convolution, ReLU and max-pooling step by step; a small CNN on slashes"


def make_slashes(n: int, noise: float, seed: int):
    """(images [n, 6, 6, 1] float32, labels [n] int32): half "/" (0), half "\\" (1), shuffled."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIZE, SIZE), np.float32)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int32)
    for image, label in zip(images, labels):
        length = rng.integers(3, SIZE + 1)
        row, col = rng.integers(0, SIZE - length + 1, size=2)
        for i in range(length):
            image[row + i, col + i if label == 1 else col + length - 1 - i] = 1.0
    images += rng.normal(0, noise, images.shape).astype(np.float32)
    return images[..., None], labels


def layers(params, images):
    """Every stage: conv [n, 4, 4, 2], relu [n, 4, 4, 2], pool [n, 2, 2, 2], logits [n, 2]."""
    conv = jax.lax.conv_general_dilated(images, params["kernel"], (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    relu = jax.nn.relu(conv)
    pool = jax.lax.reduce_window(relu, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    logits = pool.reshape(pool.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]
    return {"conv": conv, "relu": relu, "pool": pool, "logits": logits}


def init(key, kernels=None):
    kernel_key, dense_key = jax.random.split(key)
    if kernels is None:
        kernels = 0.5 * jax.random.normal(kernel_key, (3, 3, 1, 2))
    return {"kernel": jnp.asarray(kernels, jnp.float32),
            "dense": {"w": 0.1 * jax.random.normal(dense_key, (8, 2)), "b": jnp.zeros(2)}}


def train(params, images, labels, *, learning_rate: float, steps: int, freeze_kernels: bool):
    """Full-batch Adam; `freeze_kernels` gives the kernels zero updates. -> (params, losses)."""
    tx = optax.multi_transform(
        {"learn": optax.adam(learning_rate), "freeze": optax.set_to_zero()},
        {"kernel": "freeze" if freeze_kernels else "learn", "dense": {"w": "learn", "b": "learn"}})

    def loss_fn(params):
        logits = layers(params, images)["logits"]  # [n, 2]
        return losses.cross_entropy(logits=logits, labels=labels).mean()

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), curve = jax.lax.scan(step, (params, tx.init(params)), length=steps)
    return params, np.asarray(curve)


def accuracy(params, images, labels) -> float:
    return float(jnp.mean(layers(params, images)["logits"].argmax(-1) == labels))


def _show(ax, array, title, vmin=None, vmax=None, numbers=True):
    ax.imshow(array, cmap="gray" if vmin is None else "RdBu_r", vmin=vmin, vmax=vmax)
    if numbers:
        for (r, c), v in np.ndenumerate(array):
            ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=7, color="black",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.6, "lw": 0})
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_layers(path, params, images, labels, title):
    """One row per example: input, then conv, ReLU and pool for each of the two kernels."""
    out = jax.tree.map(np.asarray, layers(params, images))
    fig, axes = _common.subplots(len(images), 7, width=1.9, height=2.1)
    for row, (image, label) in enumerate(zip(images, labels)):
        probs = np.asarray(jax.nn.softmax(out["logits"][row]))
        _show(axes[row, 0], image[..., 0], f"input: {CLASSES[label]}\np(\\) = {probs[1]:.2f}",
              numbers=False)
        for k in range(2):
            limit = max(np.abs(out["conv"][row, ..., k]).max(), 1e-3)
            for j, stage in enumerate(("conv", "relu", "pool")):
                _show(axes[row, 1 + 3 * k + j], out[stage][row, ..., k],
                      f"kernel {k + 1}: {stage}", -limit, limit)
    fig.suptitle(title)
    return _common.save_figure(fig, path)


def plot_kernels(path, fixed, learned, initial, frozen_curve, trained_curve):
    """Columns: fixed kernels, the random start, the learned kernels (one row per kernel); loss."""
    fig = _common.plt.figure(figsize=(11, 4.6), layout="constrained")
    grid = fig.add_gridspec(2, 5)
    for col, (kernels, name) in enumerate([(fixed, "fixed"), (initial, "random start"),
                                           (learned, "learned")]):
        for k in range(2):
            _show(fig.add_subplot(grid[k, col]), kernels[:, :, 0, k], f"{name} kernel {k + 1}",
                  -3, 3)
    ax = fig.add_subplot(grid[:, 3:])
    ax.plot(frozen_curve, label="kernels frozen (dense only)")
    ax.plot(trained_curve, label="kernels trainable")
    ax.set(xlabel="Adam step (full batch)", ylabel="training cross-entropy", yscale="log",
           title="Training loss")
    ax.legend(fontsize=8)
    return _common.save_figure(fig, path)


def run(workdir, *, train_size=400, test_size=400, noise=0.2, learning_rate=0.05, steps=500,
        seed=0) -> dict:
    _common.check_positive(train_size=train_size, test_size=test_size,
                           learning_rate=learning_rate, steps=steps)
    if noise < 0:
        raise _common.UserError(f"--noise must be 0 or more, got {noise}.")
    workdir = _common.prepare_workdir(workdir)
    train_x, train_y = make_slashes(train_size, noise, seed)
    test_x, test_y = make_slashes(test_size, noise, seed + 1)
    frozen_key, trainable_key = jax.random.split(jax.random.key(seed))
    frozen, frozen_curve = train(init(frozen_key, FIXED_KERNELS), train_x, train_y,
                                 learning_rate=learning_rate, steps=steps, freeze_kernels=True)
    start = init(trainable_key)
    learned, trained_curve = train(start, train_x, train_y, learning_rate=learning_rate,
                                   steps=steps, freeze_kernels=False)
    kernels = np.asarray(learned["kernel"])
    flat, fixed_flat = kernels.reshape(9, 2), FIXED_KERNELS.reshape(9, 2)
    cosine = (flat.T @ fixed_flat) / np.outer(np.linalg.norm(flat, axis=0),
                                             np.linalg.norm(fixed_flat, axis=0))  # [learned, fixed]
    results = {
        "experiment": "exp7_conv_slashes",
        "flags": {"train_size": train_size, "test_size": test_size, "noise": noise,
                  "learning_rate": learning_rate, "steps": steps, "seed": seed},
        "frozen": {"test_accuracy": accuracy(frozen, test_x, test_y),
                   "train_accuracy": accuracy(frozen, train_x, train_y),
                   "initial_loss": float(frozen_curve[0]), "final_loss": float(frozen_curve[-1]),
                   "kernels_unchanged": bool(np.array_equal(frozen["kernel"], FIXED_KERNELS))},
        "trainable": {"test_accuracy": accuracy(learned, test_x, test_y),
                      "train_accuracy": accuracy(learned, train_x, train_y),
                      "initial_loss": float(trained_curve[0]),
                      "final_loss": float(trained_curve[-1]),
                      "initial_kernels": np.asarray(start["kernel"])[:, :, 0, :].transpose(2, 0, 1),
                      "learned_kernels": kernels[:, :, 0, :].transpose(2, 0, 1),
                      "cosine_to_fixed_kernels": cosine},
        "fixed_kernels": FIXED_KERNELS[:, :, 0, :].transpose(2, 0, 1),
    }
    examples = [int(np.argmax(test_y == 0)), int(np.argmax(test_y == 1))]
    plot_layers(workdir / "layers.png", frozen, test_x[examples], test_y[examples],
                "Fixed diagonal kernels, step by step (dense layer trained, kernels frozen)")
    plot_layers(workdir / "learned_layers.png", learned, test_x[examples], test_y[examples],
                "Learned kernels, step by step")
    plot_kernels(workdir / "kernels.png", FIXED_KERNELS, kernels, np.asarray(start["kernel"]),
                 frozen_curve, trained_curve)
    return _common.finish(workdir, results, state={"frozen": frozen, "learned": learned},
                          curves={"frozen_loss": frozen_curve, "trainable_loss": trained_curve})


def headline(r) -> str:
    return ("convolution, ReLU and max-pool step by step on noisy 6x6 slashes and back-slashes; "
            f"the small CNN with its two diagonal kernels frozen: "
            f"{100 * r['frozen']['test_accuracy']:.1f} % test accuracy; trainable from a random "
            f"start: {100 * r['trainable']['test_accuracy']:.1f} %")


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, train_size=f.train_size, test_size=f.test_size, noise=f.noise,
            learning_rate=f.learning_rate, steps=f.steps, seed=f.seed)
    fr, tr = r["frozen"], r["trainable"]
    best = np.abs(np.asarray(tr["cosine_to_fixed_kernels"])).max(axis=1)
    print(f"test accuracy on {f.test_size} noisy 6x6 slashes: kernels frozen "
          f"{100 * fr['test_accuracy']:.1f}%, kernels learned from random "
          f"{100 * tr['test_accuracy']:.1f}% (loss {tr['final_loss']:.4f}); each learned kernel's "
          f"best |cosine| with a fixed diagonal: {', '.join(f'{b:.2f}' for b in best)}. "
          f"Wrote {f.workdir}/results.json, layers.png, kernels.png, learned_layers.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp7_conv_slashes")
    flags.DEFINE_integer("train_size", 400, "Training images.")
    flags.DEFINE_integer("test_size", 400, "Test images.")
    flags.DEFINE_float("noise", 0.2, "Standard deviation of the pixel noise.")
    flags.DEFINE_float("learning_rate", 0.05, "Adam's learning rate.")
    flags.DEFINE_integer("steps", 500, "Full-batch Adam steps.")
    flags.DEFINE_integer("seed", 0, "Seed of the images and the initialisation.")
    app.run(report_user_errors(main))
