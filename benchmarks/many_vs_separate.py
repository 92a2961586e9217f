"""K models at once (members looped, members vmapped) against K separate runs, whole commands.

    python -m benchmarks.many_vs_separate --model=cnn --k=4 --rounds=2 \
        --train_args=--epochs=1,--max_train_examples=8192,--validation_size=1000

Result, 2-core Intel Xeon (AVX-512), quiet, 2026-12-01 (then
`experiments/many_vs_separate.py`), four seed CNNs, one epoch of 8,192 images each: with XLA's
Eigen convolutions looped 76.4 / 78.6 s, vmapped 72.4 / 76.7 s, four separate runs 87.7 / 86.2 s
(one round each, twice): K at once is 1.1-1.2x faster either way. With YNNPACK's convolutions
(`--cpu_conv=ynnpack`, the default of then, 2 rounds) looped 80.4 s, vmapped 221.3 s, separate
98.1 s. BUILD_NOTES.md.

Each job is `python -m jaxdigits.train` in its own process (start-up, compilation, data,
training, validation, test and checkpoints all counted), in a temporary folder; the three jobs
alternate within each round. Prints seconds per job and round, then medians and the speed
against separate runs.
"""

import statistics
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import common
from jaxdigits import cli, errors

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", "cnn", "Model.")
    flags.DEFINE_integer("k", 4, "Models.")
    flags.DEFINE_integer("rounds", 2, "Rounds.")
    flags.DEFINE_list("train_args", [], "Extra jaxdigits.train flags for every job.")
    flags.DEFINE_string("json", None, "Write the seconds of every job and round here.")


def timed(args: list[str]) -> float:
    """Wall seconds of one `python -m jaxdigits.train ARGS` in a fresh temporary workdir."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        common.run_command([sys.executable, "-m", "jaxdigits.train", "--quiet",
                            f"--workdir={tmp}/run", *args])
        return time.perf_counter() - start


def compare(model: str, k: int, rounds: int, train_args: list[str]) -> dict:
    common_args = [f"--model={model}", *train_args]
    jobs = {
        "looped": lambda: timed([*common_args, f"--num_models={k}", "--members=loop"]),
        "vmapped": lambda: timed([*common_args, f"--num_models={k}", "--members=vmap"]),
        "separate": lambda: sum(timed([*common_args, f"--seed={s}"]) for s in range(k)),
    }
    seconds = common.alternate(jobs, rounds, lambda s: f"{s:.1f} s")
    base = statistics.median(seconds["separate"])
    return {"model": model, "k": k, "train_args": train_args, "seconds": seconds,
            "speed_vs_separate": {n: base / statistics.median(t) for n, t in seconds.items()},
            "machine": common.machine()}


def main(argv):
    cli.start(argv)
    result = compare(FLAGS.model, FLAGS.k, FLAGS.rounds, FLAGS.train_args)
    for name, t in result["seconds"].items():
        s = common.spread(t)
        print(f"{FLAGS.k} x {FLAGS.model}, {name}: median {s['median']:.1f} s (min {s['min']:.1f}, "
              f"max {s['max']:.1f}), {result['speed_vs_separate'][name]:.2f}x the speed of "
              "separate runs")
    common.write_json(FLAGS.json, result)


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
