"""Experiment 13: the worked examples on f(x) = 2 - 3x^3 + x^4: gradient descent with its Taylor
approximants, backtracking as the text writes it and in Armijo's form, the surrogate h_alpha, and
an exact line search.

    python -m experiments.exp13_line_search
    -> see docs/lessons.md (the text: backtracking prints alpha = 0.32, x = 2.6)

1. Gradient descent from x0 = 0.1 with step 0.1 for 20 steps (the text's): it creeps away from
   the flat inflection point at 0, speeds up, and then bounces around x* = 9/4, because there
   the error is multiplied by 1 - 0.1 f''(9/4) = -1.025 each step: the step is just over the
   2 / f''(x*) = 0.099 that converges. The first- and second-order Taylor approximants are drawn
   at x0 and at the last iterate.
2. Backtracking as the text writes it: x0 = 1, alpha = 0.5, beta = 0.8; alpha shrinks by beta
   until f(x0 - alpha f'(x0)) <= f(x0) - (alpha / 2) f(x0)^2. It tries 0.5 (x = 3.5) and 0.4
   (x = 3) and accepts alpha = 0.32, x = 2.6, as the text prints. The textbook (Armijo) form
   squares the gradient, not the value: f(x0) - (alpha / 2) f'(x0)^2. Here f(1) = 0, so the
   text's condition only asks for any decrease, while Armijo's asks for (alpha / 2) * 25; both
   accept 0.32 from x0 = 1. The Armijo condition says f lies below the surrogate
   h_alpha(x) = f(x0) + f'(x0)(x - x0) + (x - x0)^2 / (2 alpha) at that surrogate's minimiser
   x0 - alpha f'(x0), which the figure shows for each alpha tried.
3. Exact line search: the step t minimising f(x0 - t f'(x0)), from the roots of that quartic's
   derivative (numpy): from x0 = 1 it is t = 1/4 and lands on 9/4 in one step. On a 2-D
   quadratic 0.5 x^T A x (A = diag(1, 10)), where t = g.g / g.Ag exactly, it zig-zags with each
   gradient orthogonal to the last.
Derivatives come from jax.grad (experiment 5's f). Outputs: results.json, gd_taylor.png,
backtracking.png, exact_line_search.png, metrics.jsonl, tensorboard/ and checkpoints/.
"""

import numpy as np
from absl import flags

from experiments import _common
from experiments.exp5_newton_1d import MINIMUM, d2f, df, f
from jaxdigits import cli

SECTION = "Worked examples on 2 - 3x^3 + x^4: GD and Taylor, backtracking, exact line search"
TEXT = {"alpha": 0.32, "x": 2.6}
QUADRATIC = np.diag([1.0, 10.0])


def gradient_descent(x0: float, step: float, steps: int) -> list[float]:
    xs = [x0]
    for _ in range(steps):
        xs.append(xs[-1] - step * float(df(xs[-1])))
    return xs


def backtracking(x0: float, alpha: float, beta: float, form: str, max_tries: int = 60) -> dict:
    """alpha shrinks by beta until the sufficient-decrease test of `form` holds.

    form "text": f(x_new) <= f(x0) - (alpha / 2) f(x0)^2 (as the text writes it);
    form "armijo": f(x_new) <= f(x0) - (alpha / 2) f'(x0)^2 (f below h_alpha at x_new).
    """
    g, fx = float(df(x0)), float(f(x0))
    squared = fx ** 2 if form == "text" else g ** 2
    tried = []
    for _ in range(max_tries):
        x_new = x0 - alpha * g
        accepted = float(f(x_new)) <= fx - alpha / 2 * squared
        tried.append({"alpha": alpha, "x": x_new, "f": float(f(x_new)),
                      "bound": fx - alpha / 2 * squared, "accepted": bool(accepted)})
        if accepted:
            break
        alpha *= beta
    return {"alpha": tried[-1]["alpha"], "x": tried[-1]["x"], "tried": tried}


def exact_step(x0: float) -> float:
    """argmin over t >= 0 of f(x0 - t g): the real roots of phi'(t), compared by value."""
    g = float(df(x0))
    phi = np.polynomial.Polynomial([2.0, 0, 0, -3.0, 1.0])  # f as a polynomial in x
    along = phi(np.polynomial.Polynomial([x0, -g]))  # f(x0 - t g) as a polynomial in t
    roots = [r.real for r in along.deriv().roots() if abs(r.imag) < 1e-9 and r.real >= 0]
    return float(min(roots, key=along))


def exact_quadratic(start, steps: int):
    """Steepest descent with the exact step on 0.5 x^T A x: the iterates [steps + 1, 2]."""
    xs = [np.asarray(start, np.float64)]
    for _ in range(steps):
        g = QUADRATIC @ xs[-1]
        xs.append(xs[-1] - (g @ g) / (g @ QUADRATIC @ g) * g)
    return np.asarray(xs)


def taylor(a: float, x, order: int):
    value = float(f(a)) + float(df(a)) * (x - a)
    return value + 0.5 * float(d2f(a)) * (x - a) ** 2 if order == 2 else value


def plot_gd(path, xs):
    fig, axes = _common.subplots(1, 2, width=5.6)
    grid = np.linspace(-0.5, 3.2, 400)
    ax = axes[0, 0]
    ax.plot(grid, f(grid), "k", label="f")
    for a, color in ((xs[0], "tab:green"), (xs[-1], "tab:purple")):
        for order, style in ((1, ":"), (2, "--")):
            ax.plot(grid, taylor(a, grid, order), style, color=color,
                    label=f"order-{order} Taylor at {a:.2f}")
    ax.plot(xs, f(np.asarray(xs)), "o-", color="tab:red", markersize=3, linewidth=0.7,
            label="iterates")
    ax.set(xlabel="x", ylabel="f(x)", ylim=(-8, 6), title="GD from 0.1, step 0.1, 20 steps")
    ax.legend(fontsize=7)
    axes[0, 1].plot(xs, "o-")
    axes[0, 1].axhline(MINIMUM, color="k", linestyle=":", label="x* = 9/4")
    axes[0, 1].set(xlabel="step", ylabel="x", title="Iterates: creeping, then bouncing")
    axes[0, 1].legend(fontsize=8)
    return _common.save_figure(fig, path)


def plot_backtracking(path, x0, text, armijo):
    fig, axes = _common.subplots(1, 2, width=5.6)
    grid = np.linspace(0.5, 4.0, 300)
    g, fx = float(df(x0)), float(f(x0))
    for ax, (name, result) in zip(axes[0], (("as the text writes it", text), ("Armijo", armijo))):
        ax.plot(grid, f(grid), "k", label="f")
        for trial in result["tried"]:
            h = fx + g * (grid - x0) + (grid - x0) ** 2 / (2 * trial["alpha"])
            ax.plot(grid, h, "--", linewidth=0.8, label=f"h_alpha, alpha = {trial['alpha']:.2f}")
            ax.plot(trial["x"], trial["f"], "o" if trial["accepted"] else "x", markersize=8,
                    color="tab:green" if trial["accepted"] else "tab:red")
        ax.set(xlabel="x", ylim=(-8, 30), title=f"{name}: alpha = {result['alpha']:.2f}, "
                                               f"x = {result['x']:.2f}")
        ax.legend(fontsize=7)
    return _common.save_figure(fig, path)


def plot_exact(path, x0, t, zigzag):
    fig, axes = _common.subplots(1, 2, width=5.6)
    g = float(df(x0))
    ts = np.linspace(0, 0.6, 300)
    axes[0, 0].plot(ts, f(x0 - ts * g))
    axes[0, 0].plot(t, f(x0 - t * g), "r*", markersize=12, label=f"t* = {t:.4f}")
    axes[0, 0].set(xlabel="t", ylabel=f"f({x0:g} - t f'({x0:g}))", title="Exact line search")
    axes[0, 0].legend()
    xs, ys = np.meshgrid(np.linspace(-11, 11, 200), np.linspace(-2, 2, 120))
    axes[0, 1].contour(xs, ys, 0.5 * (xs ** 2 + 10 * ys ** 2), levels=20)
    axes[0, 1].plot(*zigzag.T, "o-", color="tab:red", markersize=3)
    axes[0, 1].set(xlabel="x1", ylabel="x2", title="Exact steps on 0.5 x^T diag(1, 10) x")
    return _common.save_figure(fig, path)


def run(workdir, *, x0=0.1, step=0.1, steps=20, x0_backtracking=1.0, alpha=0.5, beta=0.8,
        quadratic_steps=20) -> dict:
    _common.check_positive(step=step, steps=steps, alpha=alpha, beta=beta,
                           quadratic_steps=quadratic_steps)
    if beta >= 1:
        raise _common.UserError(f"--beta must be below 1, got {beta}.")
    workdir = _common.prepare_workdir(workdir)
    xs = gradient_descent(x0, step, steps)
    text = backtracking(x0_backtracking, alpha, beta, "text")
    armijo = backtracking(x0_backtracking, alpha, beta, "armijo")
    t = exact_step(x0_backtracking)
    zigzag = exact_quadratic([10.0, 1.0], quadratic_steps)
    gradients = zigzag[:-1] @ QUADRATIC
    cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
               for a, b in zip(gradients[:-1], gradients[1:]) if np.linalg.norm(b) > 1e-12]
    results = {
        "experiment": "exp13_line_search",
        "flags": {"x0": x0, "step": step, "steps": steps, "x0_backtracking": x0_backtracking,
                  "alpha": alpha, "beta": beta, "quadratic_steps": quadratic_steps},
        "gradient_descent": {"iterates": xs, "final": xs[-1], "contraction_at_minimum":
                             1 - step * float(d2f(MINIMUM)), "largest_stable_step":
                             2 / float(d2f(MINIMUM))},
        "backtracking_text": text, "backtracking_armijo": armijo, "text": TEXT,
        "exact": {"t": t, "x": x0_backtracking - t * float(df(x0_backtracking)),
                  "quadratic_final_norm": float(np.linalg.norm(zigzag[-1])),
                  "max_abs_cosine_successive_gradients": max(map(abs, cosines))},
    }
    plot_gd(workdir / "gd_taylor.png", xs)
    plot_backtracking(workdir / "backtracking.png", x0_backtracking, text, armijo)
    plot_exact(workdir / "exact_line_search.png", x0_backtracking, t, zigzag)
    state = {"gd_iterates": np.asarray(xs), "backtracking_x": np.asarray(text["x"]),
             "quadratic_iterates": zigzag}
    return _common.finish(workdir, results, state=state,
                          curves={"gd_x": xs, "gd_f": f(np.asarray(xs)),
                                  "quadratic_f": 0.5 * np.einsum("ni,ij,nj->n", zigzag,
                                                                 QUADRATIC, zigzag)})


def headline(r) -> str:
    gd, bt, ar, ex = (r["gradient_descent"], r["backtracking_text"], r["backtracking_armijo"],
                      r["exact"])
    return (f"GD from 0.1, step 0.1, 20 steps: bounces around 9/4 (x20 = {gd['final']:.3f}; "
            f"error x {gd['contraction_at_minimum']:.3f} a step, stable below "
            f"{gd['largest_stable_step']:.4f}); backtracking as written: alpha = "
            f"{bt['alpha']:.2f}, x = {bt['x']:.2f} (the text: 0.32, 2.6); Armijo form: alpha = "
            f"{ar['alpha']:.2f}, x = {ar['x']:.2f}; exact line search t = {ex['t']:.4f} -> x = "
            f"{ex['x']:.4f}; on diag(1, 10) successive gradients at |cos| <= "
            f"{ex['max_abs_cosine_successive_gradients']:.0e}")


def text_numbers(r) -> dict:
    """The text's printed alpha and x beside the measured ones (to rounding)."""
    bt = r["backtracking_text"]
    return {k: {"measured": bt[k], "text": v, "tolerance": 1e-9} for k, v in TEXT.items()}


def main(argv):
    fl = cli.start(argv)
    r = run(fl.workdir, x0=fl.x0, step=fl.step, steps=fl.steps, alpha=fl.alpha, beta=fl.beta)
    print(headline(r) + ". The text's test squares f(x0) (0 at x0 = 1: any decrease passes); "
          "the textbook Armijo test squares f'(x0), i.e. f(x_new) <= h_alpha(x_new). "
          f"Wrote {fl.workdir}/results.json and three PNGs.")


def define():
    _common.define_workdir_flag("exp13_line_search")
    flags.DEFINE_float("x0", 0.1, "Start of gradient descent (the text: 0.1).")
    flags.DEFINE_float("step", 0.1, "Its step (the text: 0.1).")
    flags.DEFINE_integer("steps", 20, "Its number of steps (the text: 20).")
    flags.DEFINE_float("alpha", 0.5, "Backtracking's first step (the text: 0.5).")
    flags.DEFINE_float("beta", 0.8, "Backtracking's shrink factor (the text: 0.8).")


if __name__ == "__main__":
    cli.run(main, define)
