"""One command for a machine with an accelerator: install JAX's plugin for it, measure the
benchmark suite, run the speedrun with at least 10 seeds, write one JSON; at most 8 minutes.

    python -m benchmarks.accelerator --out=/tmp/accelerator.json        # GPU or TPU machine
    python -m benchmarks.accelerator --tiny --noinstall --out=/tmp/a.json  # any machine, a minute

1. Install: with no accelerator visible to JAX, `pip install -e ".[cuda]"` where `nvidia-smi`
   runs (".[tpu]" where /dev/accel0 or /dev/vfio exists), then the script starts itself again.
2. The suite (`jaxdigits.benchmark --suite`'s): models x batch sizes x dtypes x step drivers;
   it stops early, saying so, when its share of `--budget_s` is spent.
3. The speedrun: the speedrun recipe with `--speedrun` overrides (default: a whole epoch per
   compiled call), `--seeds` seeds as one many-model program (`--num_models`) and one after
   another; per seed the test accuracy; the training time with compilation apart (the train
   programs' compile time, from jax.monitoring, taken out of the epochs' seconds); whether every
   seed reached 99.0 %.

`--tiny` is the same path on a few thousand images (tests/test_accelerator.py runs it on the
CPU); its accuracies mean nothing. Nothing here was run on an accelerator yet (no device was
available where it was written); docs/performance.md says how to add its table.
"""

import contextlib
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import common
from jaxdigits import backend, bench_suite, benchmark, cli, errors, members, metrics, recipes
from jaxdigits import train

FLAGS = flags.FLAGS
ROOT = pathlib.Path(__file__).resolve().parents[1]


def define_flags() -> None:
    flags.DEFINE_string("out", "accelerator.json", "Where the JSON goes.")
    flags.DEFINE_bool("install", True, "Install the accelerator's extra first if JAX sees none.")
    flags.DEFINE_bool("tiny", False, "A tiny setting (a few thousand images) for a quick check.")
    flags.DEFINE_integer("seeds", 10, "Speedrun seeds.")
    flags.DEFINE_list("modes", ["many", "separate"], "Speedrun as one many-model program (many) "
                      "and/or one seed after another (separate).")
    flags.DEFINE_string("speedrun", "driver=scan,steps_per_call=1000", "Config overrides of the "
                        "speedrun recipe, name=value,...")
    flags.DEFINE_float("budget_s", 480, "Wall-clock budget of the whole script, seconds.")
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files.")


def extra_needed() -> str | None:
    """"cuda" or "tpu" where the machine has that accelerator and JAX sees none; else None."""
    if backend.is_cpu():
        smi = shutil.which("nvidia-smi")
        if smi and subprocess.run([smi], capture_output=True).returncode == 0:
            return "cuda"
        if os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"):
            return "tpu"
    return None


def install_and_restart(extra: str) -> None:
    """pip-installs jaxdigits' `extra` and replaces this process with a fresh run of the script."""
    print(f"Installing the {extra} extra ...", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[{extra}]"])
    if done.returncode != 0:
        raise errors.UserError(f'pip install -e ".[{extra}]" failed (exit {done.returncode}).')
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.accelerator", *sys.argv[1:],
                              "--noinstall"])


def suite_combos(tiny: bool):
    """The suite's configs: small enough for about half of the 8 minutes on one GPU."""
    # The speedrun's training settings on each model at its own widths.
    base = dataclasses.replace(recipes.config("speedrun"), features=(), hidden=())
    if tiny:
        base = dataclasses.replace(base, max_train_examples=2048)
        return bench_suite.configs(base, ["linear"], [128], ["float32", "bfloat16"],
                                   bench_suite.parse_drivers(["scan:4"]))
    return bench_suite.configs(base, ["mlp", "cnn_tiny", "cnn"], [128, 1024],
                               ["float32", "bfloat16"],
                               bench_suite.parse_drivers(["step", "unroll:8", "scan:64"]))


def run_suite(tiny: bool, deadline: float) -> dict:
    """The suite, skipping what the deadline leaves no time for."""
    info = benchmark.device_info()
    machine = f"{info['device']} x{info['device_count']} ({info['backend']}), {info['cpu']}"
    measure = lambda config: benchmark.benchmark(config, calls=2 if tiny else 10,
                                                 repeats=1 if tiny else 3, data_dir=FLAGS.data_dir)
    return bench_suite.suite(suite_combos(tiny), measure, "python -m benchmarks.accelerator",
                             machine, deadline=deadline)


@contextlib.contextmanager
def compile_seconds():
    """Sums the seconds jax spends tracing, lowering and compiling each program, by its name."""
    import jax

    spent = {}
    events = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def listener(event, duration, **kwargs):
        if event in events:
            name = kwargs.get("fun_name", "?")
            spent[name] = spent.get(name, 0.0) + duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield spent
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def speedrun(config, seeds: int, mode: str, folder: pathlib.Path) -> dict:
    """The recipe for `seeds` seeds in `mode`; accuracies and seconds."""
    start = time.perf_counter()
    with compile_seconds() as spent:
        if mode == "many":
            result = train.train_and_evaluate(dataclasses.replace(config, num_models=seeds),
                                              folder / "many", data_dir=FLAGS.data_dir,
                                              allow_download=False, quiet=True)
            accuracies = [m["test_accuracy"] for m in result["members"]]
            histories = [metrics.read_jsonl(members.member_paths(folder / "many")[0]
                                            / "metrics.jsonl")]
        else:
            accuracies, histories = [], []
            for seed in range(config.seed, config.seed + seeds):
                workdir = folder / f"seed{seed}"
                final = train.train_and_evaluate(dataclasses.replace(config, seed=seed), workdir,
                                                 data_dir=FLAGS.data_dir, allow_download=False,
                                                 quiet=True)
                accuracies.append(final["test_accuracy"])
                histories.append(metrics.read_jsonl(workdir / "metrics.jsonl"))
    wall = time.perf_counter() - start
    epochs = sum(r["seconds"] for h in histories for r in h if "seconds" in r)
    step_compile = spent.get("jit(run)", 0.0)
    return {"mode": mode, "seeds": seeds, "test_accuracy": accuracies,
            "seeds_at_99": sum(a >= 0.99 for a in accuracies), "wall_seconds": wall,
            "train_seconds_with_compile": epochs, "step_compile_seconds": step_compile,
            "train_seconds": epochs - step_compile, "compile_seconds_all": sum(spent.values()),
            "config": dataclasses.asdict(config)}


def main(argv):
    cli.start(argv)
    deadline = time.monotonic() + FLAGS.budget_s
    extra = extra_needed() if FLAGS.install else None
    if extra:
        install_and_restart(extra)
    out = {"device": benchmark.device_info(), "versions": benchmark.versions(),
           "driver_basis": backend.driver_basis(), "tiny": FLAGS.tiny}
    out["suite"] = run_suite(FLAGS.tiny, deadline - FLAGS.budget_s / 2)
    config = common.config_with(FLAGS.speedrun, recipes.config("speedrun"))
    if FLAGS.tiny:
        config = dataclasses.replace(config, model="mlp", hidden=(64,), features=(), epochs=1,
                                     max_train_examples=2048, validation_size=512)
    with tempfile.TemporaryDirectory() as tmp:
        out["speedrun"] = [speedrun(config, FLAGS.seeds, mode, pathlib.Path(tmp))
                           for mode in FLAGS.modes if time.monotonic() < deadline]
    out["seconds"] = FLAGS.budget_s - (deadline - time.monotonic())
    metrics.write_json(FLAGS.out, out)
    for run in out["speedrun"]:
        print(f"speedrun, {run['mode']}: {run['seeds_at_99']}/{run['seeds']} seeds at >= 99.0 %, "
              f"training {run['train_seconds']:.2f} s (+ {run['step_compile_seconds']:.2f} s "
              f"compiling the step), whole {run['wall_seconds']:.1f} s")
    print(f"Suite: {len(out['suite']['rows'])} measurements, {len(out['suite']['skipped'])} "
          f"skipped for time; written to {FLAGS.out} in "
          f"{out['seconds']:.0f} s.")


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
