"""Experiment 11: backpropagation by hand: the chain rule on a small graph, then a two-layer net.

    python -m experiments.exp11_backprop
    -> see docs/lessons.md (the book's graph: loss 3, gradient 2 for the weight, 1 for the bias)

1. The book's graph: x1 = w * x, x2 = x1 + b, loss = |y_true - x2| with x = 2, w = 3, b = 1,
   y_true = 4. Forward: x1 = 6, x2 = 7, loss 3. Backward, one local derivative per edge:
   d loss / d x2 = sign(x2 - y_true) = 1, d x2 / d b = 1, d x2 / d x1 = 1, d x1 / d w = x = 2, so
   grad_w = 1 * 1 * 2 = 2 and grad_b = 1 * 1 = 1. `jax.grad` gives the same.
2. A two-layer network, h = sigmoid(x W1 + b1), logits = h W2 + b2, mean softmax cross-entropy:
   the deltas derived by hand (delta2 = (softmax - onehot) / n, dW2 = h^T delta2,
   delta1 = delta2 W2^T * h (1 - h), dW1 = x^T delta1) against `jax.grad`, in float64; then a
   few hundred steps of gradient descent driven by the hand-derived gradients alone, on a small
   random problem, whose loss falls as `jax.grad`'s would.
Outputs: results.json, backprop.png, metrics.jsonl, tensorboard/ and checkpoints/.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import _common
from jaxdigits import cli

SECTION = "Backpropagation by hand: the chain rule on a graph, a two-layer net's deltas"
BOOK = {"x": 2.0, "w": 3.0, "b": 1.0, "y_true": 4.0}
TEXT = {"loss": 3.0, "grad_w": 2.0, "grad_b": 1.0}


def graph_forward(w, b, x, y_true):
    x1 = w * x
    x2 = x1 + b
    return jnp.abs(y_true - x2), {"x1": x1, "x2": x2}


def graph_backward(w, b, x, y_true) -> dict:
    """The chain rule, edge by edge, written out."""
    _, values = graph_forward(w, b, x, y_true)
    grad_x2 = jnp.sign(values["x2"] - y_true)  # d|y - x2| / d x2
    grad_b = grad_x2 * 1.0  # x2 = x1 + b
    grad_x1 = grad_x2 * 1.0
    grad_w = grad_x1 * x  # x1 = w * x
    return {"grad_x2": float(grad_x2), "grad_x1": float(grad_x1), "grad_w": float(grad_w),
            "grad_b": float(grad_b)}


def two_layer_loss(params, x, y):
    h = jax.nn.sigmoid(x @ params["w1"] + params["b1"])  # [n, hidden]
    logits = h @ params["w2"] + params["b2"]  # [n, classes]
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1).mean()


def two_layer_grads_by_hand(params, x, y) -> dict:
    """Backpropagation written out: the deltas of each layer, then the weight gradients."""
    h = jax.nn.sigmoid(x @ params["w1"] + params["b1"])
    probabilities = jax.nn.softmax(h @ params["w2"] + params["b2"])
    onehot = jax.nn.one_hot(y, probabilities.shape[1], dtype=x.dtype)
    delta2 = (probabilities - onehot) / x.shape[0]  # d loss / d logits [n, classes]
    delta1 = (delta2 @ params["w2"].T) * h * (1 - h)  # d loss / d pre-activation [n, hidden]
    return {"w1": x.T @ delta1, "b1": delta1.sum(0), "w2": h.T @ delta2, "b2": delta2.sum(0)}


def make_problem(n: int, inputs: int, hidden: int, classes: int, seed: int):
    keys = jax.random.split(jax.random.key(seed), 6)
    x = jax.random.normal(keys[0], (n, inputs), jnp.float64)
    teacher = jax.random.normal(keys[1], (inputs, classes), jnp.float64)
    y = jnp.argmax(x @ teacher, axis=1)
    params = {"w1": 0.5 * jax.random.normal(keys[2], (inputs, hidden), jnp.float64),
              "b1": jnp.zeros(hidden, jnp.float64),
              "w2": 0.5 * jax.random.normal(keys[3], (hidden, classes), jnp.float64),
              "b2": jnp.zeros(classes, jnp.float64)}
    return params, x, y


def descend(params, x, y, *, learning_rate: float, steps: int):
    """Gradient descent on the hand-derived gradients; returns (params, loss per step)."""
    @jax.jit
    def update(params):
        grads = two_layer_grads_by_hand(params, x, y)
        return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), \
            two_layer_loss(params, x, y)

    curve = []
    for _ in range(steps):
        params, loss = update(params)
        curve.append(loss)
    return params, np.asarray(jax.device_get(curve))


def plot(path, graph, curve):
    fig, axes = _common.subplots(1, 2, width=5.6)
    ax = axes[0, 0]
    nodes = {"x": (0, 1), "w": (0, 0), "x1 = w*x": (1, 0.5), "b": (1, -0.5), "x2 = x1+b": (2, 0),
             "loss = |y - x2|": (3, 0)}
    edges = [("x", "x1 = w*x"), ("w", "x1 = w*x"), ("x1 = w*x", "x2 = x1+b"), ("b", "x2 = x1+b"),
             ("x2 = x1+b", "loss = |y - x2|")]
    for a, b in edges:
        ax.annotate("", nodes[b], nodes[a], arrowprops={"arrowstyle": "->", "color": "gray"})
    values = {"x": BOOK["x"], "w": BOOK["w"], "b": BOOK["b"], "x1 = w*x": graph["x1"],
              "x2 = x1+b": graph["x2"], "loss = |y - x2|": graph["loss"]}
    grads = {"w": graph["grad_w"], "b": graph["grad_b"], "x1 = w*x": graph["grad_x1"],
             "x2 = x1+b": graph["grad_x2"], "loss = |y - x2|": 1.0}
    for name, (px, py) in nodes.items():
        label = f"{name}\n= {values[name]:g}" + (f"\ngrad {grads[name]:g}" if name in grads else "")
        ax.text(px, py, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "fc": "lightyellow"})
    ax.set(xlim=(-0.6, 3.6), ylim=(-1, 1.5), title="The chain rule (forward value, gradient)")
    ax.axis("off")
    axes[0, 1].plot(curve)
    axes[0, 1].set(xlabel="step", ylabel="cross-entropy", yscale="log",
                   title="Descent on hand-derived gradients")
    return _common.save_figure(fig, path)


def run(workdir, *, n=64, inputs=5, hidden=8, classes=3, learning_rate=1.0, steps=300,
        seed=0) -> dict:
    _common.check_positive(n=n, inputs=inputs, hidden=hidden, classes=classes,
                           learning_rate=learning_rate, steps=steps)
    workdir = _common.prepare_workdir(workdir)
    with jax.enable_x64():
        loss, values = graph_forward(BOOK["w"], BOOK["b"], BOOK["x"], BOOK["y_true"])
        auto = jax.grad(lambda w, b: graph_forward(w, b, BOOK["x"], BOOK["y_true"])[0],
                        argnums=(0, 1))(BOOK["w"], BOOK["b"])
        graph = {"loss": float(loss), "x1": float(values["x1"]), "x2": float(values["x2"]),
                 **graph_backward(BOOK["w"], BOOK["b"], BOOK["x"], BOOK["y_true"]),
                 "jax_grad_w": float(auto[0]), "jax_grad_b": float(auto[1])}
        params, x, y = make_problem(n, inputs, hidden, classes, seed)
        by_hand = two_layer_grads_by_hand(params, x, y)
        autodiff = jax.grad(two_layer_loss)(params, x, y)
        difference = {k: float(jnp.max(jnp.abs(by_hand[k] - autodiff[k]))) for k in by_hand}
        scale = {k: float(jnp.max(jnp.abs(v))) for k, v in autodiff.items()}
        trained, curve = descend(params, x, y, learning_rate=learning_rate, steps=steps)
        accuracy = float(jnp.mean(jnp.argmax(jax.nn.sigmoid(x @ trained["w1"] + trained["b1"])
                                             @ trained["w2"] + trained["b2"], 1) == y))
    results = {
        "experiment": "exp11_backprop",
        "flags": {"n": n, "inputs": inputs, "hidden": hidden, "classes": classes,
                  "learning_rate": learning_rate, "steps": steps, "seed": seed},
        "graph": graph, "text": TEXT,
        "two_layer": {"max_abs_difference": difference,
                      "gradient_scale": scale,
                      "initial_loss": float(curve[0]), "final_loss": float(curve[-1]),
                      "train_accuracy": accuracy},
    }
    plot(workdir / "backprop.png", graph, curve)
    return _common.finish(workdir, results, state=trained, curves={"train_loss": curve})


def headline(r) -> str:
    g, t = r["graph"], r["two_layer"]
    return (f"the book's graph: loss {g['loss']:g}, grad w {g['grad_w']:g}, grad b {g['grad_b']:g} "
            f"(jax.grad: {g['jax_grad_w']:g}, {g['jax_grad_b']:g}; the text 3, 2, 1); two-layer "
            f"deltas by hand vs jax.grad: max difference "
            f"{max(t['max_abs_difference'].values()):.1e} (float64); descent on them: loss "
            f"{t['initial_loss']:.3f} -> {t['final_loss']:.4f}")


def text_numbers(r) -> dict:
    """The book's numbers beside the measured ones (exact)."""
    return {k: {"measured": r["graph"][k], "text": v, "tolerance": 0.0} for k, v in TEXT.items()}


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, learning_rate=f.learning_rate, steps=f.steps, seed=f.seed)
    print(headline(r) + f". Wrote {f.workdir}/results.json, backprop.png.")


def define():
    _common.define_workdir_flag("exp11_backprop")
    flags.DEFINE_float("learning_rate", 1.0, "Step of the descent on hand-derived gradients.")
    flags.DEFINE_integer("steps", 300, "Descent steps.")
    flags.DEFINE_integer("seed", 0, "Seed of the random problem.")


if __name__ == "__main__":
    cli.run(main, define)
