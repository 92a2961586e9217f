"""Benchmark the training step: compile time, steady-state step time, images/s, GFLOP/s.

    python -m jaxdigits.benchmark --model=cnn                 # steady-state steps
    python -m jaxdigits.benchmark --model=cnn --epochs=2      # also whole timed epochs
    python -m jaxdigits.benchmark --model=cnn --driver=step --json=out.json

Achieved GFLOP/s is XLA's own count of the compiled step's floating-point operations (its cost
analysis) over the measured time. Times are medians over repeats of `--calls` compiled calls.
"""

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from jaxdigits import train
from jaxdigits.config import Config


def versions() -> dict:
    import flax
    import jaxlib
    import optax

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "python": platform.python_version()}


def device_info() -> dict:
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": device.device_kind,
            "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # Older jax returns one dict per program.
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def benchmark(config: Config, *, calls: int = 10, repeats: int = 3, epochs: int = 0,
              data_dir=None, quiet: bool = True) -> dict:
    """Measures `config`'s train step as `train_and_evaluate` would run it (same driver)."""
    ds, (tx, ty), _, _ = train.prepare_data(config, data_dir)
    mean, std = train.pixel_stats(tx)
    setup = train.make_setup(config, len(tx), tx.shape[1:], ds.num_classes, mean, std)
    init_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 3)
    state = train.init_state(setup, init_key)
    data = train.to_device(tx, ty)
    driver, k = train.resolve_driver(config)
    k = min(k, setup.steps_per_epoch)
    run_chunk = train.make_chunk_runner(setup, driver)
    perm = jax.random.permutation(data_key, len(tx)).astype(jnp.int32)

    start = time.perf_counter()
    compiled = run_chunk.lower(state, train.zero_metrics(), data, perm, 0, step_key,
                               num_steps=k).compile()
    compile_seconds = time.perf_counter() - start
    flops_per_step = flops_of(compiled) / k

    acc = train.zero_metrics()
    state, acc = compiled(state, acc, data, perm, 0, step_key)  # Warm-up.
    jax.block_until_ready(state)
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            offset = (i * k) % max(setup.steps_per_epoch - k + 1, 1)
            state, acc = compiled(state, acc, data, perm, offset, step_key)
        jax.block_until_ready(state)
        step_times.append((time.perf_counter() - start) / (calls * k))
    step = statistics.median(step_times)
    result = {
        "model": config.model, "batch_size": config.batch_size, "optimizer": config.optimizer,
        "driver": driver, "steps_per_call": k, "compile_seconds": compile_seconds,
        "step_seconds": step, "step_seconds_min": min(step_times), "step_seconds_max": max(step_times),
        "images_per_second": config.batch_size / step, "gflops_per_step": flops_per_step / 1e9,
        "achieved_gflops_per_second": flops_per_step / step / 1e9,
        **device_info(), "versions": versions(),
    }
    if epochs:
        epoch_seconds = []
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            state, _ = train.train_epoch(run_chunk, state, data, data_key, step_key, epoch,
                                          setup, k, quiet)
            jax.block_until_ready(state)
            epoch_seconds.append(time.perf_counter() - start)
        result.update(epoch_seconds=epoch_seconds,
                      epoch_images_per_second=setup.steps_per_epoch * config.batch_size
                      / statistics.median(epoch_seconds),
                      epoch_examples=setup.steps_per_epoch * config.batch_size)
    return result


def format_table(result: dict) -> str:
    rows = [
        ("model", f"{result['model']} (batch {result['batch_size']}, {result['optimizer']})"),
        ("device", f"{result['backend']} {result['device']} x{result['device_count']}, "
                   f"{result['cpu_count']} CPUs"),
        ("driver", f"{result['driver']}, {result['steps_per_call']} steps per call"),
        ("compile", f"{result['compile_seconds']:.2f} s"),
        ("step", f"{1e3 * result['step_seconds']:.2f} ms (min {1e3 * result['step_seconds_min']:.2f}, "
                 f"max {1e3 * result['step_seconds_max']:.2f})"),
        ("images/s", f"{result['images_per_second']:,.0f}"),
        ("GFLOP/step", f"{result['gflops_per_step']:.3f} (XLA cost analysis)"),
        ("GFLOP/s", f"{result['achieved_gflops_per_second']:.1f}"),
    ]
    if "epoch_seconds" in result:
        rows.append(("epochs", ", ".join(f"{s:.1f} s" for s in result["epoch_seconds"])
                     + f" ({result['epoch_examples']} images each)"))
    rows.append(("versions", " ".join(f"{k} {v}" for k, v in result["versions"].items())))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv):
    from absl import app, flags

    from jaxdigits import config as config_lib

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    config = config_lib.validate(config_lib.from_flags())
    result = benchmark(config, calls=FLAGS.calls, repeats=FLAGS.repeats, epochs=FLAGS.bench_epochs,
                       data_dir=FLAGS.data_dir, quiet=FLAGS.quiet)
    print(format_table(result))
    if FLAGS.json:
        from jaxdigits.metrics import write_atomic

        write_atomic(FLAGS.json, json.dumps(result, indent=2) + "\n")
        print(f"JSON written to {FLAGS.json}")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    from absl import app, flags

    from jaxdigits import config as config_lib
    from jaxdigits.errors import report_user_errors

    config_lib.define_flags()
    flags.adopt_module_key_flags(config_lib)  # So --help lists them.
    flags.DEFINE_integer("calls", 10, "Compiled calls per timed repeat.")
    flags.DEFINE_integer("repeats", 3, "Timed repeats (the median is reported).")
    flags.DEFINE_integer("bench_epochs", 0, "Also time this many whole training epochs.")
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files.")
    flags.DEFINE_string("json", None, "Also write the result to this JSON file.")
    flags.DEFINE_bool("quiet", True, "No progress bar during timed epochs.")
    app.run(report_user_errors(main))
