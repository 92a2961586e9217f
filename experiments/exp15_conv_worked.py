"""Experiment 15: the convolution worked arrays, and the fixed-kernel CNN with each example's class
probabilities.

    python -m experiments.exp15_conv_worked
    -> see docs/lessons.md

1. The worked arrays, all 6x6 images and 3x3 kernels, zero padding of 1 ("SAME": the output
   has the input's size), stride 1, as `jax.lax.conv_general_dilated` computes them:
   - the identity kernel (1 at the centre) returns the image unchanged;
   - the slash image "/" (ones on the anti-diagonal) through the two kernels of experiment 7,
     "/" and "\\" detectors (+1 on their diagonal, -1 elsewhere): the "/" kernel scores 3 along
     the stroke (2 at its two ends, where the padding cuts it), the "\\" kernel at most 1 there.
   Deep-learning "convolution" is cross-correlation (the kernel is not flipped); these kernels
   are symmetric under the flip, so both give the same arrays here.
2. The fixed-kernel CNN (experiment 7's: conv with the two kernels, VALID, ReLU, 2x2 max-pool,
   dense, softmax): the kernels stay fixed and only the dense layer learns, by full-batch Adam
   on every clean stroke of length 3 to 6 in a 6x6 image (30 of each class); then it scores
   noisy strokes, and each worked example's class probabilities are plotted.
Outputs: results.json, conv_arrays.png, probabilities.png, metrics.jsonl, tensorboard/ and the
trained parameters in checkpoints/.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import _common, exp7_conv_slashes as slashes
from jaxdigits import cli

SECTION = "Convolution worked arrays; the fixed-kernel CNN and its class probabilities"
SIZE = 6
IDENTITY = np.zeros((3, 3), np.float32)
IDENTITY[1, 1] = 1.0
SLASH = np.fliplr(np.eye(SIZE, dtype=np.float32))  # "/": ones on the anti-diagonal


def convolve(image, kernel, padding="SAME"):
    """[H, W] image, [3, 3] kernel -> [H', W'] (cross-correlation, zero padding for SAME)."""
    out = jax.lax.conv_general_dilated(jnp.asarray(image)[None, :, :, None],
                                       jnp.asarray(kernel)[:, :, None, None], (1, 1), padding,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return np.asarray(out[0, :, :, 0])


def all_strokes():
    """Every clean diagonal stroke of length 3..6 in a 6x6 image: (images [n, 6, 6, 1], labels)."""
    images, labels = [], []
    for label in (0, 1):
        for length in range(3, SIZE + 1):
            for row in range(SIZE - length + 1):
                for col in range(SIZE - length + 1):
                    image = np.zeros((SIZE, SIZE), np.float32)
                    for i in range(length):
                        image[row + i, col + i if label == 1 else col + length - 1 - i] = 1.0
                    images.append(image)
                    labels.append(label)
    return np.stack(images)[..., None], np.asarray(labels, np.int32)


def worked_arrays() -> dict:
    kernels = {"/": slashes.FIXED_KERNELS[:, :, 0, 0], "\\": slashes.FIXED_KERNELS[:, :, 0, 1]}
    return {"image": SLASH, "identity_kernel": IDENTITY,
            "identity_output": convolve(SLASH, IDENTITY),
            "kernels": {k: np.asarray(v) for k, v in kernels.items()},
            "outputs": {k: convolve(SLASH, v) for k, v in kernels.items()}}


def _grid(ax, array, title):
    ax.imshow(array, cmap="RdBu_r", vmin=-3, vmax=3)
    for (r, c), v in np.ndenumerate(array):
        ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=7)
    ax.set(title=title, xticks=[], yticks=[])


def plot_arrays(path, arrays):
    fig, axes = _common.subplots(1, 6, width=2.2, height=2.4)
    panels = [(arrays["image"], "slash image"), (arrays["identity_kernel"], "identity kernel"),
              (arrays["identity_output"], "image * identity"),
              (arrays["kernels"]["/"], "kernel '/'"), (arrays["outputs"]["/"], "image * '/'"),
              (arrays["outputs"]["\\"], "image * '\\'")]
    for ax, (array, title) in zip(axes[0], panels):
        _grid(ax, array, title)
    return _common.save_figure(fig, path)


def plot_probabilities(path, images, labels, probabilities):
    n = len(images)
    fig, axes = _common.subplots(2, n, width=1.9, height=1.9)
    for i in range(n):
        axes[0, i].imshow(images[i, :, :, 0], cmap="gray")
        axes[0, i].set(title=f"true {slashes.CLASSES[labels[i]][0]}", xticks=[], yticks=[])
        bars = axes[1, i].bar(["/", "\\"], probabilities[i], color=["tab:blue", "tab:orange"])
        axes[1, i].bar_label(bars, fmt="%.2f", fontsize=7)
        axes[1, i].set(ylim=(0, 1.15))
    axes[1, 0].set(ylabel="probability")
    return _common.save_figure(fig, path)


def run(workdir, *, learning_rate=0.05, steps=300, test_size=400, noise=0.2, seed=0) -> dict:
    _common.check_positive(learning_rate=learning_rate, steps=steps, test_size=test_size)
    workdir = _common.prepare_workdir(workdir)
    arrays = worked_arrays()
    train_x, train_y = all_strokes()
    test_x, test_y = slashes.make_slashes(test_size, noise, seed + 1)
    params, curve = slashes.train(slashes.init(jax.random.key(seed), slashes.FIXED_KERNELS),
                                  train_x, train_y, learning_rate=learning_rate, steps=steps,
                                  freeze_kernels=True)
    shown_x = np.concatenate([SLASH[None, :, :, None], np.fliplr(SLASH)[None, :, :, None],
                              test_x[:4]])
    shown_y = np.concatenate([[0, 1], test_y[:4]]).astype(int)
    probabilities = np.asarray(jax.nn.softmax(slashes.layers(params, shown_x)["logits"]))
    results = {
        "experiment": "exp15_conv_worked",
        "flags": {"learning_rate": learning_rate, "steps": steps, "test_size": test_size,
                  "noise": noise, "seed": seed},
        "arrays": arrays, "train_size": len(train_y),
        "train_accuracy": slashes.accuracy(params, train_x, train_y),
        "test_accuracy": slashes.accuracy(params, test_x, test_y),
        "kernels_unchanged": bool(np.array_equal(params["kernel"], slashes.FIXED_KERNELS)),
        "initial_loss": float(curve[0]), "final_loss": float(curve[-1]),
        "examples": {"labels": shown_y, "probabilities": probabilities},
    }
    plot_arrays(workdir / "conv_arrays.png", arrays)
    plot_probabilities(workdir / "probabilities.png", shown_x, shown_y, probabilities)
    return _common.finish(workdir, results, state=params, curves={"train_loss": curve})


def headline(r) -> str:
    forward, backward = (np.asarray(r["arrays"]["outputs"][k]) for k in ("/", "\\"))
    p = np.asarray(r["examples"]["probabilities"])
    return (f"identity kernel returns the 6x6 slash image; the '/' kernel scores "
            f"{forward.max():g} along it ({np.diag(np.fliplr(forward)).min():g} at the padded "
            f"ends), the back-slash kernel at most {backward.max():g}; the CNN with the two "
            f"kernels fixed, dense layer trained on {r['train_size']} clean strokes: "
            f"{100 * r['train_accuracy']:.0f} % on them, {100 * r['test_accuracy']:.1f} % on "
            f"noisy ones; p('/') of the worked '/' = {p[0, 0]:.3f}, p(back-slash) of the "
            f"mirrored one = {p[1, 1]:.3f}")


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, learning_rate=f.learning_rate, steps=f.steps, seed=f.seed)
    print(headline(r) + f". Wrote {f.workdir}/results.json, conv_arrays.png, probabilities.png.")


def define():
    _common.define_workdir_flag("exp15_conv_worked")
    flags.DEFINE_float("learning_rate", 0.05, "Adam's learning rate for the dense layer.")
    flags.DEFINE_integer("steps", 300, "Full-batch steps.")
    flags.DEFINE_integer("seed", 0, "Seed of the dense layer and the noisy test strokes.")


if __name__ == "__main__":
    cli.run(main, define)
