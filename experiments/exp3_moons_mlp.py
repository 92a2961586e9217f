"""Experiment 3: a 2-4-2-1 sigmoid MLP on the two moons, and what its hidden layer does.

    python -m experiments.exp3_moons_mlp
    -> 2-4-2-1 sigmoid MLP, Adam, 3000 steps: loss 0.756 -> 0.0001; train accuracy 100.0%,
       test accuracy 100.0% (200 points)
       (seed 0; the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14 from
       other jobs: 6.2 s CPU, 29 s wall)

1000 points of the two-moons data (500 per moon, Gaussian noise 0.1, as scikit-learn's
make_moons), 800 for training and 200 held out for the test accuracy. The network is
2 -> 4 -> 2 -> 1 with a sigmoid after every layer, trained full-batch by Adam (optax.adam) on the
binary cross-entropy. Because the last hidden layer has 2 units, the function
x -> h2(x) is a map of the plane to itself: plotting h2 for every input shows how the network
bends the moons until one straight line (the output unit) separates them. Outputs: results.json,
moons.png (the decision boundary as a filled contour, the 2-D embedding with the output unit's
line, the loss) and hidden_units.png (each h2 unit as a function of the input).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import _common
from jaxdigits import cli
from jaxdigits.errors import report_user_errors

LAYERS = (2, 4, 2, 1)

SECTION = "A small MLP on the two moons"


def make_moons(n: int, noise: float, seed: int):
    """(x [n, 2] float32, y [n] float32 in {0, 1}), shuffled: two interleaved half circles."""
    rng = np.random.default_rng(seed)
    n_outer = n // 2
    t_outer, t_inner = np.linspace(0, np.pi, n_outer), np.linspace(0, np.pi, n - n_outer)
    x = np.concatenate([np.stack([np.cos(t_outer), np.sin(t_outer)], 1),
                        np.stack([1 - np.cos(t_inner), 0.5 - np.sin(t_inner)], 1)])
    y = np.concatenate([np.zeros(n_outer), np.ones(n - n_outer)])
    x += rng.normal(0, noise, x.shape)
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order].astype(np.float32)


def init(key, layers=LAYERS):
    """[(w [in, out], b [out]), ...] with Glorot-normal weights and zero biases."""
    keys = jax.random.split(key, len(layers) - 1)
    glorot = jax.nn.initializers.glorot_normal()
    return [(glorot(k, (n_in, n_out)), jnp.zeros(n_out))
            for k, n_in, n_out in zip(keys, layers[:-1], layers[1:])]


def apply(params, x):
    """Returns (output logit [n], activations of every hidden layer)."""
    hidden = []
    for w, b in params[:-1]:
        x = jax.nn.sigmoid(x @ w + b)  # [n, width]
        hidden.append(x)
    w, b = params[-1]
    return (x @ w + b)[:, 0], hidden  # The output sigmoid is inside the loss (stable).


def train(params, x, y, *, learning_rate: float, steps: int):
    tx = optax.adam(learning_rate)

    def loss_fn(params):
        logits, _ = apply(params, x)
        return optax.sigmoid_binary_cross_entropy(logits, y).mean()

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=steps)
    return params, np.asarray(losses)


def accuracy(params, x, y) -> float:
    return float(jnp.mean((apply(params, x)[0] > 0) == (y > 0.5)))


def _scatter(ax, x, y, **kwargs):
    ax.scatter(*x[y < 0.5].T, s=9, color="tab:blue", edgecolors="white", linewidths=0.3,
               label="moon 0", **kwargs)
    ax.scatter(*x[y > 0.5].T, s=9, color="tab:orange", edgecolors="white", linewidths=0.3,
               label="moon 1", **kwargs)


def plot(workdir, params, x_train, y_train, x_test, y_test, losses, test_acc):
    xx, yy = np.meshgrid(np.linspace(-1.7, 2.7, 220), np.linspace(-1.2, 1.7, 160))
    grid = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    logits, hidden = apply(params, grid)
    prob = np.asarray(jax.nn.sigmoid(logits)).reshape(xx.shape)

    fig, axes = _common.subplots(1, 3, width=5.0)
    ax = axes[0, 0]
    filled = ax.contourf(xx, yy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    ax.contour(xx, yy, prob, levels=[0.5], colors="k", linewidths=1.5)
    fig.colorbar(filled, ax=ax, label="p(moon 1)")
    _scatter(ax, x_test, y_test)
    ax.set(xlabel="x1", ylabel="x2", title=f"Decision boundary (test acc. {100 * test_acc:.1f}%)")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[0, 1]
    embedded = np.asarray(apply(params, x_train)[1][-1])  # [n, 2], the last hidden layer
    _scatter(ax, embedded, y_train, alpha=0.8)
    (w, b), h = params[-1], np.linspace(0, 1, 50)
    w = np.asarray(w)[:, 0]
    ax.plot(h, -(w[0] * h + float(b[0])) / w[1], "k--", label="output unit: p = 0.5")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="hidden unit h2[0]",
           ylabel="hidden unit h2[1]", title="Training points in the 2-D hidden layer")
    ax.legend(loc="best", fontsize=8)

    ax = axes[0, 2]
    ax.plot(np.arange(1, len(losses) + 1), losses, color="tab:green", label="training loss")
    ax.set(xlabel="Adam step (full batch)", ylabel="binary cross-entropy", yscale="log",
           title="Training loss")
    ax.legend()
    _common.save_figure(fig, workdir / "moons.png")

    fig, axes = _common.subplots(1, 2, width=5.2)
    for unit, ax in enumerate(axes[0]):
        values = np.asarray(hidden[-1][:, unit]).reshape(xx.shape)
        filled = ax.contourf(xx, yy, values, levels=np.linspace(0, 1, 11), cmap="viridis")
        fig.colorbar(filled, ax=ax, label=f"h2[{unit}]")
        _scatter(ax, x_test, y_test, alpha=0.7)
        ax.set(xlabel="x1", ylabel="x2", title=f"Hidden unit h2[{unit}] as a function of the input")
        ax.legend(loc="lower left", fontsize=8)
    _common.save_figure(fig, workdir / "hidden_units.png")


def run(workdir, *, points=1000, noise=0.1, test_fraction=0.2, learning_rate=0.05, steps=3000,
        seed=0) -> dict:
    _common.check_positive(points=points, learning_rate=learning_rate, steps=steps)
    if not 0 < test_fraction < 1 or noise < 0:
        raise _common.UserError("--test_fraction must be in (0, 1) and --noise 0 or more.")
    workdir = _common.prepare_workdir(workdir)
    x, y = make_moons(points, noise, seed)
    n_test = max(int(round(points * test_fraction)), 1)
    x_train, y_train, x_test, y_test = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    params = init(jax.random.key(seed))
    params, losses = train(params, jnp.asarray(x_train), jnp.asarray(y_train),
                           learning_rate=learning_rate, steps=steps)
    test_acc = accuracy(params, x_test, y_test)
    results = {
        "experiment": "exp3_moons_mlp",
        "flags": {"points": points, "noise": noise, "test_fraction": test_fraction,
                  "learning_rate": learning_rate, "steps": steps, "seed": seed},
        "layers": list(LAYERS), "activation": "sigmoid", "optimizer": "adam",
        "train_count": len(y_train), "test_count": len(y_test),
        "initial_loss": float(losses[0]), "final_loss": float(losses[-1]),
        "train_accuracy": accuracy(params, x_train, y_train), "test_accuracy": test_acc,
    }
    plot(workdir, params, x_train, y_train, x_test, y_test, losses, test_acc)
    return _common.finish(workdir, results, state=[list(layer) for layer in params],
                          curves={"train_loss": losses})


def headline(r) -> str:
    f = r["flags"]
    return (f"a 2-4-2-1 sigmoid MLP, Adam {f['learning_rate']:g}, {f['steps']:,} full-batch steps "
            f"on two moons (noise {f['noise']:g}): loss {r['initial_loss']:.3f} -> "
            f"{r['final_loss']:.4f}, {100 * r['test_accuracy']:.1f} % on the {r['test_count']} "
            f"held-out points")


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, points=f.points, noise=f.noise, test_fraction=f.test_fraction,
            learning_rate=f.learning_rate, steps=f.steps, seed=f.seed)
    print(f"2-4-2-1 sigmoid MLP, Adam, {f.steps} steps: loss {r['initial_loss']:.3f} -> "
          f"{r['final_loss']:.4f}; train accuracy {100 * r['train_accuracy']:.1f}%, test accuracy "
          f"{100 * r['test_accuracy']:.1f}% ({r['test_count']} points). "
          f"Wrote {f.workdir}/results.json, moons.png, hidden_units.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp3_moons_mlp")
    flags.DEFINE_integer("points", 1000, "Number of two-moons points.")
    flags.DEFINE_float("noise", 0.1, "Standard deviation of the Gaussian noise.")
    flags.DEFINE_float("test_fraction", 0.2, "Fraction of points held out for the test accuracy.")
    flags.DEFINE_float("learning_rate", 0.05, "Adam's learning rate.")
    flags.DEFINE_integer("steps", 3000, "Full-batch Adam steps.")
    flags.DEFINE_integer("seed", 0, "Seed of the data and the initialisation.")
    app.run(report_user_errors(main))
