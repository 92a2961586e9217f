"""Experiment 4: least squares min ||Ax - b||^2 by gradient descent, against the closed form.

    python -m experiments.exp4_least_squares
    -> closed form x* = [-0.0797, 0.6141, 0.0930], cost 19.71246; gradient descent after 500
       steps: x = [-0.0800, 0.6133, 0.0950], cost 19.71248, ||x - x*|| = 2.2e-03
       (measured on the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14: 2.2 s CPU,
       7.9 s wall)

A is the 5x3 matrix below and b = [1, 2, 3, 4, 5]: five equations, three unknowns, no exact
solution. The closed form is the least-squares solution x* = argmin ||Ax - b||^2
(numpy.linalg.lstsq, i.e. the normal equations A^T A x = A^T b solved stably). Gradient descent
starts at x = 0 and follows grad = 2 A^T (Ax - b) with optax.sgd at learning rate 0.001 for 500
steps. Why it converges, and how fast: the iteration is stable while lr < 2 / lambda_max of the
Hessian 2 A^T A, and the error shrinks by (1 - lr * lambda_min) per step along the slowest
direction; the result reports both. Outputs: results.json and least_squares.png (the cost per
step against the closed-form cost; the distance to x* per step).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import _common
from jaxdigits import cli
from jaxdigits.errors import report_user_errors

A = np.array([[6, 6, 4], [3, 4, 0], [7, 2, 2], [0, 2, 1], [1, 6, 3]], np.float64)
B = np.array([1, 2, 3, 4, 5], np.float64)

SECTION = "Least squares: the closed form against gradient descent"


def cost(x, a, b):
    """||Ax - b||^2."""
    return jnp.sum(jnp.square(a @ x - b))


def gradient_descent(a, b, *, learning_rate: float, steps: int):
    """Returns (x after `steps` steps, iterates [steps + 1, 3], cost of each iterate)."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    tx = optax.sgd(learning_rate)
    x0 = jnp.zeros(a.shape[1], jnp.float32)

    def step(carry, _):
        x, opt_state = carry
        grad = jax.grad(cost)(x, a, b)  # = 2 A^T (Ax - b)
        updates, opt_state = tx.update(grad, opt_state, x)
        x = optax.apply_updates(x, updates)
        return (x, opt_state), x

    (x, _), iterates = jax.lax.scan(step, (x0, tx.init(x0)), length=steps)
    iterates = jnp.concatenate([x0[None], iterates])  # [steps + 1, 3]
    costs = jax.vmap(lambda x: cost(x, a, b))(iterates)
    return np.asarray(x), np.asarray(iterates), np.asarray(costs)


def plot(path, costs, distances, closed_cost, learning_rate):
    fig, axes = _common.subplots(1, 2, width=5.6)
    steps = np.arange(len(costs))
    ax = axes[0, 0]
    ax.plot(steps, costs, color="tab:blue", label=f"gradient descent (lr {learning_rate:g})")
    ax.axhline(closed_cost, color="k", linestyle="--", label=f"closed form: {closed_cost:.4f}")
    ax.set(xlabel="step", ylabel="||Ax - b||^2", yscale="log", title="Cost per step")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(steps, distances, color="tab:red", label="||x_t - x*||")
    ax.set(xlabel="step", ylabel="distance to the closed-form solution", yscale="log",
           title="Distance to x* (lstsq)")
    ax.legend()
    return _common.save_figure(fig, path)


def run(workdir, *, learning_rate=0.001, steps=500) -> dict:
    _common.check_positive(learning_rate=learning_rate, steps=steps)
    workdir = _common.prepare_workdir(workdir)
    x_star = np.linalg.lstsq(A, B, rcond=None)[0]
    closed_cost = float(np.sum((A @ x_star - B) ** 2))
    x, iterates, costs = gradient_descent(A, B, learning_rate=learning_rate, steps=steps)
    distances = np.linalg.norm(iterates - x_star, axis=1)
    eigenvalues = np.linalg.eigvalsh(2 * A.T @ A)  # Hessian of the cost, ascending
    results = {
        "experiment": "exp4_least_squares",
        "flags": {"learning_rate": learning_rate, "steps": steps},
        "A": A, "b": B,
        "closed_form": {"x": x_star, "cost": closed_cost},
        "gradient_descent": {"x": x, "cost": float(costs[-1]), "initial_cost": float(costs[0]),
                             "distance_to_closed_form": float(distances[-1])},
        "hessian_eigenvalues": eigenvalues,
        "stable_learning_rate_below": float(2 / eigenvalues[-1]),
        "slowest_contraction_per_step": float(abs(1 - learning_rate * eigenvalues[0])),
    }
    plot(workdir / "least_squares.png", costs, distances, closed_cost, learning_rate)
    return _common.finish(workdir, results, state={"x": x, "iterates": iterates},
                          curves={"cost": costs, "distance_to_closed_form": distances})


def headline(r) -> str:
    gd, cf, f = r["gradient_descent"], r["closed_form"], r["flags"]
    x = ", ".join(f"{v:.4f}" for v in cf["x"])
    return (f"least squares for a 5x3 A and b = [1, 2, 3, 4, 5]: closed form x* = [{x}]; gradient "
            f"descent (lr {f['learning_rate']:g}, {f['steps']} steps) ends "
            f"{gd['distance_to_closed_form']:.1e} from it, cost {gd['cost']:.6f} vs "
            f"{cf['cost']:.6f}; stable below lr {r['stable_learning_rate_below']:.4f}")


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, learning_rate=f.learning_rate, steps=f.steps)
    gd, cf = r["gradient_descent"], r["closed_form"]
    fmt = lambda v: "[" + ", ".join(f"{x:.4f}" for x in v) + "]"
    print(f"closed form x* = {fmt(cf['x'])}, cost {cf['cost']:.5f}; gradient descent after "
          f"{f.steps} steps: x = {fmt(gd['x'])}, cost {gd['cost']:.5f}, ||x - x*|| = "
          f"{gd['distance_to_closed_form']:.1e}. Wrote {f.workdir}/results.json, least_squares.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp4_least_squares")
    flags.DEFINE_float("learning_rate", 0.001, "Gradient-descent step size.")
    flags.DEFINE_integer("steps", 500, "Gradient-descent steps.")
    app.run(report_user_errors(main))
