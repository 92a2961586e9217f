"""What the networks behind the public 99.7-99.8 % MNIST results cost per epoch on this machine,
beside the accurate recipe's CNN, in one process, one after another.

    python -m benchmarks.public_nets --json=results/public_nets.json

Each net is written here as its paper or repository describes it, in Flax, and trained in the same
plain jitted step (Adam, softmax cross-entropy, batch normalisation statistics threaded through):
the seconds of a step of 128 images (median of `--steps` after one untimed), XLA's count of the
step's floating-point operations (and their ratio to the CNN's), and from them an epoch of 55,000
images and the epochs that fit in 45 minutes. The CNN here is the plain Flax layer stack, without
the trainer's CPU formulations (jaxdigits.fastconv, jaxdigits.onednn), so that every net meets XLA
alike.
"""

import statistics
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from benchmarks import common
from jaxdigits import benchmark, models

FLAGS = flags.FLAGS
BATCH = 128
EPOCH_IMAGES = 55_000
BUDGET_SECONDS = 45 * 60


def define_flags() -> None:
    flags.DEFINE_integer("steps", 3, "Timed steps per net (after one untimed).")
    flags.DEFINE_list("nets", list(NETS), "Nets to time (cnn among them).")
    flags.DEFINE_string("json", None, "Write the table here.")


class Residual(nn.Module):
    """Batch norm, then x + ReLU(conv 3x3 (x)): ttdoucet/mnist's residual block."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train)(x)
        return x + nn.relu(nn.Conv(x.shape[-1], (3, 3))(x))


class ResidualNet(nn.Module):
    """ttdoucet/mnist (99.82 %, a committee of such nets): 5x5x128, residual 128, pool,
    residual 128, 3x3x256, pool, residual 256, 3x3x512, pool, residual 512, average, dense."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Conv(128, (5, 5))(x))
        x = nn.max_pool(Residual()(x, train), (2, 2), (2, 2))
        x = Residual()(x, train)
        for width in (256, 512):
            x = nn.relu(nn.Conv(width, (3, 3))(nn.BatchNorm(use_running_average=not train)(x)))
            x = nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
            x = Residual()(x, train)
        x = nn.BatchNorm(use_running_average=not train)(x).mean(axis=(1, 2))
        return nn.Dense(10)(x)


class ConvOnly(nn.Module):
    """An et al. 2020's M3 (members of the 99.87 % vote): ten 3x3 VALID convolutions of 32, 48,
    ..., 176 channels, each with batch norm and ReLU, then dense with batch norm."""
    widths: Sequence[int] = tuple(range(32, 177, 16))

    @nn.compact
    def __call__(self, x, train: bool):
        for width in self.widths:
            x = nn.Conv(width, (3, 3), padding="VALID", use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Dense(10, use_bias=False)(x.reshape(x.shape[0], -1))
        return nn.BatchNorm(use_running_average=not train)(x)


class Wrapped(nn.Module):
    """A jaxdigits module (its `train` keyword) under this file's call signature."""
    module: nn.Module

    def __call__(self, x, train: bool):
        return self.module(x, train=train)


# name -> (module, the public result and the epochs its recipe trains)
NETS = {
    "cnn": (Wrapped(models.CNN(batch_norm=True)), "this project's accurate recipe, 25 epochs"),
    "cnn_deep": (Wrapped(models.DeepCNN()), "cdeotte's Kaggle net: 99.65 % single, 45 epochs"),
    "residual": (ResidualNet(),
                 "ttdoucet/mnist: 99.7-99.8 % single, 99.82 % committee, about 10 epochs"),
    "conv_only": (ConvOnly(),
                  "An et al. 2020 M3: 99.87 % vote of three (checkpoints picked on test), "
                  "150 epochs"),
}


def time_net(module: nn.Module, steps: int) -> dict:
    """Seconds of one Adam step of BATCH images (median of `steps`) and the step's flops."""
    images = jax.random.normal(jax.random.key(0), (BATCH, 28, 28, 1))
    labels = jnp.arange(BATCH) % 10
    variables = module.init(jax.random.key(1), images, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(1e-3)

    def train_step(params, stats, opt_state):
        def loss_fn(params):
            logits, new = module.apply({"params": params, "batch_stats": stats}, images,
                                       train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new
        grads, new = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new["batch_stats"], opt_state

    state = (params, stats, tx.init(params))
    compiled = jax.jit(train_step).lower(*state).compile()
    seconds = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        state = jax.block_until_ready(compiled(*state))
        seconds.append(time.perf_counter() - start)
    step = statistics.median(seconds[1:])
    epoch = step * EPOCH_IMAGES / BATCH
    return {"step_seconds": step, "gflops_per_step": benchmark.flops_of(compiled) / 1e9,
            "epoch_seconds": epoch, "epochs_in_45_minutes": BUDGET_SECONDS / epoch}


def results_file(rows: dict, machine: dict) -> dict:
    """The results file (`results/render.py` renders it into docs/training.md) for `rows`."""
    load = machine["load_average"][0]
    return {
        "table": "public_nets", "page": "docs/training.md",
        "columns": ["net", "public result", "GFLOP a step", "against the cnn",
                    "plain XLA step, ms", "an epoch, min", "epochs in 45 min"],
        "rows": [[f"`{name}`", r["about"], f"{r['gflops_per_step']:.1f}",
                  f"{r['flops_vs_cnn']:.1f}x", f"{1e3 * r['step_seconds']:,.0f}",
                  f"{r['epoch_seconds'] / 60:.1f}", f"{r['epochs_in_45_minutes']:.1f}"]
                 for name, r in rows.items()],
        "nets": rows, "command": "python -m benchmarks.public_nets --json=results/public_nets.json",
        "machine": f"{machine['cpu_count']}-core {machine['cpu']}, load average {load:.1f}",
        "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
        "note": f"One Adam step of {BATCH} images with batch normalisation, each net in the same "
        "plain jitted step (the median of the timed steps after one untimed); GFLOP as XLA counts "
        f"them; an epoch is {EPOCH_IMAGES:,} images at that step time."}


def main(argv) -> None:
    del argv
    unknown = sorted(set(FLAGS.nets) - set(NETS))
    if unknown:
        raise app.UsageError(f"unknown nets {unknown}; choose from {', '.join(NETS)}.")
    if "cnn" not in FLAGS.nets:
        raise app.UsageError("--nets must include cnn: every net is measured against it.")
    rows = {}
    for name in FLAGS.nets:
        module, about = NETS[name]
        rows[name] = {"about": about, **time_net(module, FLAGS.steps)}
        r = rows[name]
        print(f"{name:10s} {r['step_seconds'] * 1e3:8.0f} ms a step, {r['gflops_per_step']:7.1f}"
              f" GFLOP, {r['epoch_seconds'] / 60:6.1f} min an epoch, "
              f"{r['epochs_in_45_minutes']:5.1f} epochs in 45 min  ({about})", flush=True)
    for r in rows.values():  # XLA's flops against the CNN's: what a net costs whatever the kernels.
        r["flops_vs_cnn"] = r["gflops_per_step"] / rows["cnn"]["gflops_per_step"]
    print("flops against the cnn: " + ", ".join(f"{n} {r['flops_vs_cnn']:.1f}x"
                                                 for n, r in rows.items()))
    common.write_json(FLAGS.json, results_file(rows, common.machine()))


if __name__ == "__main__":
    define_flags()
    app.run(main)
