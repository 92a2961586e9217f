"""The race's outputs: race.json (everything), race.md (the table), the performance profile and
the learning-rate sensitivity plots, and optionally a results table for the docs.

The profile (`protocol.performance_ratios`) compares each optimizer's score, the median over
studies of the fastest trial's seconds to the target, with the best score on each workload; the
sensitivity plot shows each trial's best validation accuracy against its learning rate, the
target drawn across it, as DeepOBS does.
"""

import datetime
import json
import math
import pathlib
import platform
import sys

import numpy as np
from matplotlib.figure import Figure

from jaxdigits import benchmark, plots, protocol, race_runs, workloads
from jaxdigits.errors import UserError
from jaxdigits.metrics import write_atomic, write_json

TAUS = np.geomspace(1.0, 8.0, 200)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def scores(results: list[dict]) -> dict[str, dict[str, float]]:
    """{optimizer: {workload: score}} from the races of several workloads."""
    out = {}
    for r in results:
        for o, res in r["optimizers"].items():
            out.setdefault(o, {})[r["workload"]["name"]] = res["tuning"]["score"]
    return out


def _ci(stat: dict, scale: float = 1.0, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "-"
    mean = stat["mean"] * scale
    return f"{mean:.{digits}f}" + ("" if stat["ci"] is None else f" ± {stat['ci'] * scale:.{digits}f}")


def _setting(setting: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(setting.items()))


COLUMNS = ["workload (target)", "optimizer", "score: median over studies of the fastest trial, s",
           "seeds that hit", "steps to target (mean ± 95 % CI)", "seconds to target",
           "final validation accuracy, %", "test accuracy, %", "step time, ms", "chosen setting"]


def rows(results: list[dict]) -> list[list]:
    out = []
    for r in results:
        w = r["workload"]
        for o, res in r["optimizers"].items():
            s = res["seeds"]
            score = res["tuning"]["score"]
            p = r.get("protocol", {})
            out.append([f"{w['name']} ({w['target']}; {p.get('studies')}x{p.get('trials')} trials, "
                        f"{p.get('seeds')} seeds)", workloads.label(o),
                        "miss" if math.isinf(score) else f"{score:.2f}",
                        f"{round(100 * s['hit_share'])} % of {len(s['members'])}",
                        _ci(s["steps_to_target"], digits=0), _ci(s["seconds_to_target"]),
                        _ci(s["final_val_accuracy"], 100), _ci(s["test_accuracy"], 100),
                        f"{1000 * res['step_seconds']:.2f}", _setting(res["chosen"])])
    return out


def table_markdown(results: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows(results)]
    return "\n".join(lines) + "\n"


def profile_figure(results: list[dict]) -> Figure:
    ratios = protocol.performance_ratios(scores(results))
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for o, per in sorted(ratios.items()):
        ax.step(TAUS, protocol.profile(per, TAUS), where="post", label=workloads.label(o),
                alpha=0.8)
    ax.set_xscale("log")
    ax.set_xticks([1, 1.5, 2, 3, 4, 6, 8], ["1", "1.5", "2", "3", "4", "6", "8"])
    ax.set_xticks([], minor=True)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau: score within this factor of the best on the workload")
    ax.set_ylabel("share of workloads")
    ax.set_title(f"Performance profile over {len(results)} workload(s)")
    ax.legend(fontsize=8)
    return fig


def sensitivity_figure(result: dict) -> Figure:
    w = result["workload"]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    lowest = 100 * w["target"] - 15
    for o, res in sorted(result["optimizers"].items()):
        trials = res["tuning"]["trials"]
        accuracy = [100 * t["best_val_accuracy"] for t in trials]
        lowest = min([lowest, *accuracy])
        ax.plot([t["setting"]["learning_rate"] for t in trials], accuracy, "o",
                label=workloads.label(o))
    ax.axhline(100 * w["target"], color="grey", linestyle="--", label="target")
    ax.set_xscale("log")
    ax.set_ylim(max(0.0, lowest - 2), 100.5)
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("best validation accuracy in the budget, %")
    ax.set_title(f"{w['name']}: every tuning trial")
    ax.legend(fontsize=8)
    return fig


def finite(value):
    """`value` with every infinite float replaced by None (a miss), so the JSON is standard."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write(out, results: list[dict], settings, command, *, table_json=None, figures=None,
          note: str = "") -> dict:
    """race.json, race.md, profile.png, lr_WORKLOAD.png in `out`; with `table_json`, the results
    table for the docs there (`results/render.py`), and with `figures`, the PNGs as
    FIGURES_profile.png and FIGURES_lr_WORKLOAD.png too."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "date": datetime.date.today().isoformat(),
              "hardware": {"cpu": cpu_model(), **benchmark.device_info()},
              "versions": benchmark.versions(), "protocol": settings, "workloads": results}
    write_json(out / "race.json", finite(record))
    write_atomic(out / "race.md", table_markdown(results))
    pictures = {"profile": profile_figure(results),
                **{f"lr_{r['workload']['name']}": sensitivity_figure(r) for r in results}}
    for name, fig in pictures.items():
        plots.save(fig, out / f"{name}.png")
        if figures:
            plots.save(fig, f"{figures}_{name}.png")
    if table_json:
        hw = record["hardware"]
        write_json(table_json, {
            "table": pathlib.Path(table_json).stem, "page": "docs/race.md", "columns": COLUMNS,
            "rows": rows(results), "command": command, "date": record["date"],
            "machine": f"{hw['cpu']}, {hw['cpu_count']} cores", "jax": record["versions"]["jax"],
            "protocol": settings, "scores": finite(scores(results)), "note": note})
    return record


def load(path) -> dict:
    """A race.json, its misses (None) read back as infinite scores."""
    record = json.loads(pathlib.Path(path).read_text())
    for r in record["workloads"]:
        r.setdefault("protocol", record["protocol"])
        for res in r["optimizers"].values():
            tuning = res["tuning"]
            tuning["score"] = math.inf if tuning["score"] is None else tuning["score"]
            tuning["study_scores"] = [math.inf if s is None else s for s in tuning["study_scores"]]
    return record


def merge(results: list[dict]) -> list[dict]:
    """Races of one workload run in separate processes (each with some of the optimizers, one
    protocol) joined into one result per workload."""
    by_name = {}
    for r in results:
        name = r["workload"]["name"]
        if name not in by_name:
            by_name[name] = r
            continue
        joined = by_name[name]
        twice = sorted(joined["optimizers"].keys() & r["optimizers"].keys())
        if joined["protocol"] != r["protocol"] or joined["workload"] != r["workload"] or twice:
            raise UserError(f"the races of {name} do not join: " + (
                f"{', '.join(twice)} raced twice." if twice else "their protocols differ."))
        joined["optimizers"].update(r["optimizers"])
    return list(by_name.values())


def retime(result: dict, data_dir=None, timing: dict | None = None) -> None:
    """Measures every optimizer's step time on the workload again, in turn in this process
    (`race_runs.step_seconds`), and recomputes seconds, hits and scores from the recorded steps:
    races of one workload run in separate processes become timed alike. Within one optimizer the
    seconds are its steps times a constant, so its fastest trial, the chosen setting, stays.
    `timing` ({optimizer: step_seconds' entry}) gives step times measured so elsewhere."""
    w = workloads.get_workload(result["workload"]["name"])
    optimizers = result["optimizers"]
    if timing is None:  # Timed on each one's first trial, as `race.race_workload` times them.
        timing = race_runs.step_seconds(race_runs.prepare(w, data_dir), {
            o: (workloads.contender_maker(o), protocol.trials(res["space"], 1, 0)[0])
            for o, res in optimizers.items()})
    for o, res in optimizers.items():
        seconds = timing[o]["step_seconds"]
        res.update(timing[o])
        res["tuning"].update(protocol.time_trials(res["tuning"]["trials"], w.target, seconds,
                                                  w.max_seconds))
        res["seeds"].update(protocol.summarise_seeds(res["seeds"]["members"], seconds,
                                                     w.max_seconds))
    result["retimed"] = True


def main(argv):
    """`python -m jaxdigits.race_report --races=A/race.json,B/race.json --out=DIR`: the races of
    several workloads in one table, profile and set of plots. Each workload keeps its protocol
    (every optimizer on it was tuned alike), so the profile's ratios stay fair."""
    from jaxdigits import cli

    FLAGS = cli.start(argv)
    records = [load(p) for p in FLAGS.races]
    results = merge([w for r in records for w in r["workloads"]])
    for result in results:
        if result["workload"]["name"] in FLAGS.retime:
            retime(result)
    commands = [r["command"] for r in records] + [
        "python -m jaxdigits.race_report " + " ".join(sys.argv[1:])]
    write(FLAGS.out, results, [r["protocol"] for r in records], commands,
          table_json=FLAGS.results, figures=FLAGS.figures, note=FLAGS.note)
    print(table_markdown(results), end="")
    return 0


def define_flags():
    from absl import flags

    flags.DEFINE_list("races", None, "race.json files to combine.", required=True)
    flags.DEFINE_string("out", "runs/race_all", "Folder for race.json, race.md and the plots.")
    flags.DEFINE_string("results", None, "Also write the table as a results/*.json for the docs.")
    flags.DEFINE_string("figures", None, "Also save the plots as FIGURES_profile.png, ...")
    flags.DEFINE_string("note", "", "A note printed under the docs table.")
    flags.DEFINE_list("retime", [], "Workloads whose optimizers' step times are measured again, "
                      "in turn, and their seconds recomputed (for races of one workload run apart).")


if __name__ == "__main__":
    from jaxdigits import cli

    cli.run(main, define_flags)
