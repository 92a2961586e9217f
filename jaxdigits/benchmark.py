"""Benchmark the training step: compile time, steady-state step time, images/s, GFLOP/s.

    python -m jaxdigits.benchmark --model=cnn                 # steady-state steps
    python -m jaxdigits.benchmark --model=cnn --epochs=2      # also whole timed epochs
    python -m jaxdigits.benchmark --model=cnn --driver=step --json=out.json
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m jaxdigits.benchmark --model=mlp

With several devices it measures 1, 2, 4, ... of them, each with `--batch_size` images per device
(weak scaling), and reports total and per-device images/s and the scaling efficiency
(per-device images/s on n devices over that on one); `--devices=N` measures N devices only.

Achieved GFLOP/s is XLA's own count of the compiled step's floating-point operations (its cost
analysis; with oneDNN's convolution gradients, which it cannot see, those of the same step with
XLA's) over the measured time. Times are medians over repeats of `--calls` compiled calls.
"""

import dataclasses
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from jaxdigits import models, parallel, train
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
              data_dir=None, quiet: bool = True, devices: int = 1) -> dict:
    """Measures `config`'s train step as `train_and_evaluate` would run it (same driver), on
    `devices` devices (0: all) with `config.batch_size` images per step in all."""
    mesh = parallel.make_mesh(devices)
    parallel.check_divisible(config.batch_size, mesh)
    ds, (tx, ty), _, _ = train.prepare_data(config, data_dir)
    mean, std = train.pixel_stats(tx)
    setup = train.make_setup(config, len(tx), tx.shape[1:], ds.num_classes, mean, std)
    init_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 3)
    state = train.init_state(setup, init_key)
    data = train.to_device(tx, ty)
    if mesh.size > 1:
        state, data = parallel.replicate((state, data), mesh)
    driver, k = train.resolve_driver(config)
    k = min(k, setup.steps_per_epoch)
    run_chunk = train.make_chunk_runner(setup, driver, mesh)
    perm = jax.random.permutation(data_key, len(tx)).astype(jnp.int32)

    start = time.perf_counter()
    compiled = run_chunk.lower(state, train.zero_metrics(), data, perm, 0, step_key,
                               num_steps=k).compile()
    compile_seconds = time.perf_counter() - start
    flops_per_step = flops_of(compiled) / k
    onednn_grads = models.onednn_grads(config.model, config.cpu_conv)
    if onednn_grads:
        # XLA's cost analysis cannot see into oneDNN's custom calls: add what the same step with
        # XLA's own convolution gradients counts beyond this one (both before optimisation).
        twin = train.make_setup(dataclasses.replace(config, cpu_conv="eigen"), len(tx),
                                tx.shape[1:], ds.num_classes, mean, std)
        args = (state, train.zero_metrics(), data, perm, 0, step_key)
        flops = [flops_of(train.make_chunk_runner(s, driver, mesh).lower(*args, num_steps=k))
                 for s in (twin, setup)]
        flops_per_step += (flops[0] - flops[1]) / k

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
        "driver": driver, "steps_per_call": k, "compiler_options": train.compiler_options(setup),
        "onednn_grads": onednn_grads,
        "compile_seconds": compile_seconds, "step_seconds": step,
        "step_seconds_min": min(step_times), "step_seconds_max": max(step_times),
        "images_per_second": config.batch_size / step, "devices": mesh.size,
        "images_per_second_per_device": config.batch_size / step / mesh.size,
        "gflops_per_step": flops_per_step / 1e9,
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
        ("XLA options", ", ".join(f"{k}={v}" for k, v in result["compiler_options"].items())
                        or "none"),
        ("conv grads", "oneDNN (--cpu_conv)" if result["onednn_grads"] else "XLA"),
        ("compile", f"{result['compile_seconds']:.2f} s"),
        ("step", f"{1e3 * result['step_seconds']:.2f} ms (min {1e3 * result['step_seconds_min']:.2f}, "
                 f"max {1e3 * result['step_seconds_max']:.2f})"),
        ("images/s", f"{result['images_per_second']:,.0f} on {result['devices']} device(s), "
                     f"{result['images_per_second_per_device']:,.0f} per device"),
        ("GFLOP/step", f"{result['gflops_per_step']:.3f} (XLA cost analysis)"),
        ("GFLOP/s", f"{result['achieved_gflops_per_second']:.1f}"),
    ]
    if "epoch_seconds" in result:
        rows.append(("epochs", ", ".join(f"{s:.1f} s" for s in result["epoch_seconds"])
                     + f" ({result['epoch_examples']} images each)"))
    rows.append(("versions", " ".join(f"{k} {v}" for k, v in result["versions"].items())))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def scaling(config: Config, run) -> dict:
    """Weak scaling: `run(config, n)` on n = 1, 2, 4, ... devices, `config.batch_size` per device."""
    counts = sorted({min(2 ** i, jax.device_count()) for i in range(jax.device_count().bit_length() + 1)})
    results = [run(dataclasses.replace(config, batch_size=config.batch_size * n), n) for n in counts]
    base = results[0]["images_per_second_per_device"]
    for r in results:
        r["scaling_efficiency"] = r["images_per_second_per_device"] / base
    return {"scaling": results, **device_info(), "versions": versions()}


def format_scaling(result: dict) -> str:
    lines = [f"{'devices':>7}  {'batch':>6}  {'step ms':>8}  {'images/s':>9}  {'per device':>10}  "
             f"{'efficiency':>10}"]
    for r in result["scaling"]:
        lines.append(f"{r['devices']:>7}  {r['batch_size']:>6}  {1e3 * r['step_seconds']:>8.2f}  "
                     f"{r['images_per_second']:>9,.0f}  {r['images_per_second_per_device']:>10,.0f}  "
                     f"{100 * r['scaling_efficiency']:>9.1f}%")
    first = result["scaling"][0]
    lines.append(f"{first['model']}, {first['optimizer']}, driver {first['driver']} x"
                 f"{first['steps_per_call']}; {result['backend']} {result['device']}, "
                 f"{result['cpu_count']} CPUs, XLA_FLAGS={result['xla_flags']!r}")
    return "\n".join(lines)


def main(argv):
    from absl import app, flags

    from jaxdigits import config as config_lib

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    config = config_lib.validate(config_lib.from_flags())
    run = lambda c, n: benchmark(c, calls=FLAGS.calls, repeats=FLAGS.repeats,
                                 epochs=FLAGS.bench_epochs, data_dir=FLAGS.data_dir,
                                 quiet=FLAGS.quiet, devices=n)
    if jax.device_count() > 1 and not FLAGS.devices:
        result = scaling(config, run)
        print(format_scaling(result))
    else:
        result = run(config, FLAGS.devices or 1)
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
    flags.DEFINE_integer("devices", 0, "Measure on this many devices only (0: with several "
                         "visible, each power of two up to all of them).")
    app.run(report_user_errors(main))
