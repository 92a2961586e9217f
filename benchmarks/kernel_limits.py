"""The float32 kernels this CPU offers for the CNN's and the MLP's shapes, side by side,
and the MLP's whole train step beside its matmuls.

    python -m benchmarks.kernel_limits --rounds=5 --json=/tmp/kernels.json

Result, 2-core Intel Xeon (AVX-512), 2026-12-02 (then `experiments/kernel_limits.py`), GFLOP/s,
medians of 5 rounds (min-max): the seed CNN's conv2, forward and both gradients, 135.9 (131-164)
in XLA's Eigen kernels, 175.5 (160-249) with XLA's forward and oneDNN's gradients, 192.7
(140-207) in PyTorch 2.13, 103.3 (98-145) for the im2col matmuls alone in numpy's OpenBLAS; the
MLP step's two big matmuls 132.9 in XLA and 143.8 in OpenBLAS. The MLP's train step (the row
taken over from `experiments/mlp_roofline.py`, 2026-12-01, 3 rounds, quiet) ran at 80 % of its
matmuls' rate and 58 % of a 2048^3 matmul's. BUILD_NOTES.md: an MLP epoch at 0.4x
PyTorch's (193 GFLOP/s) needs matmuls faster than this machine has.

Per round, alternating, each the median of `--calls` timed calls after a warm-up:

- matmuls: the MLP's two big ones (forward 128x784 @ 784x512 and its weight gradient
  784x128 @ 128x512, 8 batches per call as the CPU driver runs 8 steps) and a 2048^3 one, in
  XLA (compiled with jaxdigits' CPU options) and in numpy's BLAS (OpenBLAS in numpy's wheels);
- the MLP's train step as the trainer runs it (peers' recipe, `benchmark.benchmark`; FLOPs from
  XLA's cost analysis);
- the seed CNN's second convolution (batch 128, 14x14, 5x5, 32 -> 64, SAME), forward and both
  gradients: in XLA's Eigen kernels (`--cpu_conv=eigen`); XLA's forward with oneDNN's gradients
  (`jaxdigits.onednn`, `--cpu_conv=onednn`, if installed); in PyTorch's oneDNN (`--torch_python`,
  NCHW as peer_torch.py runs it; skipped with a message if that Python has no torch); and as
  im2col matmuls in numpy's BLAS, patches prebuilt (not timed).
"""

import statistics
import subprocess
import time

import jax
import numpy as np
from absl import app, flags
from jax import lax

from benchmarks import common
from jaxdigits import backend, benchmark, cli, errors, onednn

FLAGS = flags.FLAGS

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


def define_flags() -> None:
    flags.DEFINE_integer("rounds", 5, "Rounds; each times every kernel once.")
    flags.DEFINE_integer("calls", 15, "Timed calls per kernel and round (the median is kept).")
    flags.DEFINE_string("torch_python", "/tmp/venv-torch/bin/python", "Python with torch.")
    flags.DEFINE_string("json", None, "Write the GFLOP/s of every kernel and round here.")


def gflops(fn, flop: float, calls: int) -> float:
    """GFLOP/s of `fn()`, the median of `calls` timed calls after a warm-up (and compile)."""
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return flop / statistics.median(times) / 1e9


def xla(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile(backend.compiler_options())
    return lambda: jax.block_until_ready(compiled(*args))


def mlp_matmuls(x, w, d):
    """The MLP step's two big matmuls for 8 batches: x [8, 128, 784], w [784, 512],
    d [8, 128, 512]."""
    return [(x[i] @ w, x[i].T @ d[i]) for i in range(len(x))]


def conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_fwd_bwd(x, w, g, conv=conv):
    """conv2's forward and both gradients, as a train step needs them (cotangent g)."""
    y, vjp = jax.vjp(conv, x, w)
    return y, *vjp(g)


def torch_conv_gflops(python: str, calls: int):
    """PyTorch's conv2 forward and gradients, in `python`'s own process; None without torch."""
    cmd = [python, "-c", TORCH_CONV, *map(str, CONV.values()), str(calls)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"PyTorch conv2 skipped: {python} could not run it ({e}).")
        return None
    return 3 * CONV_FLOP / float(out.stdout.split()[-1]) / 1e9


def kernels(calls: int, torch_python: str) -> dict:
    """name -> function of no arguments returning GFLOP/s (or None: not available); the XLA
    programs are compiled here, once."""
    r = np.random.default_rng(0)
    rand = lambda *shape: r.standard_normal(shape, dtype=np.float32)  # noqa: E731
    x, w1, dh, big = rand(8, 128, 784), rand(784, 512), rand(8, 128, 512), rand(2048, 2048)
    b, hw, k, cin, cout = CONV.values()
    cx, cw, cg = rand(b, hw, hw, cin), rand(k, k, cin, cout) * 0.05, rand(b, hw, hw, cout)
    patches = rand(b * hw * hw, k * k * cin)  # im2col's [25088, 800]; its values do not matter.
    pw, pg = cw.reshape(k * k * cin, cout), cg.reshape(b * hw * hw, cout)
    mlp_flop = 8 * 2 * 2 * 128 * 784 * 512
    torch_failed = []

    def torch_rate():  # Tried once more only if it has worked.
        rate = None if torch_failed else torch_conv_gflops(torch_python, calls)
        torch_failed.extend([True] if rate is None else [])
        return rate

    mlp_step = common.peers_config(model="mlp")
    xla_mlp, xla_big = xla(mlp_matmuls, x, w1, dh), xla(lambda a: a @ a, big)
    xla_conv = xla(conv_fwd_bwd, cx, cw, cg)
    out = {
        "XLA MLP matmuls": lambda: gflops(xla_mlp, mlp_flop, calls),
        "BLAS MLP matmuls": lambda: gflops(lambda: mlp_matmuls(x, w1, dh), mlp_flop, calls),
        "MLP train step": lambda: benchmark.benchmark(
            mlp_step, calls=calls, repeats=3)["achieved_gflops_per_second"],
        "XLA 2048^3": lambda: gflops(xla_big, 2 * 2048 ** 3, calls),
        "BLAS 2048^3": lambda: gflops(lambda: big @ big, 2 * 2048 ** 3, calls),
        "XLA (Eigen) conv2 fwd+grads": lambda: gflops(xla_conv, 3 * CONV_FLOP, calls),
        "PyTorch conv2 fwd+grads": torch_rate,
        "BLAS im2col conv2 matmuls": lambda: gflops(
            lambda: (patches @ pw, patches.T @ pg, pg @ pw.T), 3 * CONV_FLOP, calls),
    }
    if onednn.unavailable() is None:
        xla_onednn = xla(lambda *a: conv_fwd_bwd(*a, conv=onednn.conv), cx, cw, cg)
        out["XLA fwd, oneDNN grads conv2"] = lambda: gflops(xla_onednn, 3 * CONV_FLOP, calls)
    else:
        print(f"XLA with oneDNN's gradients skipped: {onednn.unavailable()}.")
    return out


def main(argv):
    cli.start(argv)
    rates = common.alternate(kernels(FLAGS.calls, FLAGS.torch_python), FLAGS.rounds,
                             lambda v: "skipped" if v is None else f"{v:7.1f} GFLOP/s")
    medians = {name: common.spread(v) for name, v in rates.items() if None not in v}
    print("medians over rounds (GFLOP/s):")
    for name, s in medians.items():
        print(f"  {name:28s} {s['median']:6.1f}  (min {s['min']:.1f}, max {s['max']:.1f})")
    if {"MLP train step", "XLA MLP matmuls", "XLA 2048^3"} <= medians.keys():
        step = medians["MLP train step"]["median"]
        print(f"MLP step / its two big matmuls in XLA: "
              f"{step / medians['XLA MLP matmuls']['median']:.0%}; "
              f"/ the 2048^3 matmul: {step / medians['XLA 2048^3']['median']:.0%}")
    common.write_json(FLAGS.json, {"gflops": rates, "medians": medians, "rounds": FLAGS.rounds,
                                   "calls": FLAGS.calls, "machine": common.machine()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
