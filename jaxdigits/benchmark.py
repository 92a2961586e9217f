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

from jaxdigits import backend, cli, drivers, inputs, parallel, step
from jaxdigits.config import Config, validate
from jaxdigits.metrics import write_json


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
    ds, (tx, ty), _, _ = inputs.prepare_data(config, data_dir)
    mean, std = inputs.pixel_stats(tx)
    setup = step.make_setup(config, len(tx), tx.shape[1:], ds.num_classes, mean, std)
    init_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 3)
    state = step.init_state(setup, init_key)
    data = inputs.to_device(tx, ty)
    if mesh.size > 1:
        state, data = parallel.replicate((state, data), mesh)
    driver, k = drivers.resolve_driver(config)
    k = min(k, setup.steps_per_epoch)
    run_chunk = drivers.make_chunk_runner(setup, driver, mesh)
    perm = jax.random.permutation(data_key, len(tx)).astype(jnp.int32)

    start = time.perf_counter()
    compiled = run_chunk.lower(state, step.zero_metrics(), data, perm, 0, step_key,
                               num_steps=k).compile()
    compile_seconds = time.perf_counter() - start
    flops_per_step = flops_of(compiled) / k
    onednn_grads = backend.onednn_grads(config.model, config.cpu_conv)
    if onednn_grads:
        args = (state, step.zero_metrics(), data, perm, 0, step_key)
        flops_per_step += hidden_flops(setup, ds.num_classes, args, driver, mesh, k) / k

    acc = step.zero_metrics()
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
    step_seconds = statistics.median(step_times)
    result = {
        "model": config.model, "batch_size": config.batch_size, "optimizer": config.optimizer,
        "driver": driver, "steps_per_call": k, "compiler_options": step.compiler_options(setup),
        "onednn_grads": onednn_grads,
        "compile_seconds": compile_seconds, "step_seconds": step_seconds,
        "step_seconds_min": min(step_times), "step_seconds_max": max(step_times),
        "images_per_second": config.batch_size / step_seconds, "devices": mesh.size,
        "images_per_second_per_device": config.batch_size / step_seconds / mesh.size,
        "gflops_per_step": flops_per_step / 1e9,
        "achieved_gflops_per_second": flops_per_step / step_seconds / 1e9,
        **device_info(), "versions": versions(),
    }
    if epochs:
        result.update(time_epochs(run_chunk, state, data, (data_key, step_key), setup, k, epochs,
                                  quiet))
    return result


def hidden_flops(setup, num_classes: int, args, driver: str, mesh, k: int) -> float:
    """The floating-point operations of `k` steps that oneDNN's custom calls hide from XLA's cost
    analysis: what the same steps with XLA's own convolution gradients count beyond these (both
    before optimisation)."""
    config = dataclasses.replace(setup.config, cpu_conv="eigen")
    twin = setup._replace(config=config, model=step.make_config_model(config, num_classes))
    flops = [flops_of(drivers.make_chunk_runner(s, driver, mesh).lower(*args, num_steps=k))
             for s in (twin, setup)]
    return flops[0] - flops[1]


def time_epochs(run_chunk, state, data, keys, setup, k: int, epochs: int, quiet: bool) -> dict:
    """Wall time of `epochs` whole training epochs, `k` steps per call."""
    epoch_seconds = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        state, _ = drivers.train_epoch(run_chunk, state, data, *keys, epoch, setup, k, quiet)
        jax.block_until_ready(state)
        epoch_seconds.append(time.perf_counter() - start)
    examples = setup.steps_per_epoch * setup.config.batch_size
    return {"epoch_seconds": epoch_seconds, "epoch_examples": examples,
            "epoch_images_per_second": examples / statistics.median(epoch_seconds)}


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
    FLAGS = cli.start(argv)
    config = validate(cli.from_flags())
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
        write_json(FLAGS.json, result)
        print(f"JSON written to {FLAGS.json}")
    else:
        print(json.dumps(result))


def define_flags():
    from absl import flags

    cli.define_config_flags()
    flags.DEFINE_integer("calls", 10, "Compiled calls per timed repeat.")
    flags.DEFINE_integer("repeats", 3, "Timed repeats (the median is reported).")
    flags.DEFINE_integer("bench_epochs", 0, "Also time this many whole training epochs.")
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files.")
    flags.DEFINE_string("json", None, "Also write the result to this JSON file.")
    flags.DEFINE_bool("quiet", True, "No progress bar during timed epochs.")
    flags.DEFINE_integer("devices", 0, "Measure on this many devices only (0: with several "
                         "visible, each power of two up to all of them).")


if __name__ == "__main__":
    cli.run(main, define_flags)
