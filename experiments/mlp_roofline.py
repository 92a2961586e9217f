"""How close the MLP's train step comes to the matmuls it is made of, and to a big matmul.

    python experiments/mlp_roofline.py --rounds=5

Per round, alternating: the MLP 784-512-10 train step as `jaxdigits.train` runs it (momentum SGD
0.1, batch 128, the CPU driver), its five matmuls alone in one jitted program (forward 128x784 @
784x512 and 128x512 @ 512x10, the two weight gradients and the hidden layer's input gradient,
8 steps' worth per call like the driver), and a 2048^3 float32 matmul. Prints GFLOP/s (the step's
FLOPs from XLA's cost analysis) and the step's share of each rate. Results: BUILD_NOTES.md (issue 6).
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jaxdigits import benchmark
from jaxdigits.config import Config

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds.")


def rate(fn, args, flops: float, repeats: int = 20) -> float:
    """GFLOP/s of jitted `fn(*args)`, best of `repeats` timed calls after a warm-up."""
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def mlp_matmuls(x, w1, w2, g, steps=8):
    """The MLP step's matmuls, chained so none can be dropped. x [b, 784], g [b, 10]."""
    for _ in range(steps):
        h = x @ w1  # [b, 512]
        logits = h @ w2  # [b, 10]
        dw2 = h.T @ (g + logits)  # [512, 10]
        dh = (g + logits) @ w2.T  # [b, 512]
        dw1 = x.T @ dh  # [784, 512]
        w1, w2 = w1 - 1e-9 * dw1, w2 - 1e-9 * dw2
    return w1, w2


def main(argv):
    del argv  # Unused.
    config = Config(model="mlp", optimizer="momentum", learning_rate=0.1, schedule="constant",
                    validation_size=0, augment_shift=0)
    b = config.batch_size
    r = np.random.default_rng(0)
    args = [jnp.asarray(r.standard_normal(s), jnp.float32)
            for s in ((b, 784), (784, 512), (512, 10), (b, 10))]
    mm_flops = 8 * 2 * (b * 784 * 512 * 2 + b * 512 * 10 * 3)
    big = jnp.asarray(r.standard_normal((2048, 2048)), jnp.float32)
    rows = {"step": [], "matmuls": [], "2048^3": []}
    for i in range(_ROUNDS.value):
        out = benchmark.benchmark(config, calls=20, repeats=3)
        rows["step"].append(out["gflops_per_step"] / out["step_seconds"])
        rows["matmuls"].append(rate(mlp_matmuls, args, mm_flops))
        rows["2048^3"].append(rate(lambda a: a @ a, [big], 2 * 2048 ** 3))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} GFLOP/s" for k, v in rows.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"medians: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in med.items()))
    print(f"step / its matmuls alone: {med['step'] / med['matmuls']:.0%}; "
          f"step / 2048^3 matmul: {med['step'] / med['2048^3']:.0%}")


if __name__ == "__main__":
    app.run(main)
