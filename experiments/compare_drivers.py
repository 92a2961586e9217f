"""Which way of driving the train step is fastest here: per-step calls, unrolled chunks, or scan.

    python experiments/compare_drivers.py --model=cnn --rounds=3
    python experiments/compare_drivers.py --model=mlp --variants=step,unroll:4,unroll:8,scan:64

Each round measures every variant once, in turn, so a noisy machine hits them all alike; the
table gives the median (and min, max) steady-state step time over the rounds, with compile time.
Results measured on the 2-core CPU are in BUILD_NOTES.md; `train.default_driver` uses them.
"""

import dataclasses
import json
import statistics

from absl import app, flags

from jaxdigits import benchmark
from jaxdigits.config import Config
from jaxdigits.metrics import write_atomic

_MODEL = flags.DEFINE_string("model", "cnn", "linear, mlp or cnn.")
_VARIANTS = flags.DEFINE_list("variants", ["step", "unroll:4", "unroll:8", "unroll:16", "scan:8"],
                              "driver:steps_per_call to compare.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; each measures every variant once.")
_STEPS = flags.DEFINE_integer("steps", 32, "Timed steps per variant per round.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")


def main(argv):
    del argv  # Unused.
    times = {v: [] for v in _VARIANTS.value}
    compiles = {v: [] for v in _VARIANTS.value}
    for _ in range(_ROUNDS.value):
        for variant in _VARIANTS.value:
            driver, _, k = variant.partition(":")
            k = int(k or 1)
            config = dataclasses.replace(Config(), model=_MODEL.value, driver=driver,
                                         steps_per_call=k, batch_size=_BATCH.value)
            r = benchmark.benchmark(config, calls=max(_STEPS.value // k, 1), repeats=1)
            times[variant].append(r["step_seconds"])
            compiles[variant].append(r["compile_seconds"])
            print(f"{variant:10s} {1e3 * r['step_seconds']:8.2f} ms/step", flush=True)
    base = statistics.median(times[_VARIANTS.value[0]])
    rows = []
    print(f"\n{_MODEL.value}, batch {_BATCH.value}, {_ROUNDS.value} rounds:")
    print(f"{'variant':10s} {'median ms':>10s} {'min':>8s} {'max':>8s} {'compile s':>10s} "
          f"{'vs ' + _VARIANTS.value[0]:>10s}")
    for variant, ts in times.items():
        median = statistics.median(ts)
        rows.append({"variant": variant, "median_ms": 1e3 * median, "min_ms": 1e3 * min(ts),
                     "max_ms": 1e3 * max(ts), "compile_s": statistics.median(compiles[variant]),
                     "speedup": base / median})
        print(f"{variant:10s} {1e3 * median:10.2f} {1e3 * min(ts):8.2f} {1e3 * max(ts):8.2f} "
              f"{rows[-1]['compile_s']:10.2f} {base / median:9.2f}x")
    if _OUT.value:
        write_atomic(_OUT.value, json.dumps({"model": _MODEL.value, "rows": rows,
                                             **benchmark.device_info()}, indent=2))


if __name__ == "__main__":
    app.run(main)
