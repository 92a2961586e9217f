"""Experiment 14: the moving average against the exponentially weighted moving average (EWMA).

    python -m experiments.exp14_averages
    -> see docs/lessons.md

A noisy series, signal sin(2 pi t / 100) plus Gaussian noise of sd 0.5, 300 points. Two smoothers:
- the simple moving average of the last k = 10 points (each weighs 1/k, then nothing);
- the EWMA v_t = beta v_{t-1} + (1 - beta) x_t with beta = 0.9 (weights (1 - beta) beta^i: an
  effective window of about 1 / (1 - beta) = 10 points), run by optax's `ema`, the same update
  as momentum's and Adam's first moment. Started at v_0 = 0 it is biased towards 0 for the first
  few tens of points; dividing by 1 - beta^t (Adam's bias correction, `debias=True`) removes that.
Measured: each smoother's mean squared error against the noiseless signal, the bias of the
uncorrected EWMA at the start, and the lag of each behind the signal (the shift that best
aligns them). The hand-written EWMA recursion is checked against optax's.
Outputs: results.json, averages.png, metrics.jsonl, tensorboard/ and checkpoints/.
"""

import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from experiments import _common
from jaxdigits import cli

SECTION = "Moving average vs exponentially weighted moving average (EWMA)"


def make_series(n: int, noise: float, seed: int):
    t = np.arange(n)
    signal = np.sin(2 * np.pi * t / 100)
    return signal, signal + np.random.default_rng(seed).normal(0, noise, n)


def moving_average(x, window: int):
    """Trailing mean of the last `window` points (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], x]))
    ends = np.arange(1, len(x) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def ewma(x, beta: float, debias: bool):
    """optax.ema over the series, one update per point."""
    transform = optax.ema(beta, debias=debias)
    state = transform.init(jnp.zeros(()))
    out = []
    for value in x:
        smoothed, state = transform.update(jnp.asarray(value, jnp.float32), state)
        out.append(smoothed)
    return np.asarray(out, np.float64)


def ewma_by_hand(x, beta: float):
    v, out = 0.0, []
    for value in x:
        v = beta * v + (1 - beta) * value
        out.append(v)
    return np.asarray(out)


def lag(smoothed, signal, max_shift: int = 40) -> int:
    """The delay (in points) that best aligns `smoothed` with `signal`."""
    errors = [np.mean((smoothed[s:] - signal[:len(signal) - s]) ** 2) for s in range(max_shift)]
    return int(np.argmin(errors))


def plot(path, signal, noisy, curves, beta, window):
    fig, axes = _common.subplots(1, 2, width=5.8)
    ax = axes[0, 0]
    ax.plot(noisy, ".", color="lightgray", markersize=3, label="noisy series")
    ax.plot(signal, "k", linewidth=1, label="signal")
    for name, values in curves.items():
        ax.plot(values, label=name)
    ax.set(xlabel="t", title="Smoothing a noisy series")
    ax.legend(fontsize=7)
    i = np.arange(30)
    axes[0, 1].bar(i - 0.2, np.where(i < window, 1 / window, 0), 0.4,
                   label=f"moving average, k = {window}")
    axes[0, 1].bar(i + 0.2, (1 - beta) * beta ** i, 0.4, label=f"EWMA, beta = {beta:g}")
    axes[0, 1].set(xlabel="points back", ylabel="weight", title="The weights of past points")
    axes[0, 1].legend(fontsize=8)
    return _common.save_figure(fig, path)


def run(workdir, *, points=300, noise=0.5, window=10, beta=0.9, seed=0) -> dict:
    _common.check_positive(points=points, window=window, beta=beta)
    if not beta < 1 or noise < 0:
        raise _common.UserError("--beta must be in (0, 1) and --noise 0 or more.")
    workdir = _common.prepare_workdir(workdir)
    signal, noisy = make_series(points, noise, seed)
    curves = {"moving average": moving_average(noisy, window),
              "EWMA": ewma(noisy, beta, debias=False),
              "EWMA, bias-corrected": ewma(noisy, beta, debias=True)}
    head = min(20, points)
    results = {
        "experiment": "exp14_averages",
        "flags": {"points": points, "noise": noise, "window": window, "beta": beta, "seed": seed},
        "mse_vs_signal": {"noisy series": float(np.mean((noisy - signal) ** 2)),
                          **{n: float(np.mean((c - signal) ** 2)) for n, c in curves.items()}},
        "mean_error_first_20": {n: float(np.mean(c[:head] - signal[:head]))
                                for n, c in curves.items()},
        "lag": {n: lag(c, signal) for n, c in curves.items()},
        "optax_vs_by_hand": float(np.max(np.abs(curves["EWMA"] - ewma_by_hand(noisy, beta)))),
    }
    plot(workdir / "averages.png", signal, noisy, curves, beta, window)
    return _common.finish(workdir, results, state={n.replace(" ", "_").replace(",", ""): c
                                                   for n, c in curves.items()},
                          curves={"signal": signal, "noisy": noisy, **{
                              n.replace(" ", "_").replace(",", ""): c for n, c in curves.items()}})


def headline(r) -> str:
    m, lags = r["mse_vs_signal"], r["lag"]
    return (f"sin + noise (sd {r['flags']['noise']:g}): MSE vs the signal {m['noisy series']:.3f} "
            f"raw, {m['moving average']:.3f} moving average (k = {r['flags']['window']}, lag "
            f"{lags['moving average']}), {m['EWMA']:.3f} EWMA (beta {r['flags']['beta']:g}, lag "
            f"{lags['EWMA']}), {m['EWMA, bias-corrected']:.3f} bias-corrected; the uncorrected "
            f"EWMA starts {r['mean_error_first_20']['EWMA']:+.3f} off over the first 20 points")


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, window=f.window, beta=f.beta, seed=f.seed)
    print(headline(r) + f". Wrote {f.workdir}/results.json, averages.png.")


def define():
    _common.define_workdir_flag("exp14_averages")
    flags.DEFINE_integer("window", 10, "Points in the moving average.")
    flags.DEFINE_float("beta", 0.9, "The EWMA's decay.")
    flags.DEFINE_integer("seed", 0, "Seed of the noise.")


if __name__ == "__main__":
    cli.run(main, define)
