"""jaxdigits.fastconv's layers against the plain ones, alternating in one process.

    python -m benchmarks.fast_layers --rounds=15 --json=/tmp/fast_layers.json

Result, 2-core Intel Xeon (AVX-512), 2026-12-01 (then `experiments/fast_layers.py`), the seed
CNN's first layer forward and backward: plain layers 64.0 ms (min 54.8), `conv_relu_pool`
11.6 ms (min 8.5). The second pooling on the 2-core AMD EPYC (load 7.6, 2026-11-22):
`nn.max_pool` 101.8 ms (min 77.2), `max_pool_2x2` 6.3 ms (min 1.4). BUILD_NOTES.md.

Each case is jitted forward + backward of a sum of squares, batch 128, compiled with the
training programs' CPU options (`backend.compiler_options()`):

- the seed CNN's first layer (conv 5x5x32 on 28x28x1, bias, ReLU, 2x2 max pooling), gradients
  of kernel and bias: the plain layers against `fastconv.conv_relu_pool`;
- the second layer's pooling (128x14x14x64 -> 7x7): `nn.max_pool` against
  `fastconv.max_pool_2x2`.

Checks that each pair agrees, then prints milliseconds per call, median and min over rounds.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from jaxdigits import backend, cli, errors, fastconv

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_integer("rounds", 7, "Rounds; each times every case once.")
    flags.DEFINE_string("json", None, "Write the milliseconds of every case and round here.")


def plain_first_layer(x, kernel, bias):
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return nn.max_pool(jax.nn.relu(y + bias), (2, 2), strides=(2, 2))


def squares_grad(layer, argnums):
    return jax.grad(lambda *args: (layer(*args) ** 2).sum(), argnums)


def cases():
    """name -> (function, arguments), in pairs: plain, then fast."""
    keys = jax.random.split(jax.random.key(0), 4)
    images = jax.random.normal(keys[0], (128, 28, 28, 1))
    kernel = jax.random.normal(keys[1], (5, 5, 1, 32)) * 0.2
    bias = jax.random.normal(keys[2], (32,)) * 0.1
    act = jax.random.normal(keys[3], (128, 14, 14, 64))
    layer1 = (images, kernel, bias)
    return {
        "layer 1 plain": (squares_grad(plain_first_layer, (1, 2)), layer1),
        "layer 1 conv_relu_pool": (squares_grad(fastconv.conv_relu_pool, (1, 2)), layer1),
        "pool 2 nn.max_pool": (squares_grad(lambda a: nn.max_pool(a, (2, 2), (2, 2)), 0), (act,)),
        "pool 2 max_pool_2x2": (squares_grad(fastconv.max_pool_2x2, 0), (act,)),
    }


def compare(rounds: int) -> dict:
    compiled = {name: (jax.jit(fn).lower(*args).compile(backend.compiler_options()), args)
                for name, (fn, args) in cases().items()}
    outputs = [fn(*args) for fn, args in compiled.values()]
    for name, a, b in [("layer 1", outputs[0], outputs[1]), ("pool 2", outputs[2], outputs[3])]:
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4 * float(jnp.abs(y).max()))
        print(f"{name}: the two formulations agree")

    def timer(fn, args):
        def call():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            return 1e3 * (time.perf_counter() - start)
        return call

    ms = common.alternate({name: timer(*c) for name, c in compiled.items()}, rounds,
                          lambda t: f"{t:7.2f} ms")
    return {"ms": ms, "summary": {name: common.spread(t) for name, t in ms.items()},
            "machine": common.machine()}


def main(argv):
    cli.start(argv)
    result = compare(FLAGS.rounds)
    for name, s in result["summary"].items():
        print(f"{name:24s} median {s['median']:7.2f} ms  min {s['min']:7.2f} ms")
    common.write_json(FLAGS.json, result)


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
