"""Runs every lesson, times each, and writes the lessons page's tables and figures.

    python -m experiments.run_all                      # all lessons, in the material's order
    python -m experiments.run_all --only=exp10_by_hand # one; the tables keep the others' runs
    python -m experiments.run_all --only=none          # only rebuild the tables from the runs
    python results/render.py                           # then renders docs/lessons.md

Each lesson runs as its own command, `python -m experiments.NAME --workdir=RUNS/NAME`, exactly as
a user would run it; its CPU time (user + system of that process) and wall time are measured here
and kept in RUNS/NAME.time.json. The tables are then built from every lesson's run folder: its
row of results/lessons.json (the table "lessons" of docs/lessons.md) comes from the lesson's own
results.json through the lesson's `headline`, so the page cannot drift from what the scripts
compute; its PNGs are copied to docs/lessons/NAME-FILE.png and listed in
results/lessons_figures.json (the table "lessons_figures").
"""

import datetime
import importlib
import json
import os
import pathlib
import platform
import resource
import shutil
import subprocess
import sys
import time

from absl import flags

from experiments import _common
from jaxdigits import cli
from jaxdigits.errors import UserError
from jaxdigits.metrics import write_json

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "lessons"
# The lessons in the order of the material: perceptron, non-linearity, optimisation, training by
# hand, convolution, the lessons' MNIST runs, unsupervised and other supervised learners.
LESSONS = ("exp1_perceptron", "exp12_nonlinearity", "exp2_logistic_newton", "exp3_moons_mlp",
           "exp4_least_squares", "exp5_newton_1d", "exp13_line_search", "exp14_averages",
           "exp6_gd_variants", "exp11_backprop", "exp10_by_hand", "exp7_conv_slashes",
           "exp15_conv_worked", "exp8_model_zoo", "exp9_lr_sensitivity", "exp16_text_mnist",
           "exp17_unsupervised", "exp18_more_learners")
COLUMNS = ["#", "section of the material", "command", "figures",
           "what it shows, measured (seed 0), beside the text's number where it gives one",
           {"name": "CPU s", "format": "{:.1f}"}, {"name": "wall s", "format": "{:.0f}"}]


def run_lesson(name: str, runs_dir: pathlib.Path) -> dict:
    """Runs one lesson in its own process; records and returns its CPU and wall seconds."""
    command = [sys.executable, "-m", f"experiments.{name}", f"--workdir={runs_dir / name}"]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (runs_dir / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise UserError(f"{name} failed (exit {done.returncode}); see {runs_dir / name}.log.")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timing = {"cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
              "load_average": os.getloadavg()}
    write_json(runs_dir / f"{name}.time.json", timing)
    print(f"{name}: {cpu:.1f} s CPU, {wall:.0f} s wall")
    return timing


def row(name: str, runs_dir: pathlib.Path) -> tuple[list, list, dict | None]:
    """(the table row, the figures, the text's numbers beside the measured ones) of a lesson
    that has run in `runs_dir`."""
    module = importlib.import_module(f"experiments.{name}")
    results = json.loads((runs_dir / name / "results.json").read_text())
    timing = json.loads((runs_dir / f"{name}.time.json").read_text())
    FIGURES.mkdir(parents=True, exist_ok=True)
    figures = []
    for png in sorted((runs_dir / name).glob("*.png")):
        target = FIGURES / f"{name}-{png.name}"
        shutil.copyfile(png, target)
        figures.append(target.relative_to(ROOT / "docs").as_posix())
    links = ", ".join(f"[{pathlib.Path(f).stem.split('-', 1)[1]}]({f})" for f in figures)
    return [0, module.SECTION, f"`python -m experiments.{name}`", links, module.headline(results),
            timing["cpu_seconds"], timing["wall_seconds"]], figures, (
        module.text_numbers(results) if hasattr(module, "text_numbers") else None)


def machine() -> str:
    model = "unknown CPU"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    head = f"{os.cpu_count()}-core {model} ({platform.machine()}), CPU only; "
    if load <= os.cpu_count():  # The lessons themselves keep the cores busy, no more.
        return head + f"quiet (load average {load:.1f} at the end: the lessons themselves)"
    return head + (f"shared with other jobs (load average {load:.1f} at the end), so wall times "
                   "are inflated, CPU times less so")


def write_tables(runs_dir: pathlib.Path) -> dict:
    """results/lessons.json and lessons_figures.json from every lesson that has run."""
    import jax

    done = [n for n in LESSONS if (runs_dir / f"{n}.time.json").exists()]
    rows, figures, numbers = {}, {}, {}
    for name in done:
        rows[name], figures[name], numbers[name] = row(name, runs_dir)
    ordered = [rows[n] for n in done]
    for i, r in enumerate(ordered, 1):
        r[0] = i
    total = (sum(r[5] for r in ordered), sum(r[6] for r in ordered))
    stamp = {"machine": machine(), "date": datetime.date.today().isoformat(),
             "jax": jax.__version__}
    missing = [n for n in LESSONS if n not in done]
    write_json(ROOT / "results" / "lessons.json", {
        "table": "lessons", "page": "docs/lessons.md", "columns": COLUMNS, "rows": ordered,
        "command": "python -m experiments.run_all", **stamp,
        "note": f"CPU s is user + system time of the lesson's process; all {len(ordered)} "
                f"lessons: {total[0]:.0f} s CPU, {total[1]:.0f} s wall."
                + (f" Not run: {', '.join(missing)}." if missing else ""),
        "text_numbers": {n: v for n, v in numbers.items() if v}})
    write_json(ROOT / "results" / "lessons_figures.json", {
        "table": "lessons_figures", "page": "docs/lessons.md", "columns": ["lesson", "figure"],
        "rows": [[f"`{n}`", f"![{n} {pathlib.Path(f).stem}]({f})"]
                 for n in done for f in figures[n]],
        "command": "python -m experiments.run_all", **stamp,
        "note": "Every figure the lessons write, copied from their run folders."})
    return {"rows": rows, "cpu_seconds": total[0], "wall_seconds": total[1]}


def run(runs_dir, only=()) -> dict:
    unknown = sorted(set(only) - set(LESSONS) - {"none"})
    if unknown:
        raise UserError(f"--only names unknown lessons {unknown}; choose from "
                        f"{', '.join(LESSONS)}.")
    runs_dir = _common.prepare_workdir(runs_dir)
    for name in [n for n in LESSONS if not only or n in only]:
        run_lesson(name, runs_dir)
    return write_tables(runs_dir)


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, tuple(f.only))
    print(f"{len(r['rows'])} lessons: {r['cpu_seconds']:.0f} s CPU, {r['wall_seconds']:.0f} s "
          "wall. Wrote results/lessons.json and lessons_figures.json; now run "
          "python results/render.py.")


def define():
    flags.DEFINE_string("workdir", "runs/lessons", "Each lesson's workdir goes under this folder.")
    flags.DEFINE_list("only", [], "Run only these lessons (none: run nothing); the tables are "
                      "built from every lesson that has a run in --workdir.")


if __name__ == "__main__":
    cli.run(main, define)
