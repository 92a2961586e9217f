"""Experiment 1: the perceptron, and a softsign unit trained by gradient descent beside it.

    python -m experiments.exp1_perceptron
    -> perceptron: separated the 100 points after 45 updates in 8 epochs (Novikoff bound 754);
       softsign by GD: MSE 1.123 -> 0.072, train accuracy 100%
       (seed 0; the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14 from
       other jobs: 2.5 s CPU, 7.8 s wall)

100 points drawn uniformly in [-1, 1]^2 and labelled +1/-1 by a fixed line, keeping only points at
least `--margin` from it, so the data are linearly separable with a known margin. Rosenblatt's
rule: predict sign(w.x + b); on each mistake, w <- w + y x and b <- b + y. It stops after an epoch
without mistakes, and Novikoff's theorem bounds its number of updates by (R / gamma)^2, with R the
largest norm of [x, 1] and gamma the margin of the labelling line in those coordinates; the
result reports both. The softsign unit, s(z) = z / (1 + |z|), is differentiable, so it is trained
on the mean squared error to the labels by plain gradient descent (optax.sgd), whose loss curve is
plotted. Outputs: results.json and perceptron.png (points, both lines, mistakes per epoch, loss).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import _common
from jaxdigits import cli
from jaxdigits.errors import report_user_errors

# The line that labels the points: y = sign(TRUE_W . x + TRUE_B).
TRUE_W, TRUE_B = np.array([1.0, -2.0]), 0.3

SECTION = "Perceptron and a softsign unit on separable 2-D points"


def make_points(n: int, margin: float, seed: int):
    """(x [n, 2] float64, y [n] in {-1, +1}): uniform points at least `margin` from the line."""
    rng = np.random.default_rng(seed)
    x = np.empty((0, 2))
    while len(x) < n:
        candidates = rng.uniform(-1, 1, size=(4 * n, 2))
        distance = np.abs(candidates @ TRUE_W + TRUE_B) / np.linalg.norm(TRUE_W)
        x = np.concatenate([x, candidates[distance >= margin]])
    x = x[:n]
    return x, np.where(x @ TRUE_W + TRUE_B > 0, 1.0, -1.0)


def train_perceptron(x, y, max_epochs: int):
    """The classic rule over the points in order; returns (w, b, mistakes per epoch)."""
    w, b, mistakes = np.zeros(2), 0.0, []
    for _ in range(max_epochs):
        errors = 0
        for xi, yi in zip(x, y):
            if np.sign(xi @ w + b) != yi:  # sign(0) = 0 counts as a mistake, so w = 0 moves.
                w, b, errors = w + yi * xi, b + yi, errors + 1
        mistakes.append(errors)
        if errors == 0:
            break
    return w, b, mistakes


def novikoff_bound(x, y) -> float:
    """(R / gamma)^2 for the augmented points [x, 1] and the labelling line (TRUE_W, TRUE_B)."""
    augmented = np.concatenate([x, np.ones((len(x), 1))], axis=1)  # [n, 3]
    u = np.append(TRUE_W, TRUE_B)
    gamma = np.min(y * (augmented @ u)) / np.linalg.norm(u)
    radius = np.max(np.linalg.norm(augmented, axis=1))
    return float((radius / gamma) ** 2)


def train_softsign(x, y, *, learning_rate: float, steps: int, seed: int):
    """Full-batch gradient descent on mean (y - softsign(w.x + b))^2; returns (params, losses)."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    params = {"w": 0.1 * jax.random.normal(jax.random.key(seed), (2,)), "b": jnp.zeros(())}
    tx = optax.sgd(learning_rate)

    def loss_fn(params):
        z = x @ params["w"] + params["b"]  # [n]
        return jnp.mean((y - jax.nn.soft_sign(z)) ** 2)

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=steps)
    return params, np.asarray(losses), float(loss_fn(params))


def _line(ax, w, b, label, style):
    xs = np.array([-1.0, 1.0])
    ax.plot(xs, -(w[0] * xs + b) / w[1], style, label=label, linewidth=2)


def plot(path, x, y, perceptron, softsign, mistakes, losses):
    fig, axes = _common.subplots(1, 3, width=4.6)
    ax = axes[0, 0]
    ax.scatter(*x[y > 0].T, marker="+", color="tab:blue", label="y = +1")
    ax.scatter(*x[y < 0].T, marker="o", facecolors="none", edgecolors="tab:red", label="y = -1")
    _line(ax, TRUE_W, TRUE_B, "labelling line", "k:")
    _line(ax, *perceptron, "perceptron", "tab:green")
    _line(ax, np.asarray(softsign["w"]), float(softsign["b"]), "softsign (GD)", "tab:purple")
    ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="x1", ylabel="x2", title="Separating lines")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.95)
    ax = axes[0, 1]
    ax.bar(np.arange(1, len(mistakes) + 1), mistakes, color="tab:green")
    ax.set(xlabel="epoch", ylabel="mistakes (= updates)", title="Perceptron mistakes per epoch")
    ax = axes[0, 2]
    ax.plot(np.arange(1, len(losses) + 1), losses, color="tab:purple", label="softsign, MSE")
    ax.set(xlabel="gradient-descent step", ylabel="mean squared error", yscale="log",
           title="Softsign unit: training loss")
    ax.legend()
    return _common.save_figure(fig, path)


def run(workdir, *, points=100, margin=0.05, max_epochs=100, learning_rate=0.5, steps=500,
        seed=0) -> dict:
    _common.check_positive(points=points, max_epochs=max_epochs, learning_rate=learning_rate,
                           steps=steps, margin=margin)
    workdir = _common.prepare_workdir(workdir)
    x, y = make_points(points, margin, seed)
    w, b, mistakes = train_perceptron(x, y, max_epochs)
    softsign, losses, final_loss = train_softsign(x, y, learning_rate=learning_rate, steps=steps,
                                                  seed=seed)
    softsign_pred = np.sign(x @ np.asarray(softsign["w"]) + float(softsign["b"]))
    results = {
        "experiment": "exp1_perceptron",
        "flags": {"points": points, "margin": margin, "max_epochs": max_epochs,
                  "learning_rate": learning_rate, "steps": steps, "seed": seed},
        "perceptron": {"w": w, "b": b, "epochs": len(mistakes), "updates": int(sum(mistakes)),
                       "mistakes_per_epoch": mistakes, "converged": mistakes[-1] == 0,
                       "novikoff_bound": novikoff_bound(x, y),
                       "train_accuracy": float(np.mean(np.sign(x @ w + b) == y))},
        "softsign": {"w": softsign["w"], "b": softsign["b"], "initial_loss": float(losses[0]),
                     "final_loss": final_loss,
                     "train_accuracy": float(np.mean(softsign_pred == y))},
    }
    plot(workdir / "perceptron.png", x, y, (w, b), softsign, mistakes, losses)
    return _common.finish(workdir, results,
                          state={"perceptron": {"w": w, "b": np.asarray(b)}, "softsign": softsign},
                          curves={"softsign_mse": losses, "perceptron_mistakes": mistakes})


def headline(r) -> str:
    p, s, f = r["perceptron"], r["softsign"], r["flags"]
    return (f"the perceptron separates {f['points']} separable 2-D points (margin {f['margin']:g}) "
            f"after {p['updates']} updates in {p['epochs']} epochs (Novikoff bound "
            f"{p['novikoff_bound']:.0f}); a softsign unit trained by gradient descent beside it: "
            f"MSE {s['initial_loss']:.3f} -> {s['final_loss']:.3f}, "
            f"{100 * s['train_accuracy']:.0f} %")


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, points=f.points, margin=f.margin, max_epochs=f.max_epochs,
            learning_rate=f.learning_rate, steps=f.steps, seed=f.seed)
    p, s = r["perceptron"], r["softsign"]
    print(f"perceptron: {'separated' if p['converged'] else 'NOT separated'} the {f.points} points "
          f"after {p['updates']} updates in {p['epochs']} epochs (Novikoff bound "
          f"{p['novikoff_bound']:.0f}); softsign by GD: MSE {s['initial_loss']:.3f} -> "
          f"{s['final_loss']:.3f}, train accuracy {100 * s['train_accuracy']:.0f}%. "
          f"Wrote {f.workdir}/results.json, perceptron.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp1_perceptron")
    flags.DEFINE_integer("points", 100, "Number of 2-D points.")
    flags.DEFINE_float("margin", 0.05, "Smallest distance of a point from the labelling line.")
    flags.DEFINE_integer("max_epochs", 100, "Perceptron epochs at most.")
    flags.DEFINE_float("learning_rate", 0.5, "Gradient-descent step of the softsign unit.")
    flags.DEFINE_integer("steps", 500, "Gradient-descent steps of the softsign unit.")
    flags.DEFINE_integer("seed", 0, "Seed of the points and the softsign initialisation.")
    app.run(report_user_errors(main))
