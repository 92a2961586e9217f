"""The speedrun's whole command, this checkout against another (today's main), alternating, cold;
and this checkout's start-up to its first train step with the compilation cache cold and warm.

    git archive HEAD | tar -x -C /tmp/jd_before      # the "before" copy, once
    python -m benchmarks.speedrun_compare --before=/tmp/jd_before --seeds=0,1,2,3,4 \
        --json=/tmp/speedrun_compare.json

Each pass runs `python -m jaxdigits.train --recipe=speedrun --seed=S --quiet` once per
checkout, in turn (before, then after), each in a fresh process with a fresh, empty compilation
cache (cold: nothing compiled is reused; the oneDNN library built once at install time stays)
and a fresh workdir; the wall time is the whole command's (its CPU time, user and system, is
recorded too: on a busy machine it moves less than the wall time). Then `--startup` passes time this
checkout's start-up to the end of its first train step (`benchmarks.first_step`), once with an
empty cache and once more with the cache that run left (warm). Prints and writes every time,
every test accuracy, and the ratio after / before per pass and of the means. The machine's load
is recorded: on a shared machine only the ratio means much.
"""

import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

import jax
from absl import app, flags

from benchmarks import common
from jaxdigits import cli, errors

FLAGS = flags.FLAGS
HERE = pathlib.Path(__file__).resolve().parents[1]


def define_flags() -> None:
    flags.DEFINE_string("before", "/tmp/jd_before", "The checkout to compare against.")
    flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds; one pass each.")
    flags.DEFINE_integer("startup", 3, "Start-up passes (cold and warm each).")
    flags.DEFINE_string("json", None, "Write the results here as JSON.")
    flags.DEFINE_string("table", None, "Also write them as a results/render.py table here "
                        "(results/speedrun_compare.json).")


def run_speedrun(checkout: pathlib.Path, seed: int, tmp: pathlib.Path) -> dict:
    """One cold run of the speedrun command in `checkout`: wall seconds and test accuracy."""
    workdir = tmp / f"{checkout.name}-{seed}-{time.monotonic_ns()}"
    env = {"JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(workdir) + "-xla",
           "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, "-m", "jaxdigits.train", "--recipe=speedrun", f"--seed={seed}",
           "--quiet", f"--workdir={workdir}"]
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    common.run_command(cmd, cwd=checkout, env={**os.environ, **env})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads((workdir / "results.json").read_text())
    return {"seconds": wall, "cpu_seconds": after.ru_utime + after.ru_stime - cpu.ru_utime
            - cpu.ru_stime, "test_accuracy": result["test_accuracy"]}


def first_step(cache: pathlib.Path, tmp: pathlib.Path) -> float:
    """Seconds from this checkout's process start to the end of its first train step."""
    workdir = tmp / f"first-{time.monotonic_ns()}"
    env = {"JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache)}
    done = common.run_command([sys.executable, "-m", "benchmarks.first_step", "--recipe=speedrun",
                               "--quiet", f"--workdir={workdir}"], cwd=HERE,
                              env={**os.environ, **env})
    return float(done.stdout.split("first step done after ")[1].split(" s")[0])


def main(argv):
    cli.start(argv)
    before = pathlib.Path(FLAGS.before)
    if not (before / "jaxdigits" / "train.py").exists():
        raise errors.UserError(f"--before={before} holds no jaxdigits checkout.")
    out = {"machine": common.machine(), "passes": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for seed in map(int, FLAGS.seeds):
            old, new = run_speedrun(before, seed, tmp), run_speedrun(HERE, seed, tmp)
            out["passes"].append({"seed": seed, "before": old, "after": new,
                                  "ratio": new["seconds"] / old["seconds"]})
            print(f"seed {seed}: before {old['seconds']:.1f} s "
                  f"({100 * old['test_accuracy']:.2f} %), "
                  f"after {new['seconds']:.1f} s ({100 * new['test_accuracy']:.2f} %), ratio "
                  f"{out['passes'][-1]['ratio']:.2f}", flush=True)
        out["startup"] = []
        for i in range(FLAGS.startup):
            cache = tmp / f"startup-cache-{i}"
            cold, warm = first_step(cache, tmp), first_step(cache, tmp)
            out["startup"].append({"cold": cold, "warm": warm})
            print(f"start-up to the first step: cold {cold:.2f} s, warm {warm:.2f} s", flush=True)
    summarise(out)
    out["machine"]["load_average_after"] = list(os.getloadavg())
    common.write_json(FLAGS.json, out)
    common.write_json(FLAGS.table, table(out))


def summarise(out: dict) -> None:
    """Means, the ratio of the means, and every seed's accuracy check, into `out` and printed."""
    mean = {k: statistics.fmean(p[k]["seconds"] for p in out["passes"])
            for k in ("before", "after")}
    cpu = {k: statistics.fmean(p[k].get("cpu_seconds", 0) for p in out["passes"])
           for k in ("before", "after")}
    out["mean_seconds"], out["mean_cpu_seconds"] = mean, cpu
    out["ratio_of_means"] = mean["after"] / mean["before"]
    out["cpu_ratio_of_means"] = cpu["after"] / cpu["before"] if cpu["before"] else None
    out["every_seed_at_99"] = all(p["after"]["test_accuracy"] >= 0.99 for p in out["passes"])
    print(f"mean: before {mean['before']:.1f} s, after {mean['after']:.1f} s, ratio "
          f"{out['ratio_of_means']:.2f} (CPU time {cpu['before']:.1f} against {cpu['after']:.1f} "
          f"s); every seed >= 99.0 %: {out['every_seed_at_99']}")
    if out.get("startup"):
        out["startup_median"] = {k: statistics.median(s[k] for s in out["startup"])
                                 for k in ("cold", "warm")}


def table(out: dict) -> dict:
    """The passes as a results/render.py table for docs/performance.md."""
    rows = [[str(p["seed"]), p["before"]["seconds"], p["after"]["seconds"], p["ratio"],
             100 * p["before"]["test_accuracy"], 100 * p["after"]["test_accuracy"]]
            for p in out["passes"]]
    rows.append(["mean", out["mean_seconds"]["before"], out["mean_seconds"]["after"],
                 out["ratio_of_means"], None, None])
    m, load = out["machine"], out["machine"]["load_average"]
    startup = out.get("startup_median", {})
    return {"table": "speedrun_compare", "page": "docs/performance.md",
            "columns": ["seed", {"name": "before: whole command, s", "format": "{:.1f}"},
                        {"name": "after, s", "format": "{:.1f}"},
                        {"name": "after / before", "format": "{:.2f}"},
                        {"name": "test accuracy before, %", "format": "{:.2f}"},
                        {"name": "after, %", "format": "{:.2f}"}],
            "rows": rows, "command": "python -m benchmarks.speedrun_compare "
                                     "--before=OLD_CHECKOUT --seeds=0,1,2,3,4",
            "machine": f"{m['cpu_count']}-core {m['cpu']}, "
                       f"{'quiet' if max(load[0], m['load_average_after'][0]) < 2.5 else 'shared'} (load average "
                       f"{load[0]:.1f} at the start, {m['load_average_after'][0]:.1f} at the end)",
            "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
            "note": ("Each command cold (an empty compilation cache), before and after "
                     "alternating, one pass per seed. CPU time (user and system), mean: "
                     f"{out['mean_cpu_seconds']['before']:.1f} s before, "
                     f"{out['mean_cpu_seconds']['after']:.1f} s after. Start-up to the end of "
                     "the first train "
                     f"step, median of {len(out.get('startup', []))}: cold "
                     f"{startup.get('cold', 0):.1f} s, warm {startup.get('warm', 0):.1f} s.")}


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
