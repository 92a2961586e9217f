"""Experiment 2: logistic regression by gradient descent and by Newton's method; they agree.

    python -m experiments.exp2_logistic_newton
    -> gradient descent (20000 steps): w=0.7702 b=-4.3667; Newton (6 steps): w=0.7702 b=-4.3669;
       the probability curves differ by at most 1.2e-05; decision boundary x = 5.670
       (seed 0; the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14 from
       other jobs: 4.2 s CPU, 18 s wall)

200 points x uniform in [0, 10], labelled 1 right of x = 5 and 0 left of it, each label flipped
with probability 0.1. The model is p(y = 1 | x) = sigmoid(w x + b); the objective is the mean
binary cross-entropy plus (l2 / 2) w^2 (the bias is not penalised, as in jaxdigits.losses).
It is convex and smooth, so both methods must find the same minimiser:
- gradient descent (optax.sgd, a fixed step) needs thousands of steps, because x is not centred
  and the Hessian is badly conditioned;
- Newton's method, theta <- theta - H^-1 grad, with the exact 2x2 Hessian from jax.hessian,
  converges quadratically in a handful of steps.
Outputs: results.json and logistic.png (data and both probability curves; the objective gap
per iteration of each method on a log scale).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import _common
from jaxdigits import cli
from jaxdigits.errors import report_user_errors

SECTION = "Logistic regression: gradient descent against Newton's method"


def make_data(n: int, flip: float, seed: int):
    """(x [n] float32 in [0, 10], y [n] float32 in {0, 1}): a step at x = 5 with flipped labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, n)
    y = (x > 5).astype(np.float32)
    flipped = rng.random(n) < flip
    return x.astype(np.float32), np.where(flipped, 1 - y, y).astype(np.float32), int(flipped.sum())


def make_objective(x, y, l2: float):
    """J(theta) for theta = [w, b]: mean binary cross-entropy + (l2 / 2) w^2."""
    x, y = jnp.asarray(x), jnp.asarray(y)

    def objective(theta):
        logits = theta[0] * x + theta[1]  # [n]
        return optax.sigmoid_binary_cross_entropy(logits, y).mean() + 0.5 * l2 * theta[0] ** 2

    return objective


def gradient_descent(objective, theta, learning_rate: float, steps: int):
    """Plain gradient descent with optax.sgd; returns (theta, objective before each step)."""
    tx = optax.sgd(learning_rate)

    def step(carry, _):
        theta, opt_state = carry
        value, grad = jax.value_and_grad(objective)(theta)
        updates, opt_state = tx.update(grad, opt_state, theta)
        return (optax.apply_updates(theta, updates), opt_state), value

    (theta, _), values = jax.lax.scan(step, (theta, tx.init(theta)), length=steps)
    return theta, np.asarray(values)


def newton(objective, theta, max_steps: int, tolerance: float):
    """theta <- theta - H^-1 grad until a step is shorter than `tolerance`; returns (theta, J's)."""
    grad_fn, hessian_fn = jax.jit(jax.grad(objective)), jax.jit(jax.hessian(objective))
    values = [float(objective(theta))]
    for _ in range(max_steps):
        delta = jnp.linalg.solve(hessian_fn(theta), grad_fn(theta))  # [2]
        theta = theta - delta
        values.append(float(objective(theta)))
        if float(jnp.linalg.norm(delta)) < tolerance:
            break
    return theta, np.asarray(values)


def plot(path, x, y, theta_gd, theta_newton, gd_values, newton_values, optimum):
    fig, axes = _common.subplots(1, 2, width=5.8)
    grid = np.linspace(0, 10, 400)
    ax = axes[0, 0]
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, len(y))
    ax.scatter(x, y + jitter, s=10, alpha=0.5, color="gray", label="data (labels jittered)")
    ax.plot(grid, jax.nn.sigmoid(theta_gd[0] * grid + theta_gd[1]), color="tab:blue", linewidth=4,
            alpha=0.5, label="gradient descent")
    ax.plot(grid, jax.nn.sigmoid(theta_newton[0] * grid + theta_newton[1]), "--", color="tab:red",
            label="Newton's method")
    ax.axvline(5, color="k", linestyle=":", linewidth=1)
    ax.set(xlabel="x", ylabel="p(y = 1 | x)", title="Logistic regression: fitted probability")
    ax.legend(loc="center right", fontsize=8)
    ax = axes[0, 1]
    # J is float32 (about 0.38, resolution ~3e-8): gaps under 1e-7 are rounding, not progress.
    resolved = lambda gap: np.where(gap > 1e-7, gap, np.nan)
    ax.plot(np.arange(len(gd_values)), resolved(gd_values - optimum), color="tab:blue",
            label="gradient descent")
    ax.plot(np.arange(len(newton_values)), resolved(newton_values - optimum), "o-",
            color="tab:red", label="Newton's method")
    ax.set(xscale="symlog", yscale="log", xlabel="iteration",
           ylabel="J(theta) - J(theta*)  (shown down to 1e-7, float32)",
           title="Objective gap per iteration")
    ax.legend()
    return _common.save_figure(fig, path)


def run(workdir, *, points=200, flip=0.1, l2=0.01, learning_rate=0.1, steps=20000,
        newton_steps=20, seed=0) -> dict:
    _common.check_positive(points=points, learning_rate=learning_rate, steps=steps,
                           newton_steps=newton_steps)
    if not 0 <= flip < 0.5 or l2 < 0:
        raise _common.UserError("--flip must be in [0, 0.5) and --l2 0 or more.")
    workdir = _common.prepare_workdir(workdir)
    x, y, flipped = make_data(points, flip, seed)
    objective = make_objective(x, y, l2)
    start = jnp.zeros(2, jnp.float32)
    theta_gd, gd_values = gradient_descent(objective, start, learning_rate, steps)
    theta_newton, newton_values = newton(objective, start, newton_steps, tolerance=1e-6)
    grid = jnp.linspace(0, 10, 1001)
    p_gd = jax.nn.sigmoid(theta_gd[0] * grid + theta_gd[1])
    p_newton = jax.nn.sigmoid(theta_newton[0] * grid + theta_newton[1])
    optimum = min(float(objective(theta_newton)), float(objective(theta_gd)))
    results = {
        "experiment": "exp2_logistic_newton",
        "flags": {"points": points, "flip": flip, "l2": l2, "learning_rate": learning_rate,
                  "steps": steps, "newton_steps": newton_steps, "seed": seed},
        "labels_flipped": flipped,
        "gradient_descent": {"w": theta_gd[0], "b": theta_gd[1], "steps": steps,
                             "objective": float(objective(theta_gd)),
                             "boundary_x": float(-theta_gd[1] / theta_gd[0])},
        "newton": {"w": theta_newton[0], "b": theta_newton[1], "steps": len(newton_values) - 1,
                   "objective": float(objective(theta_newton)),
                   "objective_per_step": newton_values,
                   "boundary_x": float(-theta_newton[1] / theta_newton[0])},
        "max_probability_difference": float(jnp.max(jnp.abs(p_gd - p_newton))),
        "train_accuracy": float(np.mean((theta_newton[0] * x + theta_newton[1] > 0) == (y > 0.5))),
    }
    plot(workdir / "logistic.png", x, y, np.asarray(theta_gd), np.asarray(theta_newton),
         gd_values, newton_values, optimum)
    return _common.finish(workdir, results,
                          state={"theta_gd": theta_gd, "theta_newton": theta_newton},
                          curves={"gd_objective": gd_values, "newton_objective": newton_values})


def headline(r) -> str:
    gd, nt, f = r["gradient_descent"], r["newton"], r["flags"]
    return (f"logistic regression on {f['points']} noisy 1-D points with L2 {f['l2']:g}: gradient "
            f"descent ({gd['steps']:,} steps) w = {gd['w']:.5f}, b = {gd['b']:.5f}; Newton "
            f"({nt['steps']} steps) w = {nt['w']:.5f}, b = {nt['b']:.5f}; probability curves "
            f"within {r['max_probability_difference']:.1e}; {100 * r['train_accuracy']:.1f} % "
            f"train accuracy (flipped labels cap it)")


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, points=f.points, flip=f.flip, l2=f.l2, learning_rate=f.learning_rate,
            steps=f.steps, newton_steps=f.newton_steps, seed=f.seed)
    gd, nt = r["gradient_descent"], r["newton"]
    print(f"gradient descent ({gd['steps']} steps): w={gd['w']:.4f} b={gd['b']:.4f}; Newton "
          f"({nt['steps']} steps): w={nt['w']:.4f} b={nt['b']:.4f}; the probability curves differ "
          f"by at most {r['max_probability_difference']:.1e}; decision boundary x = "
          f"{nt['boundary_x']:.3f}. Wrote {f.workdir}/results.json, logistic.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp2_logistic_newton")
    flags.DEFINE_integer("points", 200, "Number of 1-D points.")
    flags.DEFINE_float("flip", 0.1, "Probability that a label is flipped.")
    flags.DEFINE_float("l2", 0.01, "L2 coefficient on the weight (objective + l2/2 w^2).")
    flags.DEFINE_float("learning_rate", 0.1, "Gradient-descent step size.")
    flags.DEFINE_integer("steps", 20000, "Gradient-descent steps.")
    flags.DEFINE_integer("newton_steps", 20, "Newton steps at most.")
    flags.DEFINE_integer("seed", 0, "Seed of the data.")
    app.run(report_user_errors(main))
