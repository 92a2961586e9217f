"""Experiment 12: why non-linearity: a linear model fails on the moons where an MLP succeeds; the
activation functions; a loss surface with a local and a global minimum, and momentum.

    python -m experiments.exp12_nonlinearity
    -> see docs/lessons.md

1. The two moons (experiment 3's data, noise 0.1): logistic regression, a straight boundary,
   against experiment 3's 2-4-2-1 sigmoid MLP, both trained the same way (full-batch Adam).
   No straight line separates the moons, so the linear model stops well short of 100 %.
2. The activations: linear, sigmoid, ReLU, and sign against softsign x / (1 + |x|) (the smooth
   sign that gradient descent can train; experiment 1), with their derivatives.
3. f(x, y) = (x^2 - 1)^2 + 0.3 x + 0.5 y^2 has a local minimum near x = +0.96 and the global one
   near x = -1.04, a ridge between them. From (2, 1), gradient descent (the library's "sgd") at a
   step of 0.02 rolls into the local minimum and stays; heavy-ball momentum 0.9 (the library's
   "momentum") at the same step arrives with speed, crosses the ridge and settles in the global
   minimum. The minima are checked against the roots of f's derivative (numpy).
Outputs: results.json, moons_linear.png, activations.png, loss_surface.png, metrics.jsonl,
tensorboard/ and checkpoints/.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from experiments import _common, exp3_moons_mlp
from jaxdigits import cli, optimizers
from jaxdigits.config import Config

SECTION = "Non-linearity: linear vs MLP on the moons, activations, local minima and momentum"
START = (2.0, 1.0)


def surface(p):
    """The 2-D loss: a double well in x (tilted so the left well is lower), a bowl in y."""
    x, y = p[0], p[1]
    return (x ** 2 - 1) ** 2 + 0.3 * x + 0.5 * y ** 2


def minima() -> dict:
    """Both minima from the roots of d f / d x = 4x^3 - 4x + 0.3 (numpy), y = 0."""
    roots = np.sort(np.roots([4.0, 0.0, -4.0, 0.3]).real)  # left min, ridge, right min
    value = lambda x: float(surface(np.array([x, 0.0])))
    return {"global": [float(roots[0]), 0.0, value(roots[0])], "ridge_x": float(roots[1]),
            "local": [float(roots[2]), 0.0, value(roots[2])]}


def descend(tx, steps: int):
    """Iterates of `tx` on the surface from START: [steps + 1, 2]."""
    def step(carry, _):
        p, state = carry
        updates, state = tx.update(jax.grad(surface)(p), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), p

    p0 = jnp.asarray(START)
    _, path = jax.lax.scan(step, (p0, tx.init(p0)), length=steps)
    return np.concatenate([np.asarray(START)[None], np.asarray(path)])


def moons(points: int, steps: int, seed: int):
    """(linear params, MLP params, data, accuracies) on the moons."""
    x, y = exp3_moons_mlp.make_moons(points, 0.1, seed)
    split = int(0.8 * points)
    key_linear, key_mlp = jax.random.split(jax.random.key(seed))
    linear, linear_losses = exp3_moons_mlp.train(exp3_moons_mlp.init(key_linear, (2, 1)), x[:split],
                                                 y[:split], learning_rate=0.05, steps=steps)
    mlp, mlp_losses = exp3_moons_mlp.train(exp3_moons_mlp.init(key_mlp), x[:split], y[:split],
                                           learning_rate=0.05, steps=steps)
    scores = {name: {"train_accuracy": exp3_moons_mlp.accuracy(p, x[:split], y[:split]),
                     "test_accuracy": exp3_moons_mlp.accuracy(p, x[split:], y[split:]),
                     "final_loss": float(curve[-1])}
              for name, p, curve in [("linear", linear, linear_losses), ("mlp", mlp, mlp_losses)]}
    return linear, mlp, (x, y), scores, {"linear_loss": linear_losses, "mlp_loss": mlp_losses}


def plot_moons(path, linear, mlp, x, y, scores):
    fig, axes = _common.subplots(1, 2, width=5.0)
    grid = np.stack(np.meshgrid(np.linspace(-1.5, 2.5, 200), np.linspace(-1, 1.5, 150)), -1)
    for ax, (name, params) in zip(axes[0], [("linear", linear), ("mlp", mlp)]):
        logits = exp3_moons_mlp.apply(params, grid.reshape(-1, 2))[0].reshape(grid.shape[:2])
        ax.contourf(grid[..., 0], grid[..., 1], np.asarray(logits) > 0, alpha=0.25, cmap="coolwarm")
        ax.contour(grid[..., 0], grid[..., 1], np.asarray(logits), [0], colors="k")
        ax.scatter(*x.T, c=y, s=6, cmap="coolwarm")
        title = "logistic regression" if name == "linear" else "MLP 2-4-2-1 (sigmoid)"
        ax.set(title=f"{title}: test {100 * scores[name]['test_accuracy']:.1f} %")
    return _common.save_figure(fig, path)


def plot_activations(path):
    z = np.linspace(-4, 4, 401)
    functions = {"linear": (z, np.ones_like(z)),
                 "sigmoid": (1 / (1 + np.exp(-z)), np.exp(-z) / (1 + np.exp(-z)) ** 2),
                 "ReLU": (np.maximum(z, 0), (z > 0).astype(float)),
                 "sign vs softsign": (np.sign(z), 1 / (1 + np.abs(z)) ** 2)}
    fig, axes = _common.subplots(1, 4, width=3.4, height=3.2)
    for ax, (name, (value, slope)) in zip(axes[0], functions.items()):
        ax.plot(z, value, label=name.split(" vs ")[0])
        if name.startswith("sign"):
            ax.plot(z, z / (1 + np.abs(z)), label="softsign")
        ax.plot(z, slope, "--", label="derivative" + (" (softsign)" if "sign" in name else ""))
        ax.set(title=name, xlabel="z")
        ax.legend(fontsize=7)
    return _common.save_figure(fig, path)


def plot_surface(path, paths, found):
    xs, ys = np.meshgrid(np.linspace(-1.8, 2.2, 200), np.linspace(-1.3, 1.3, 150))
    fig, axes = _common.subplots(1, 2, width=5.6)
    ax = axes[0, 0]
    ax.contour(xs, ys, surface(np.stack([xs, ys])), levels=np.linspace(-0.3, 6, 30), cmap="viridis")
    for name, track in paths.items():
        ax.plot(*track.T, ".-", markersize=2, linewidth=0.8, label=name)
    for which, marker in (("global", "*"), ("local", "^")):
        ax.plot(*found[which][:2], marker, color="red", markersize=12, label=f"{which} minimum")
    ax.set(xlabel="x", ylabel="y", title="f(x, y) = (x^2 - 1)^2 + 0.3x + 0.5y^2")
    ax.legend(fontsize=8)
    for name, track in paths.items():
        axes[0, 1].plot(surface(track.T), label=name)
    axes[0, 1].set(xlabel="step", ylabel="f", title="Loss along the way")
    axes[0, 1].legend(fontsize=8)
    return _common.save_figure(fig, path)


def run(workdir, *, points=1000, steps=3000, surface_steps=200, learning_rate=0.02,
        momentum=0.9, seed=0) -> dict:
    _common.check_positive(points=points, steps=steps, surface_steps=surface_steps,
                           learning_rate=learning_rate)
    workdir = _common.prepare_workdir(workdir)
    linear, mlp, (x, y), scores, curves = moons(points, steps, seed)
    found = minima()
    paths = {"gradient descent": descend(optimizers.OPTIMIZERS["sgd"](learning_rate, Config()),
                                         surface_steps),
             f"momentum {momentum:g}": descend(optimizers.OPTIMIZERS["momentum"](
                 learning_rate, Config(momentum=momentum)), surface_steps)}
    ends = {name: {"x": float(p[-1, 0]), "y": float(p[-1, 1]), "f": float(surface(p[-1])),
                   "basin": "global" if p[-1, 0] < found["ridge_x"] else "local"}
            for name, p in paths.items()}
    results = {
        "experiment": "exp12_nonlinearity",
        "flags": {"points": points, "steps": steps, "surface_steps": surface_steps,
                  "learning_rate": learning_rate, "momentum": momentum, "seed": seed},
        "moons": scores, "minima": found, "descent": ends, "start": list(START),
    }
    plot_moons(workdir / "moons_linear.png", linear, mlp, x, y, scores)
    plot_activations(workdir / "activations.png")
    plot_surface(workdir / "loss_surface.png", paths, found)
    state = {"linear": [list(layer) for layer in linear], "mlp": [list(layer) for layer in mlp],
             "paths": {"gd": paths["gradient descent"],
                       "momentum": paths[f"momentum {momentum:g}"]}}
    curves = {**curves, "surface_gd": surface(paths["gradient descent"].T),
              "surface_momentum": surface(paths[f"momentum {momentum:g}"].T)}
    return _common.finish(workdir, results, state=state, curves=curves)


def headline(r) -> str:
    m, (gd, mo) = r["moons"], r["descent"].values()
    lr = r["flags"]["learning_rate"]
    return (f"moons: logistic regression {100 * m['linear']['test_accuracy']:.1f} % vs MLP "
            f"{100 * m['mlp']['test_accuracy']:.1f} % (test); on a double well from (2, 1) at "
            f"step {lr:g}, gradient descent stops in the {gd['basin']} minimum (x = {gd['x']:.2f}, "
            f"f = {gd['f']:.3f}) and momentum {r['flags']['momentum']:g} crosses to the "
            f"{mo['basin']} one (x = {mo['x']:.2f}, f = {mo['f']:.3f}; numpy's roots: "
            f"{r['minima']['global'][0]:.2f}, {r['minima']['local'][0]:.2f})")


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, learning_rate=f.learning_rate, momentum=f.momentum, seed=f.seed)
    print(headline(r) + f". Wrote {f.workdir}/results.json and three PNGs.")


def define():
    _common.define_workdir_flag("exp12_nonlinearity")
    flags.DEFINE_float("learning_rate", 0.02, "Step of gradient descent and momentum on f(x, y).")
    flags.DEFINE_float("momentum", 0.9, "Heavy-ball momentum.")
    flags.DEFINE_integer("seed", 0, "Seed of the moons and the initialisation.")


if __name__ == "__main__":
    cli.run(main, define)
