"""Benchmark the training step: compile time apart, steady-state step time, images/s, GFLOP/s,
model FLOP utilisation, memory, and a profile of a few steps; or a suite of them.

    python -m jaxdigits.benchmark --model=cnn                 # steady-state steps
    python -m jaxdigits.benchmark --model=cnn --dtype=bfloat16 --profile_steps=5
    python -m jaxdigits.benchmark --model=cnn --driver=step --json   # one JSON object on stdout
    python -m jaxdigits.benchmark --suite --out=results/bench_suite_cpu.json
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m jaxdigits.benchmark --model=mlp

With several devices it measures 1, 2, 4, ... of them, each with `--batch_size` images per device
(weak scaling), and reports total and per-device images/s and the scaling efficiency
(per-device images/s on n devices over that on one); `--devices=N` measures N devices only.

A step's GFLOP is XLA's own count of the one-step program's floating-point operations (its cost
analysis before optimisation; with oneDNN's convolution gradients, which it cannot see, those of
the same step with XLA's). MFU divides the achieved rate by the device's peak in `--dtype`
(`jaxdigits.peaks`: a data-sheet table per device kind; on the CPU a measured matmul). Memory is
XLA's analysis of the compiled program, and the device's high-water mark where the backend keeps
one (on the CPU: the process's resident-set high-water mark). Compile time is the cold compile:
the persistent compilation cache is off here unless `--compilation_cache` is given. Times are
medians over repeats of `--calls` compiled calls. `--profile_steps=N` traces N more calls with
`jax.profiler` into `--profile_dir`, for TensorBoard's profile plugin or ui.perfetto.dev.
`--suite` measures every model x batch size x dtype x driver of its lists (`jaxdigits.bench_suite`).
"""

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from jaxdigits import backend, bench_format, bench_suite, cli, drivers, inputs, parallel, peaks
from jaxdigits import step
from jaxdigits.config import Config, validate
from jaxdigits.errors import UserError, check_writable_folder
from jaxdigits.metrics import write_json


def versions() -> dict:
    import flax
    import jaxlib
    import optax

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "python": platform.python_version()}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor() or platform.machine()


def device_info() -> dict:
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": device.device_kind,
            "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "cpu": cpu_name(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def flops_of(program) -> float:
    """XLA's count of floating-point operations of a lowered or compiled program."""
    cost = program.cost_analysis()
    if isinstance(cost, (list, tuple)):  # Older jax returns one dict per program.
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def step_flops(setup, num_classes: int, args, mesh) -> float:
    """One train step's floating-point operations: the one-step program's count, before
    optimisation (a loop's body counts once after it); with oneDNN's gradients, hidden in custom
    calls, that of the same step with XLA's."""
    if backend.onednn_grads(setup.config.model, setup.config.cpu_conv, setup.config.dtype):
        config = dataclasses.replace(setup.config, cpu_conv="eigen")
        setup = setup._replace(config=config, model=step.make_config_model(config, num_classes))
    return flops_of(drivers.make_chunk_runner(setup, "step", mesh).lower(*args, num_steps=1))


def benchmark(config: Config, *, calls: int = 10, repeats: int = 3, epochs: int = 0,
              data_dir=None, quiet: bool = True, devices: int = 1, profile_steps: int = 0,
              profile_dir=None) -> dict:
    """Measures `config`'s train step as `train_and_evaluate` would run it (same driver), on
    `devices` devices (0: all) with `config.batch_size` images per step in all."""
    mesh = parallel.make_mesh(devices)
    parallel.check_divisible(config.batch_size, mesh)
    ds, (tx, ty), _, _ = inputs.prepare_data(config, data_dir)
    mean, std = inputs.pixel_stats(tx)
    setup = step.make_setup(config, len(tx), tx.shape[1:], ds.num_classes, mean, std)
    init_key, data_key, step_key = step.run_keys(config.seed)
    state = step.init_state(setup, init_key)
    data = inputs.to_device(tx, ty)
    if mesh.size > 1:
        state, data = parallel.replicate((state, data), mesh)
    driver, k = drivers.resolve_driver(config)
    k = min(k, setup.steps_per_epoch)
    run_chunk = drivers.make_chunk_runner(setup, driver, mesh)
    perm = jax.random.permutation(data_key, len(tx)).astype(jnp.int32)
    args = (state, step.zero_metrics(), data, perm, 0, step_key)

    start = time.perf_counter()
    compiled = run_chunk.lower(*args, num_steps=k).compile()
    compile_seconds = time.perf_counter() - start
    flops_per_step = step_flops(setup, ds.num_classes, args, mesh)
    state, acc = compiled(*args)  # Warm-up.
    jax.block_until_ready(state)
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            state, acc = compiled(state, acc, data, perm, offset(i, k, setup), step_key)
            parallel.settle(i, acc)
        jax.block_until_ready(state)
        step_times.append((time.perf_counter() - start) / (calls * k))
    result = describe(config, setup, (driver, k), mesh, compile_seconds, step_times,
                      flops_per_step, peaks.program_memory(compiled))
    if profile_steps:
        calls = -(-profile_steps // k)
        result.update(profile_steps=calls * k, profile_dir=str(trace(
            compiled, (state, acc, data, perm, step_key), k, setup, calls, profile_dir)))
    if epochs:
        result.update(time_epochs(run_chunk, state, data, (data_key, step_key), setup, k, epochs,
                                  quiet))
    result.update(peak_memory_bytes=peaks.peak_memory()["bytes"])
    return result


def offset(i: int, k: int, setup) -> int:
    """The first step of timed call i (calls wrap inside the epoch's steps)."""
    return (i * k) % max(setup.steps_per_epoch - k + 1, 1)


def describe(config, setup, driver, mesh, compile_seconds, step_times, flops_per_step,
             program_bytes) -> dict:
    """The result record of one measurement."""
    step_seconds = statistics.median(step_times)
    peak, memory = peaks.peak_flops(config.dtype), peaks.peak_memory()
    achieved = flops_per_step / step_seconds
    return {
        "model": config.model, "batch_size": config.batch_size, "optimizer": config.optimizer,
        "dtype": config.dtype, "driver": driver[0], "steps_per_call": driver[1],
        "driver_chosen": config.driver != "auto", "driver_basis": backend.driver_basis(),
        "compiler_options": step.compiler_options(setup),
        "onednn_grads": backend.onednn_grads(config.model, config.cpu_conv, config.dtype),
        "compile_seconds": compile_seconds,
        "compilation_cache": bool(jax.config.jax_enable_compilation_cache
                                  and jax.config.jax_compilation_cache_dir),
        "step_seconds": step_seconds,
        "step_seconds_min": min(step_times), "step_seconds_max": max(step_times),
        "images_per_second": config.batch_size / step_seconds, "devices": mesh.size,
        "images_per_second_per_device": config.batch_size / step_seconds / mesh.size,
        "gflops_per_step": flops_per_step / 1e9,
        "achieved_gflops_per_second": achieved / 1e9,
        "peak_tflops": None if peak["flops"] is None else peak["flops"] / 1e12,
        "peak_source": peak["source"],
        "mfu": None if peak["flops"] is None else achieved / mesh.size / peak["flops"],
        "program_bytes": program_bytes, "peak_memory_bytes": memory["bytes"],
        "peak_memory_source": memory["source"],
        **device_info(), "versions": versions(),
    }


def trace(compiled, args, k: int, setup, calls: int, directory=None):
    """Traces `calls` calls of `compiled` with jax.profiler into `directory` (default: a new
    runs/profile-TIMESTAMP); returns the folder (TensorBoard's logdir; perfetto_trace.json.gz)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = directory or os.path.join("runs", f"profile-{stamp}")
    state, acc, data, perm, key = args
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        for i in range(calls):
            state, acc = compiled(state, acc, data, perm, offset(i, k, setup), key)
        jax.block_until_ready(state)
    return directory


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


def scaling(config: Config, run) -> dict:
    """Weak scaling: `run(config, n)` on n = 1, 2, 4, ... devices, `config.batch_size` per device."""
    counts = sorted({min(2 ** i, jax.device_count()) for i in range(jax.device_count().bit_length() + 1)})
    results = [run(dataclasses.replace(config, batch_size=config.batch_size * n), n) for n in counts]
    base = results[0]["images_per_second_per_device"]
    for r in results:
        r["scaling_efficiency"] = r["images_per_second_per_device"] / base
    return {"scaling": results, **device_info(), "versions": versions()}


def measure(FLAGS, config: Config, devices: int | None = None) -> dict:
    """`benchmark` with the command line's settings."""
    return benchmark(config, calls=FLAGS.calls, repeats=FLAGS.repeats, epochs=FLAGS.bench_epochs,
                     data_dir=FLAGS.data_dir, quiet=FLAGS.quiet,
                     devices=FLAGS.devices or 1 if devices is None else devices,
                     profile_steps=FLAGS.profile_steps, profile_dir=FLAGS.profile_dir)


def run_suite(FLAGS, config: Config) -> tuple[dict, str]:
    """The suite of the command line's lists: (record, table)."""
    combos = bench_suite.configs(config, FLAGS.suite_models, FLAGS.suite_batch_sizes,
                                 FLAGS.suite_dtypes, bench_suite.parse_drivers(FLAGS.suite_drivers))
    lists = (f"--suite_models={','.join(FLAGS.suite_models)} "
             f"--suite_batch_sizes={','.join(FLAGS.suite_batch_sizes)} "
             f"--suite_dtypes={','.join(FLAGS.suite_dtypes)} "
             f"--suite_drivers={','.join(FLAGS.suite_drivers)}")
    command = f"python -m jaxdigits.benchmark --suite {lists} --calls={FLAGS.calls}"
    info = device_info()
    machine = (f"{info['cpu_count']}-core {info['cpu']}, {info['backend']} backend "
               f"({info['device']} x{info['device_count']})")
    record = bench_suite.suite(combos, lambda c: measure(FLAGS, c), command, machine)
    return record, bench_format.format_suite(record["rows"])


def main(argv):
    """Measures, prints a table (or, with --json, one JSON object), writes --out."""
    FLAGS = cli.start(argv)
    if not FLAGS["compilation_cache"].present:  # Compile times are cold unless asked otherwise.
        backend.enable_compilation_cache(False)
    config = validate(cli.from_flags())
    if FLAGS.out:
        out = pathlib.Path(FLAGS.out)
        if out.is_dir():
            raise UserError(f"--out={out} is a folder; name the JSON file to write.")
        check_writable_folder(out.parent, "--out's folder")
    if FLAGS.suite:
        result, text = run_suite(FLAGS, config)
    elif jax.device_count() > 1 and not FLAGS.devices:
        result = scaling(config, lambda c, n: measure(FLAGS, c, n))
        text = bench_format.format_scaling(result)
    else:
        result = measure(FLAGS, config)
        text = bench_format.format_table(result)
    if FLAGS.out:
        write_json(FLAGS.out, result)
    if FLAGS.json:
        print(json.dumps(result))
    else:
        print(text + (f"\nResult written to {FLAGS.out}." if FLAGS.out else ""))


def define_flags():
    from absl import flags

    cli.define_config_flags()
    flags.DEFINE_integer("calls", 10, "Compiled calls per timed repeat.", lower_bound=1)
    flags.DEFINE_integer("repeats", 3, "Timed repeats (the median is reported).", lower_bound=1)
    flags.DEFINE_integer("bench_epochs", 0, "Also time this many whole training epochs.",
                         lower_bound=0)
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files.")
    flags.DEFINE_bool("json", False, "Print the result as one JSON object on stdout, nothing else.")
    flags.DEFINE_string("out", None, "Also write the result to this JSON file.")
    flags.DEFINE_bool("quiet", True, "No progress bar during timed epochs.")
    flags.DEFINE_integer("devices", 0, "Measure on this many devices only (0: with several "
                         "visible, each power of two up to all of them).", lower_bound=0)
    flags.DEFINE_integer("profile_steps", 0, "Also trace this many steps (whole calls) with "
                         "jax.profiler, for TensorBoard or ui.perfetto.dev.", lower_bound=0)
    flags.DEFINE_string("profile_dir", None, "Where the trace goes (default: "
                        "runs/profile-TIMESTAMP).")
    flags.DEFINE_bool("suite", False, "Measure every model x batch size x dtype x driver of the "
                      "--suite_* lists; one table, one record.")
    flags.DEFINE_list("suite_models", ["linear", "mlp", "cnn_tiny", "cnn"], "Suite: models.")
    flags.DEFINE_list("suite_batch_sizes", ["128", "512"], "Suite: batch sizes.")
    flags.DEFINE_list("suite_dtypes", ["float32", "bfloat16"], "Suite: dtypes.")
    flags.DEFINE_list("suite_drivers", ["step", "unroll:8", "scan:8", "scan:64"], "Suite: drivers, "
                      "DRIVER or DRIVER:STEPS_PER_CALL.")


if __name__ == "__main__":
    cli.run(main, define_flags)
