"""Train-step variants side by side in one process, alternating: step drivers, layer
formulations, convolution kernels, any Config override; `benchmark.benchmark` per variant.

    python -m benchmarks.compare_steps --variants="cpu_conv=eigen;cpu_conv=onednn" --rounds=5
    python -m benchmarks.compare_steps --base=optimizer=adam --rounds=3 \
        --variants="driver=step;driver=unroll,steps_per_call=8;driver=scan,steps_per_call=8"

Result, 2-core Intel Xeon (AVX-512), quiet, 2026-12-02 (then `experiments/compare_steps.py`,
4 calls per timing): the seed CNN's step takes 74.5 ms (60.7-81.8) with XLA's convolution
gradients, 55.3 ms (51.7-62.5) with oneDNN's, 0.74x; cnn_tiny 15.4 against 11.8 ms, 0.77x.
The drivers (2-core AMD EPYC, 2026-11-22, then `experiments/compare_drivers.py`, Adam, no
augmentation, 32 steps per round, 3 rounds): seed CNN 175 ms per step one call per step, 129 ms
unrolled 8 per call (1.35x), 1806 ms in a `lax.scan` over 8 (10x slower); the MLP 1.81 /
1.70 / 1.64 ms, within noise. BUILD_NOTES.md, issues 2 and 6.

Each variant is "name=value,..." overrides of Config on top of `--base`, itself on top of the
peers' recipe (momentum SGD 0.1, batch 128, no augmentation, benchmarks/common.py) and
`--model`. Every round times each variant once, in turn, over `--steps` steps (compiled calls
of the variant's steps per call), so a busy machine slows them all alike. Prints and writes the
median (min, max) milliseconds per step, compile seconds, GFLOP per step and the speed-up over
the first variant.
"""

import dataclasses
import statistics

from absl import app, flags

from benchmarks import common
from jaxdigits import backend, benchmark, cli, errors

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", "cnn", "The model, unless a variant names another.")
    flags.DEFINE_string("variants", "driver=step;driver=unroll,steps_per_call=8",
                        "';'-separated variants, each 'name=value,...' Config overrides.")
    flags.DEFINE_string("base", "", "Config overrides for every variant, on the peers' recipe.")
    flags.DEFINE_integer("rounds", 3, "Rounds; each times every variant once.")
    flags.DEFINE_integer("steps", 32, "Timed steps per variant and round.")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")


def compare(model: str, variants: list[str], *, base: str = "", rounds: int = 3,
            steps: int = 32) -> dict:
    """Times each variant's step `rounds` times, alternating; returns the table as a dict."""
    start = common.config_with(base, common.peers_config(model=model))
    configs = {v: common.config_with(v, start) for v in variants}

    def timer(config):
        k = backend.resolve_driver(config.driver, config.steps_per_call)[1]
        return lambda: benchmark.benchmark(config, calls=max(steps // k, 1), repeats=1)

    results = common.alternate({v: timer(c) for v, c in configs.items()}, rounds,
                               lambda r: f"{1e3 * r['step_seconds']:8.2f} ms per step")
    first = statistics.median(r["step_seconds"] for r in results[variants[0]])
    rows = []
    for variant, runs in results.items():
        rows.append({"variant": variant,
                     "ms_per_step": common.spread([1e3 * r["step_seconds"] for r in runs]),
                     "compile_seconds": statistics.median(r["compile_seconds"] for r in runs),
                     "gflops_per_step": runs[0]["gflops_per_step"],
                     "driver": runs[0]["driver"], "steps_per_call": runs[0]["steps_per_call"],
                     "speedup": first / statistics.median(r["step_seconds"] for r in runs)})
    return {"model": model, "base": base, "rounds": rounds, "steps": steps, "rows": rows,
            "config": {v: dataclasses.asdict(c) for v, c in configs.items()},
            **benchmark.device_info(),
            "machine": common.machine()}


def table(result: dict) -> str:
    lines = [f"{'variant':40s} {'median ms':>10s} {'min':>8s} {'max':>8s} {'compile s':>10s} "
             f"{'GFLOP':>7s} {'speed-up':>9s}"]
    for row in result["rows"]:
        ms = row["ms_per_step"]
        lines.append(f"{row['variant']:40s} {ms['median']:10.2f} {ms['min']:8.2f} {ms['max']:8.2f} "
                     f"{row['compile_seconds']:10.2f} {row['gflops_per_step']:7.3f} "
                     f"{row['speedup']:8.2f}x")
    return "\n".join(lines)


def main(argv):
    cli.start(argv)
    variants = [v.strip() for v in FLAGS.variants.split(";")]
    result = compare(FLAGS.model, variants, base=FLAGS.base, rounds=FLAGS.rounds,
                     steps=FLAGS.steps)
    print(f"\n{FLAGS.model}, {FLAGS.rounds} rounds, {FLAGS.steps} steps each "
          f"(load {result['machine']['load_average'][0]:.1f}):")
    print(table(result))
    common.write_json(FLAGS.json, result)


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
