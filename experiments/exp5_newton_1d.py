"""Experiment 5: gradient descent, Newton's method and backtracking on f(x) = 2 - 3x^3 + x^4.

    python -m experiments.exp5_newton_1d
    -> GD from x0 = 1 after 60 steps: lr 0.02: x = 2.2500, lr 0.09: x = 2.2500 (oscillating),
       lr 0.12: x = 2.4920 (oscillating). Newton from x0 = 2: 2.000000 -> 2.333333 -> 2.255556
       -> 2.250027 -> 2.250000 -> 2.250000 (5 steps). Backtracking from x0 = 1: tried
       t = [1.0, 0.5, 0.25], accepted t = 0.25, x1 = 2.25
       (measured on the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14: 2.6 s CPU,
       12 s wall)

f'(x) = 4x^3 - 9x^2 = x^2 (4x - 9) and f''(x) = 12x^2 - 18x = 6x (2x - 3): the minimum is at
x* = 9/4 (f(x*) = -6.54), and x = 0 is a flat inflection point (f' = f'' = 0). The lessons:
- gradient descent x <- x - lr f'(x) from x0 = 1 converges smoothly with a small step; near x*
  the error is multiplied by (1 - lr f''(x*)) = (1 - 20.25 lr) each step, so for lr between
  1/20.25 and 2/20.25 = 0.099 the iterates oscillate around x* while converging, and above
  0.099 they never settle (from x0 = 1, lr = 0.12 ends bouncing between two points);
- Newton's method x <- x - f'(x) / f''(x) from x0 = 2 converges quadratically (the error is
  about squared each step), but from x0 = 1, where f'' < 0, it walks away to the inflection
  point x = 0: Newton looks for f' = 0, not for a minimum;
- backtracking line search (Armijo): start from t = 1 and halve t until
  f(x - t f'(x)) <= f(x) - c t f'(x)^2. From x0 = 1 it rejects t = 1 and 0.5 and accepts
  t = 0.25, which happens to land exactly on x* = 9/4.
Derivatives come from jax.grad. Outputs: results.json and newton_1d.png.
"""

import jax
import numpy as np
from absl import app, flags

from experiments import _common
from jaxdigits import cli
from jaxdigits.errors import report_user_errors

MINIMUM = 9 / 4

SECTION = "Newton's method, gradient descent and backtracking on 2 - 3x^3 + x^4"


def f(x):
    return 2 - 3 * x ** 3 + x ** 4


df = jax.jit(jax.grad(f))
d2f = jax.jit(jax.grad(jax.grad(f)))


def gradient_descent(x0: float, learning_rate: float, steps: int) -> list[float]:
    """The iterates x_0 .. x_steps of x <- x - lr f'(x)."""
    xs = [x0]
    for _ in range(steps):
        xs.append(xs[-1] - learning_rate * float(df(xs[-1])))
    return xs


def newton(x0: float, steps: int, tolerance: float = 1e-6) -> list[float]:
    """The iterates of x <- x - f'(x) / f''(x), stopping once a step is under `tolerance`."""
    xs = [x0]
    for _ in range(steps):
        step = float(df(xs[-1])) / float(d2f(xs[-1]))
        xs.append(xs[-1] - step)
        if abs(step) < tolerance:
            break
    return xs


def backtracking(x: float, *, c: float, beta: float, t: float = 1.0, max_halvings: int = 50):
    """Armijo backtracking along -f'(x): returns (accepted t, every t tried)."""
    g = float(df(x))
    tried = [t]
    while f(x - t * g) > f(x) - c * t * g * g and len(tried) <= max_halvings:
        t *= beta
        tried.append(t)
    return t, tried


def gd_with_backtracking(x0: float, *, c: float, beta: float, steps: int, tolerance=1e-6):
    """Gradient descent whose every step size is found by backtracking; returns (xs, ts)."""
    xs, ts = [x0], []
    for _ in range(steps):
        if abs(float(df(xs[-1]))) < tolerance:
            break
        t, _ = backtracking(xs[-1], c=c, beta=beta)
        ts.append(t)
        xs.append(xs[-1] - t * float(df(xs[-1])))
    return xs, ts


def plot(path, runs, newton_runs, x0_bt, tried, c):
    fig, axes = _common.subplots(2, 2, width=6.0, height=4.4)
    grid = np.linspace(-0.6, 3.1, 400)
    colors = ["tab:blue", "tab:orange", "tab:red"]
    ax = axes[0, 0]
    ax.plot(grid, f(grid), color="gray", label="f(x) = 2 - 3x^3 + x^4")
    for (lr, xs), color in zip(runs.items(), colors):
        xs = np.asarray(xs[:15])
        ax.plot(xs, f(xs), "o-", color=color, markersize=4, linewidth=0.8,
                label=f"GD lr {lr:g} (first 15 iterates)")
    ax.set(xlabel="x", ylabel="f(x)", ylim=(-8, 10), title="Gradient-descent iterates on the curve")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    for (lr, xs), color in zip(runs.items(), colors):
        ax.plot(xs, "o-", color=color, markersize=3, label=f"GD lr {lr:g}")
    for (x0, xs), style in zip(newton_runs.items(), ["s-", "s--"]):
        ax.plot(xs, style, color="tab:green", markersize=4, label=f"Newton from x0 = {x0:g}")
    ax.axhline(MINIMUM, color="k", linestyle=":", label="x* = 9/4")
    ax.set(xlabel="iteration", ylabel="x", xlim=(-0.5, 40),
           title="Iterates: oscillation and Newton")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1, 0]
    for (x0, xs), color in zip(newton_runs.items(), ["tab:green", "tab:olive"]):
        errors = np.abs(np.asarray(xs) - (MINIMUM if x0 > 1.5 else 0.0))
        ax.plot(np.maximum(errors, 1e-8), "s-", color=color,
                label=f"Newton from {x0:g}: |x - {'9/4' if x0 > 1.5 else '0'}|")
    ax.set(xlabel="iteration", ylabel="error (floored at 1e-8)", yscale="log",
           title="Newton: quadratic vs linear convergence")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    g = float(df(x0_bt))
    ts = np.linspace(0, 1.05, 300)
    ax.plot(ts, f(x0_bt - ts * g), color="gray", label="f(x0 - t f'(x0))")
    ax.plot(ts, f(x0_bt) - c * ts * g * g, "k--", label=f"Armijo line, c = {c:g}")
    top = 25.0  # f(x0 - t g) is 650 at t = 1: rejected trials above the chart sit on its edge.
    for i, t in enumerate(tried):
        accepted, value = i == len(tried) - 1, float(f(x0_bt - t * g))
        ax.plot(t, min(value, top), "o" if accepted else "x", markersize=10, markeredgewidth=2,
                color="tab:green" if accepted else "tab:red",
                label=f"t = {t:g} accepted" if accepted else ("rejected t" if i == 0 else None))
        ax.annotate(f"t = {t:g}: f = {value:.2f}", (t, min(value, top)), textcoords="offset points",
                    xytext=(-40, -16 if accepted else 8), fontsize=8)
    ax.set(xlabel="step size t", ylabel="f", ylim=(-9, top + 5),
           title=f"Backtracking from x0 = {x0_bt:g} (t halves until below the Armijo line)")
    ax.legend(fontsize=8)
    return _common.save_figure(fig, path)


def run(workdir, *, x0_gd=1.0, learning_rates=(0.02, 0.09, 0.12), gd_steps=60, x0_newton=2.0,
        newton_steps=20, x0_backtracking=1.0, c=1e-4, beta=0.5) -> dict:
    _common.check_positive(gd_steps=gd_steps, newton_steps=newton_steps, c=c, beta=beta)
    if not (c < 1 and beta < 1) or any(lr <= 0 for lr in learning_rates):
        raise _common.UserError("--c and --beta must be in (0, 1) and learning rates positive.")
    workdir = _common.prepare_workdir(workdir)
    runs = {lr: gradient_descent(x0_gd, lr, gd_steps) for lr in learning_rates}
    newton_runs = {x0_newton: newton(x0_newton, newton_steps), 1.0: newton(1.0, newton_steps)}
    t, tried = backtracking(x0_backtracking, c=c, beta=beta)
    bt_xs, bt_ts = gd_with_backtracking(x0_backtracking, c=c, beta=beta, steps=newton_steps)
    curvature = float(d2f(MINIMUM))
    results = {
        "experiment": "exp5_newton_1d",
        "flags": {"x0_gd": x0_gd, "learning_rates": list(learning_rates), "gd_steps": gd_steps,
                  "x0_newton": x0_newton, "newton_steps": newton_steps,
                  "x0_backtracking": x0_backtracking, "c": c, "beta": beta},
        "minimum": MINIMUM, "f_at_minimum": f(MINIMUM), "f2_at_minimum": curvature,
        "gd_stable_below": 2 / curvature, "gd_oscillates_above": 1 / curvature,
        "gradient_descent": {
            str(lr): {"final_x": xs[-1], "error": abs(xs[-1] - MINIMUM),
                      "last_iterates": xs[-4:], "iterates": xs,
                      "oscillates": bool(np.any(np.diff(np.sign(np.asarray(xs) - MINIMUM)))),
                      "converged": abs(xs[-1] - MINIMUM) < 1e-4}
            for lr, xs in runs.items()},
        "newton": {"x0": x0_newton, "iterates": newton_runs[x0_newton],
                   "steps": len(newton_runs[x0_newton]) - 1, "final_x": newton_runs[x0_newton][-1]},
        "newton_from_1": {"iterates": newton_runs[1.0], "final_x": newton_runs[1.0][-1],
                          "note": "f''(1) < 0: Newton heads for the stationary point x = 0"},
        "backtracking": {"x0": x0_backtracking, "step_size": t, "tried": tried,
                         "x1": x0_backtracking - t * float(df(x0_backtracking)),
                         "gd_iterates": bt_xs, "gd_step_sizes": bt_ts},
    }
    plot(workdir / "newton_1d.png", runs, newton_runs, x0_backtracking, tried, c)
    state = {"gd": [np.asarray(xs) for xs in runs.values()],
             "newton": np.asarray(newton_runs[x0_newton]), "backtracking": np.asarray(bt_xs)}
    return _common.finish(workdir, results, state=state,
                          curves={f"gd_x_lr{lr:g}": xs for lr, xs in runs.items()})


def headline(r) -> str:
    nt, bt = r["newton"], r["backtracking"]
    gd = ", ".join(f"lr {lr}: x = {v['final_x']:.4f}{' (oscillating)' if v['oscillates'] else ''}"
                   for lr, v in r["gradient_descent"].items())
    return (f"Newton from {nt['x0']:g} reaches 9/4 in {nt['steps']} steps "
            f"({', '.join(f'{x:.6g}' for x in nt['iterates'][1:4])}, ...); gradient descent from "
            f"{r['flags']['x0_gd']:g}: {gd} (stable below 2/f''(9/4) = "
            f"{r['gd_stable_below']:.3f}); Armijo backtracking from {bt['x0']:g} accepts "
            f"t = {bt['step_size']:g}, x1 = {bt['x1']:g}")


def main(argv):
    cli.start(argv)
    fl = flags.FLAGS
    r = run(fl.workdir, x0_gd=fl.x0_gd,
            learning_rates=_common.floats("learning_rates", fl.learning_rates),
            gd_steps=fl.gd_steps, x0_newton=fl.x0_newton, newton_steps=fl.newton_steps,
            x0_backtracking=fl.x0_backtracking, c=fl.c, beta=fl.beta)
    gd = ", ".join(f"lr {lr}: x = {v['final_x']:.4f}{' (oscillating)' if v['oscillates'] else ''}"
                   for lr, v in r["gradient_descent"].items())
    nt, bt = r["newton"], r["backtracking"]
    print(f"GD from x0 = {fl.x0_gd:g} after {fl.gd_steps} steps: {gd}. Newton from x0 = "
          f"{nt['x0']:g}: {' -> '.join(f'{x:.6f}' for x in nt['iterates'])} ({nt['steps']} "
          f"steps). Backtracking from x0 = {bt['x0']:g}: tried t = {bt['tried']}, accepted "
          f"t = {bt['step_size']:g}, x1 = {bt['x1']:g}. Wrote {fl.workdir}/results.json, "
          "newton_1d.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp5_newton_1d")
    flags.DEFINE_float("x0_gd", 1.0, "Start of gradient descent.")
    flags.DEFINE_list("learning_rates", ["0.02", "0.09", "0.12"], "Gradient-descent step sizes.")
    flags.DEFINE_integer("gd_steps", 60, "Gradient-descent steps.")
    flags.DEFINE_float("x0_newton", 2.0, "Start of Newton's method.")
    flags.DEFINE_integer("newton_steps", 20, "Newton (and backtracking) steps at most.")
    flags.DEFINE_float("x0_backtracking", 1.0, "Start of the backtracking line search.")
    flags.DEFINE_float("c", 1e-4, "Armijo sufficient-decrease constant.")
    flags.DEFINE_float("beta", 0.5, "Backtracking shrink factor.")
    app.run(report_user_errors(main))
