"""Experiment 6: batch, stochastic, mini-batch and momentum gradient descent on one problem.

    python -m experiments.exp6_gd_variants
    -> cost after 300 updates at lr 0.1 (start 0.6931, minimum 0.1777): batch 0.1828,
       stochastic 0.1954, mini-batch 0.1830, momentum 0.1909 (momentum reaches 0.18 within about
       20 updates, then hovers with the mini-batch noise)
       (seed 0; the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14 from
       other jobs: 4.8 s CPU, 16 s wall)

A 2-D logistic regression: 1000 points from two Gaussian clouds (centres (1, 3) and (3, 1), unit
variance, 500 each), model p(y = 1 | x) = sigmoid(w.x + b), cost = mean binary cross-entropy over
all the points. The four methods make the same number of parameter updates at the same learning
rate, from the same start; only what each update sees differs:
- batch: the gradient over all 1000 points (exact, smooth, 1000 examples per update);
- stochastic: the gradient of one example (cheap, noisy);
- mini-batch: the gradient of 32 examples (in between);
- momentum: mini-batches of 32 with heavy-ball momentum 0.9 (jaxdigits' "momentum" optimizer).
Mini-batches come from a fresh shuffle every epoch. The full-data cost after every update is
plotted per iteration (one plot, as asked) and per example processed (what an update costs).
Outputs: results.json and gd_variants.png.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import _common
from jaxdigits import cli, optimizers
from jaxdigits.config import Config
from jaxdigits.errors import report_user_errors

SECTION = "Batch, stochastic, mini-batch and momentum gradient descent"


def make_data(n: int, seed: int):
    """(x [n, 2] float32, y [n] float32): two unit-variance Gaussian clouds, n / 2 points each."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) >= n // 2).astype(np.float32)
    centres = np.where(y[:, None] > 0, [3.0, 1.0], [1.0, 3.0])
    return (centres + rng.normal(size=(n, 2))).astype(np.float32), y


def cost(params, x, y):
    return optax.sigmoid_binary_cross_entropy(x @ params["w"] + params["b"], y).mean()


def batch_indices(n: int, batch_size: int, iterations: int, rng) -> np.ndarray:
    """[iterations, batch_size] example indices: consecutive slices of per-epoch shuffles."""
    if batch_size >= n:
        return np.tile(np.arange(n), (iterations, 1))
    per_epoch = n // batch_size
    epochs = -(-iterations // per_epoch)
    order = np.concatenate([rng.permutation(n)[:per_epoch * batch_size] for _ in range(epochs)])
    return order.reshape(-1, batch_size)[:iterations]


def train(tx, x, y, indices):
    """Applies one update per row of `indices`; returns the full-data cost before and after each."""
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}

    def step(carry, idx):
        params, opt_state = carry
        grads = jax.grad(cost)(params, x[idx], y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), cost(params, x, y)

    (params, _), costs = jax.lax.scan(step, (params, tx.init(params)), jnp.asarray(indices))
    return params, np.concatenate([[float(cost({"w": jnp.zeros(2), "b": jnp.zeros(())}, x, y))],
                                   np.asarray(costs)])


def minimum_cost(x, y, steps: int = 30) -> float:
    """The minimum of the cost, for reference: Newton's method on theta = [w1, w2, b]."""
    as_params = lambda theta: {"w": theta[:2], "b": theta[2]}
    objective = lambda theta: cost(as_params(theta), x, y)
    newton_step = jax.jit(lambda theta: theta - jnp.linalg.solve(jax.hessian(objective)(theta),
                                                                   jax.grad(objective)(theta)))
    theta = jnp.zeros(3)
    for _ in range(steps):
        theta = newton_step(theta)
    return float(objective(theta))


def plot(path, curves, batch_sizes, optimum):
    fig, axes = _common.subplots(1, 2, width=6.0)
    colors = {"batch": "tab:blue", "stochastic": "tab:orange", "mini-batch": "tab:green",
              "momentum": "tab:red"}
    for name, costs in curves.items():
        label = f"{name} ({batch_sizes[name]} per update)"
        axes[0, 0].plot(np.arange(len(costs)), costs, color=colors[name], label=label,
                        linewidth=1.5 if name == "batch" else 1.0)
        examples = np.arange(len(costs)) * batch_sizes[name]
        axes[0, 1].plot(examples[1:], costs[1:], color=colors[name], label=label)
    for ax in axes[0]:
        ax.axhline(optimum, color="k", linestyle=":", label=f"minimum cost {optimum:.4f}")
        ax.set(ylabel="cost on all points (cross-entropy)")
        ax.legend(fontsize=8)
    axes[0, 0].set(xlabel="iteration (parameter update)", title="Cost per iteration")
    axes[0, 1].set(xlabel="examples processed", xscale="log", title="Cost per example processed")
    return _common.save_figure(fig, path)


def run(workdir, *, points=1000, iterations=300, learning_rate=0.1, batch_size=32,
        momentum=0.9, seed=0) -> dict:
    _common.check_positive(points=points, iterations=iterations, learning_rate=learning_rate,
                           batch_size=batch_size)
    if not 0 <= momentum < 1:
        raise _common.UserError(f"--momentum must be in [0, 1), got {momentum}.")
    workdir = _common.prepare_workdir(workdir)
    x, y = make_data(points, seed)
    rng = np.random.default_rng(seed + 1)
    sgd = optimizers.OPTIMIZERS["sgd"](learning_rate, Config())
    heavy_ball = optimizers.OPTIMIZERS["momentum"](learning_rate, Config(momentum=momentum))
    methods = {"batch": (sgd, points), "stochastic": (sgd, 1), "mini-batch": (sgd, batch_size),
               "momentum": (heavy_ball, batch_size)}
    curves, finals = {}, {}
    for name, (tx, size) in methods.items():
        params, costs = train(tx, jnp.asarray(x), jnp.asarray(y),
                              batch_indices(points, size, iterations, rng))
        curves[name] = costs
        finals[name] = {"batch_size": size, "final_cost": float(costs[-1]),
                        "cost_after_10_percent": float(costs[max(iterations // 10, 1)]),
                        "w": params["w"], "b": params["b"],
                        "train_accuracy": float(jnp.mean(((x @ params["w"] + params["b"]) > 0)
                                                         == (y > 0.5)))}
    optimum = minimum_cost(jnp.asarray(x), jnp.asarray(y))
    results = {
        "experiment": "exp6_gd_variants",
        "flags": {"points": points, "iterations": iterations, "learning_rate": learning_rate,
                  "batch_size": batch_size, "momentum": momentum, "seed": seed},
        "initial_cost": float(curves["batch"][0]), "minimum_cost": optimum, "methods": finals,
        "cost_per_iteration": {name: costs for name, costs in curves.items()},
    }
    plot(workdir / "gd_variants.png", curves, {k: v[1] for k, v in methods.items()}, optimum)
    state = {n.replace("-", "_"): {"w": m["w"], "b": m["b"]} for n, m in finals.items()}
    return _common.finish(workdir, results, state=state,
                          curves={n.replace("-", "_"): c for n, c in curves.items()})


def headline(r) -> str:
    f, m = r["flags"], r["methods"]
    return (f"batch, stochastic, mini-batch ({f['batch_size']}) and momentum ({f['momentum']:g}) "
            f"gradient descent on a 2-D logistic regression, {f['iterations']} updates at lr "
            f"{f['learning_rate']:g}: costs "
            + " / ".join(f"{v['final_cost']:.4f}" for v in m.values())
            + f" (minimum {r['minimum_cost']:.4f})")


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, points=f.points, iterations=f.iterations, learning_rate=f.learning_rate,
            batch_size=f.batch_size, momentum=f.momentum, seed=f.seed)
    costs = ", ".join(f"{name} {m['final_cost']:.4f}" for name, m in r["methods"].items())
    print(f"cost after {f.iterations} updates at lr {f.learning_rate:g} (start "
          f"{r['initial_cost']:.4f}, minimum {r['minimum_cost']:.4f}): {costs}. "
          f"Wrote {f.workdir}/results.json, gd_variants.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp6_gd_variants")
    flags.DEFINE_integer("points", 1000, "Number of 2-D points.")
    flags.DEFINE_integer("iterations", 300, "Parameter updates per method.")
    flags.DEFINE_float("learning_rate", 0.1, "Step size of every method.")
    flags.DEFINE_integer("batch_size", 32, "Mini-batch size (mini-batch and momentum).")
    flags.DEFINE_float("momentum", 0.9, "Heavy-ball momentum.")
    flags.DEFINE_integer("seed", 0, "Seed of the data and the shuffles.")
    app.run(report_user_errors(main))
