"""A fair race for optimizers: time to a validation target under a declared tuning budget.

    python -m jaxdigits.race --optimizers=examples/lion.py:lion --out=runs/race  # vs the baselines
    python -m jaxdigits.race --workloads=mnist_mlp,mnist_cnn,fashion_cnn --out=runs/baselines

On each workload (`workloads`) each optimizer is tuned the same way (`protocol`): `--studies`
studies of `--trials` quasirandom trials from its search space (`--space=FILE.json`, else the
shipped one); a study scores its fastest trial's time to the target, a miss being infinite, and
the optimizer scores the median over studies. Its best trial's setting is then re-run over
`--seeds` fresh seeds for the full budget: steps and seconds to the target (mean and 95 %
confidence interval over the seeds that hit), the share that hit, final validation and test
accuracy. Seconds are steps times the optimizer's own step time, one model alone, measured in
turn with the others on this machine (`race_runs.step_seconds`); evaluation is outside the clock
and compile time is reported apart. Writes race.json (hardware, versions, every trial), race.md
(the table), profile.png and lr_WORKLOAD.png into `--out` (`race_report`). The default race of
one plug-in against the five baselines on mnist_mlp took 5 minutes on a quiet 2-core Intel Xeon
(docs/race.md).
"""

import math

from jaxdigits import protocol, race_runs, workloads
from jaxdigits.errors import UserError


def run_tuning(prep, make, space: dict, studies: int, trials: int, seconds: float) -> dict:
    """Every trial of every study as one program (where shapes allow), and their scores."""
    w = prep.workload
    settings = [s for j in range(studies) for s in protocol.trials(space, trials, j)]
    result = race_runs.train_members(prep, make, settings, list(range(len(settings))))
    rows = [{"study": i // trials, "trial": i % trials, "seed": m["seed"], "setting": m["setting"],
             "best_val_accuracy": max(a for _, a in m["curve"]), "curve": m["curve"]}
            for i, m in enumerate(result["members"])]
    scores = protocol.time_trials(rows, w.target, seconds, w.max_seconds)
    return {"trials": rows, **scores, "programs": result["programs"], "traced": result["traced"]}


def best_setting(trials: list[dict]) -> dict:
    """The fastest trial's setting; with no hit, the one of highest validation accuracy."""
    key = lambda r: (not r["hit"], r["seconds_to_target"] or math.inf, -r["best_val_accuracy"])
    return min(trials, key=key)["setting"]


def run_seeds(prep, make, setting: dict, seeds: int, seconds: float) -> dict:
    """The chosen setting over `seeds` fresh seeds (1000, 1001, ...), full budget, test scored."""
    result = race_runs.train_members(prep, make, [setting] * seeds, [1000 + i for i in range(seeds)],
                                     stop_early=False, score_test=True)
    members = [{k: m[k] for k in ("seed", "hit_step", "final_val_accuracy", "test_accuracy")}
               for m in result["members"]]
    return {**protocol.summarise_seeds(members, seconds, prep.workload.max_seconds),
            "members": members, "programs": result["programs"]}


def race_workload(workload: str, optimizers: list[str], spaces: dict, *, studies: int,
                  trials: int, seeds: int, data_dir=None, log=print) -> dict:
    """Every optimizer on one workload: step times, tuning, seeds."""
    prep = race_runs.prepare(workloads.get_workload(workload), data_dir)
    makes = {o: workloads.contender_maker(o) for o in optimizers}
    chosen_spaces = {o: workloads.space_for(o, spaces) for o in optimizers}
    first = {o: (makes[o], protocol.trials(chosen_spaces[o][0], 1, 0)[0]) for o in optimizers}
    timing = race_runs.step_seconds(prep, first)
    out = {"workload": prep.workload._asdict(), "optimizers": {},
           "protocol": {"studies": studies, "trials": trials, "seeds": seeds}}
    for o in optimizers:
        space, generic = chosen_spaces[o]
        seconds = timing[o]["step_seconds"]
        tuning = run_tuning(prep, makes[o], space, studies, trials, seconds)
        setting = best_setting(tuning["trials"])
        result = run_seeds(prep, makes[o], setting, seeds, seconds)
        out["optimizers"][o] = {"space": space, "generic_space": generic, **timing[o],
                                "tuning": tuning, "chosen": setting, "seeds": result}
        log(f"{workload} {o}: score {tuning['score']:.3g} s (median of studies), chosen "
            f"{setting}; {100 * result['hit_share']:.0f} % of {seeds} seeds hit "
            f"{prep.workload.target}.")
    return out


def main(argv):
    import sys

    from jaxdigits import cli, race_report

    FLAGS = cli.start(argv)
    contenders = list(dict.fromkeys([*FLAGS.baselines, *FLAGS.optimizers]))
    if not contenders:
        raise UserError("name at least one optimizer: --optimizers=file.py:factory or --baselines.")
    for name in ("studies", "trials", "seeds"):
        if getattr(FLAGS, name) < 1:
            raise UserError(f"--{name} must be at least 1.")
    names = [workloads.get_workload(w).name for w in FLAGS.workloads]
    spaces = workloads.read_spaces(FLAGS.space) if FLAGS.space else {}
    for o in contenders:
        workloads.contender_maker(o)  # Every mistake before any work.
        workloads.space_for(o, spaces)
    results = [race_workload(w, contenders, spaces, studies=FLAGS.studies, trials=FLAGS.trials,
                             seeds=FLAGS.seeds, data_dir=FLAGS.data_dir) for w in names]
    command = "python -m jaxdigits.race " + " ".join(sys.argv[1:])
    race_report.write(FLAGS.out, results, {"studies": FLAGS.studies, "trials": FLAGS.trials,
                                           "seeds": FLAGS.seeds}, command,
                      table_json=FLAGS.results, figures=FLAGS.figures)
    print(race_report.table_markdown(results), end="")
    print(f"Written: {FLAGS.out}/race.json, race.md, profile.png, lr_*.png.")
    return 0


def define_flags():
    from absl import flags

    flags.DEFINE_list("optimizers", [], "Optimizers to race: plug-ins (file.py:factory, "
                      "module:factory) or registered names.")
    flags.DEFINE_list("baselines", list(workloads.BASELINES), "Built-in optimizers to race "
                      "against (empty: none).")
    flags.DEFINE_list("workloads", ["mnist_mlp"], f"Workloads: {', '.join(workloads.WORKLOADS)}.")
    flags.DEFINE_integer("studies", 3, "Tuning studies per optimizer.")
    flags.DEFINE_integer("trials", 4, "Quasirandom trials per study.")
    flags.DEFINE_integer("seeds", 10, "Seeds the chosen setting is re-run over.")
    flags.DEFINE_string("space", None, "JSON file {optimizer: {name: {min, max, scale}}}.")
    flags.DEFINE_string("out", "runs/race", "Folder for race.json, race.md and the plots.")
    flags.DEFINE_string("results", None, "Also write the table as a results/*.json for the docs.")
    flags.DEFINE_string("figures", None, "Also save the plots as FIGURES_profile.png, ...")
    flags.DEFINE_string("data_dir", None, "Where the datasets are (default: the usual places).")


if __name__ == "__main__":
    from jaxdigits import cli

    cli.run(main, define_flags)
