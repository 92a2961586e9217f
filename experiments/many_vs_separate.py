"""K models at once (members looped, members vmapped) against K separate runs, whole commands.

    python experiments/many_vs_separate.py --model=cnn --k=4 --rounds=2 \
        --train_args=--epochs=1,--max_train_examples=8192,--validation_size=1000

Each job is `python -m jaxdigits.train` in its own process (start-up, compilation, data,
training, validation, test and checkpoints all counted); the three jobs alternate within each
round. Prints seconds per job and round, then medians and ratios. Results: BUILD_NOTES.md (issue 7).
"""

import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", "cnn", "Model.")
_K = flags.DEFINE_integer("k", 4, "Models.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds.")
_ARGS = flags.DEFINE_list("train_args", [], "Extra jaxdigits.train flags for every job.")


def timed(args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jaxdigits.train", f"--model={_MODEL.value}",
                        "--quiet", f"--workdir={tmp}/run", *_ARGS.value, *args],
                       check=True, capture_output=True)
        return time.perf_counter() - start


def separate() -> float:
    return sum(timed([f"--seed={k}"]) for k in range(_K.value))


def main(argv):
    del argv  # Unused.
    k = _K.value
    jobs = {f"{k} at once, looped": lambda: timed([f"--num_models={k}", "--members=loop"]),
            f"{k} at once, vmapped": lambda: timed([f"--num_models={k}", "--members=vmap"]),
            f"{k} separate runs": separate}
    times = {name: [] for name in jobs}
    for r in range(_ROUNDS.value):
        for name, job in jobs.items():
            times[name].append(job())
            print(f"round {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    base = statistics.median(times[f"{k} separate runs"])
    for name, t in times.items():
        print(f"{name}: median {statistics.median(t):.1f} s (min {min(t):.1f}, max {max(t):.1f}), "
              f"{base / statistics.median(t):.2f}x the speed of separate runs")


if __name__ == "__main__":
    app.run(main)
