"""The float32 kernels this CPU offers for the shapes issue 6's goals 1 and 2 rest on, side by side.

    python experiments/kernel_limits.py --rounds=5

Per round, alternating, each the median of `--calls` timed calls after a warm-up:

- matmuls: the MLP's two big ones (forward 128x784 @ 784x512 and its weight gradient
  784x128 @ 128x512) and a 2048^3 one, in XLA (compiled with jaxdigits' CPU options) and in
  numpy's BLAS (OpenBLAS in numpy's wheels, all cores);
- the seed CNN's second convolution (batch 128, 14x14, 5x5, 32 -> 64, SAME), forward and both
  gradients: all three in XLA's Eigen kernels (`--cpu_conv=eigen`); XLA's forward with oneDNN's
  gradients (`jaxdigits.onednn`, `--cpu_conv=onednn`, if installed); all three in PyTorch's
  oneDNN (`--torch_python`, NCHW as peer_torch.py runs it; skipped with a message if that Python
  has no torch); and the same three as im2col matmuls in numpy's BLAS, patches prebuilt (not
  timed).

Prints GFLOP/s per kernel and round, then medians. Results and the arithmetic of what the goals
need: BUILD_NOTES.md, issue 6.
"""

import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from jaxdigits import models, onednn

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds; each times every kernel once.")
_CALLS = flags.DEFINE_integer("calls", 15, "Timed calls per kernel and round (median is kept).")
_TORCH = flags.DEFINE_string("torch_python", "/tmp/venv-torch/bin/python", "Python with torch.")

CONV = dict(b=128, hw=14, k=5, cin=32, cout=64)
CONV_FLOP = 2 * CONV["b"] * CONV["hw"] ** 2 * CONV["k"] ** 2 * CONV["cin"] * CONV["cout"]

TORCH_CONV = """
import statistics, sys, time, torch
b, hw, k, cin, cout, calls = map(int, sys.argv[1:])
torch.manual_seed(0)
conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
x = torch.randn(b, cin, hw, hw, requires_grad=True)
g = torch.randn(b, cout, hw, hw)
def step():
    conv.zero_grad(); x.grad = None
    conv(x).backward(g)
for _ in range(3): step()
times = []
for _ in range(calls):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def median_seconds(fn, calls: int) -> float:
    fn()  # Warm-up (and, for jitted functions, the compile).
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def xla(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile(models.compiler_options())
    return lambda: jax.block_until_ready(compiled(*args))


def mlp_matmuls(x, w, d):
    """The MLP step's two big matmuls for 8 batches x [8, 128, 784], d [8, 128, 512]."""
    return [(x[i] @ w, x[i].T @ d[i]) for i in range(len(x))]


def conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_fwd_bwd(x, w, g, conv=conv):
    """conv2's forward and both gradients, as a train step needs them (cotangent g)."""
    y, vjp = jax.vjp(conv, x, w)
    return y, *vjp(g)


def torch_conv_seconds(calls: int):
    cmd = [_TORCH.value, "-c", TORCH_CONV, *map(str, CONV.values()), str(calls)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"PyTorch conv2 skipped: {_TORCH.value} could not run it ({e}).")
        return None
    return float(out.stdout.split()[-1])


def main(argv):
    del argv  # Unused.
    r = np.random.default_rng(0)
    rand = lambda *shape: r.standard_normal(shape, dtype=np.float32)  # noqa: E731
    # Eight batches per call (as the CPU driver runs 8 steps per call), so dispatch costs little.
    x, w1, dh, big = rand(8, 128, 784), rand(784, 512), rand(8, 128, 512), rand(2048, 2048)
    b, hw, k, cin, cout = CONV.values()
    cx, cw, cg = rand(b, hw, hw, cin), rand(k, k, cin, cout) * 0.05, rand(b, hw, hw, cout)
    patches = rand(b * hw * hw, k * k * cin)  # im2col's [25088, 800]; its values do not matter.
    pw, pg = cw.reshape(k * k * cin, cout), cg.reshape(b * hw * hw, cout)
    mlp_flop = 8 * 2 * 2 * 128 * 784 * 512
    kernels = {  # name: (timed function or None for PyTorch, FLOP per call)
        "XLA MLP matmuls": (xla(mlp_matmuls, x, w1, dh), mlp_flop),
        "BLAS MLP matmuls": (lambda: mlp_matmuls(x, w1, dh), mlp_flop),
        "XLA 2048^3": (xla(lambda a: a @ a, big), 2 * 2048 ** 3),
        "BLAS 2048^3": (lambda: big @ big, 2 * 2048 ** 3),
        "XLA (Eigen) conv2 fwd+grads": (xla(conv_fwd_bwd, cx, cw, cg), 3 * CONV_FLOP),
        "PyTorch conv2 fwd+grads": (None, 3 * CONV_FLOP),
        "BLAS im2col conv2 matmuls": (lambda: (patches @ pw, patches.T @ pg, pg @ pw.T),
                                      3 * CONV_FLOP),
    }
    if onednn.unavailable() is None:
        kernels["XLA fwd, oneDNN grads conv2"] = (
            xla(lambda *a: conv_fwd_bwd(*a, conv=onednn.conv), cx, cw, cg), 3 * CONV_FLOP)
    else:
        print(f"XLA with oneDNN's gradients skipped: {onednn.unavailable()}.")
    rates = {name: [] for name in kernels}
    for i in range(_ROUNDS.value):
        for name, (fn, flop) in kernels.items():
            if fn is None:
                seconds = torch_conv_seconds(_CALLS.value)
            else:
                seconds = median_seconds(fn, _CALLS.value)
            if seconds is not None:
                rates[name].append(flop / seconds / 1e9)
        print(f"round {i + 1}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items() if v)
              + " GFLOP/s", flush=True)
    print("medians over rounds (GFLOP/s):")
    for name, values in rates.items():
        if values:
            print(f"  {name:28s} {statistics.median(values):6.1f}  (min {min(values):.1f}, "
                  f"max {max(values):.1f})")


if __name__ == "__main__":
    app.run(main)
