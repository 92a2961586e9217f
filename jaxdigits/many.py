"""Many models in one compiled program: seed ensembles and hyperparameter sweeps.

    python -m jaxdigits.train --model=mlp --num_models=4 --workdir=runs/mlp-x4       # seeds 0..3
    python -m jaxdigits.train --model=mlp --sweep=learning_rate=1e-4,3e-4,1e-3,3e-3 --workdir=runs/lr
    python -m jaxdigits.evaluate --workdir=runs/mlp-x4     # every member and the ensemble

Built from the single run's pieces: each member's step is `step.make_batch_step` (under
`jax.vmap`, or written out K times: `backend.member_loop`), driven by `drivers.make_many_runner`,
scored by `scoring.make_member_scorer`, recorded with `runs`. So member k's numbers equal those
of the separate run of its config to float tolerance (tested). All members share one copy of the
data on the device, one compiled step, and one pass of the driver per step.

Each member's folder is a normal run folder (config.json, metrics.jsonl, results.json,
checkpoints/, best/), so `evaluate`, export and resume treat a member as a single run. A member
whose training loss turns non-finite (a learning rate too high for it, in a sweep) is dropped,
not the whole run: its folder gets `diverged.json`, it saves no more checkpoints (the earlier ones
stay), it is left out of the ensemble and of `evaluate`'s members, and its results say in which
epoch it diverged. If every member diverges the run stops, as a single run does.
"""

import json
import math
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdigits import backend, checkpoint, data, drivers, models, optimizers, runs, scoring
from jaxdigits.config import Config
from jaxdigits.errors import UserError
from jaxdigits.inputs import epoch_order, to_device
from jaxdigits.members import (SWEEPABLE, Members, full_state, init_states, make_members,
                               member_name, member_state, read_diverged)
from jaxdigits.metrics import MetricWriter, Progress, write_atomic, write_json
from jaxdigits.step import run_keys, summarise, zero_metrics


class Books(NamedTuple):
    """Per member: its folder, histories, writer, checkpointer, schedule, best score and the
    epoch it diverged in (None while it trains). The lists are updated in place."""
    dirs: list
    histories: list
    writers: list
    ckpts: list
    schedules: list
    best: list
    diverged: list


def train_many(config: Config, workdir, *, data_dir=None, allow_download=True, quiet=False,
               resume=False, keep_checkpoints=3) -> dict:
    """`train.train_and_evaluate` for K members at once; each member's files in `member_k/`.

    Writes the top-level config.json, results.json (every member and the ensemble on the test
    set) and sweep.md, sweep.csv and sweep.png (final validation and test accuracy per member).
    """
    workdir = pathlib.Path(workdir)
    if jax.process_count() > 1:
        raise UserError("--num_models and --sweep run in one process (on its first device); "
                        "start them without --coordinator_address.")
    exists = runs.check_run(workdir, config, keep_checkpoints)
    ds = data.load_dataset(config.dataset, data_dir, allow_download)
    members = make_members(config, ds)
    dirs = [workdir / member_name(k) for k in range(len(members.configs))]
    if not exists:  # A new run (or one that saved nothing): no member's old verdict stands.
        for d in dirs:
            (d / "diverged.json").unlink(missing_ok=True)
    diverged = [read_diverged(d) for d in dirs]  # Epoch each member diverged in, or None.
    check_alive(diverged)
    if resume and not any(checkpoint.saved_epochs(d / "checkpoints") for d in dirs):
        raise UserError(f"--resume was given but {workdir} holds no checkpoint to resume from.")
    runs.verify_optimizer(members.setup)
    write_configs(workdir, config, exists, members.configs, dirs)

    keys = [run_keys(c.seed) for c in members.configs]
    init_keys, data_keys, step_keys = (list(k) for k in zip(*keys))
    state, start_epoch, histories = restore(init_states(members, init_keys), members, dirs,
                                            diverged)
    if start_epoch:
        runs.log(f"Resuming {workdir} from epoch {start_epoch}." if start_epoch < config.epochs else
                 f"{workdir} is complete ({start_epoch} epochs); scoring the test set again.")
    books = Books(dirs, histories, [MetricWriter(d, h) for d, h in zip(dirs, histories)],
                  [checkpoint.Checkpointer(d, keep_checkpoints) for d in dirs],
                  [jax.jit(optimizers.schedule_for(c, members.setup.steps_per_epoch))
                   for c in members.configs], [runs.best_score(h) for h in histories], diverged)
    try:
        state, test_logits = train_epochs(members, ds, state, books, start_epoch, data_keys,
                                          jnp.stack(step_keys), quiet)
        finals = write_finals(members, ds, books, state, test_logits)
    finally:
        for c in books.ckpts:
            c.close()
        for w in books.writers:
            w.close()
    return summarise_run(workdir, members, ds, books, finals, test_logits)


def write_configs(workdir, config, exists, configs, dirs) -> None:
    """The top-level config.json and each member's (after checking its folder)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not exists:
        write_atomic(workdir / "config.json", config.to_json())
    for c, d in zip(configs, dirs):
        runs.check_workdir(d, c)
        d.mkdir(exist_ok=True)
        write_atomic(d / "config.json", c.to_json())


def restore(state, members: Members, dirs, diverged):
    """(state, start epoch, histories) from the newest epoch every live member has intact.

    Damaged checkpoints are moved to the member's `damaged/` (saying so) and the search goes on;
    each member's newer checkpoints are dropped (the resumed run writes them again, the same)
    and its `best/` made to agree with its history."""
    while True:
        saved = [checkpoint.saved_epochs(d / "checkpoints") for d in dirs]
        live = [s for s, e in zip(saved, diverged) if e is None]
        start = min(s[-1] for s in live) if all(live) else 0
        try:
            restored = [checkpoint.restore(d / "checkpoints", min(start, s[-1]),
                                           member_state(state, k, members.swept))
                        if start and s else None  # None: from scratch, or diverged in epoch 1.
                        for k, (d, s) in enumerate(zip(dirs, saved))]
            break
        except checkpoint.Damaged as e:
            where = checkpoint.set_aside(e.path.parent, int(e.path.name), e.path.parent.parent)
            runs.log(f"warning: {e} It is moved to {where}; resuming from an earlier epoch.")
    histories = [r[1]["history"][:start] if r else [] for r in restored]
    for d, s, history in zip(dirs, saved, histories):
        checkpoint.drop_after(d / "checkpoints", min(start, s[-1]) if s else 0)
        checkpoint.repair_best(d, history, runs.score, runs.log)
    state = drivers.stack([full_state(r[0], member_state(state, k, ()), members.swept) if r else
                           member_state(state, k, ()) for k, r in enumerate(restored)])
    return state, start, histories


def train_epochs(members: Members, ds, state, books: Books, start_epoch, data_keys, step_keys,
                 quiet):
    """Trains every member to the last epoch; returns (state, test logits [K, n, classes])."""
    setup, config = members.setup, members.configs[0]
    pool = to_device(ds.train_images, ds.train_labels)  # Every member's rows, once.
    test = to_device(ds.test_images, ds.test_labels)
    mean, std = jnp.asarray(members.mean), jnp.asarray(members.std)
    driver, steps_per_call = drivers.resolve_driver(config)
    loop = backend.member_loop(config.members, config.model)
    run_chunk = drivers.make_many_runner(setup, driver, mean, std, loop)
    score = scoring.make_member_scorer(setup, loop)
    k_models, n_val = len(members.configs), members.val_idx.shape[1]
    runs.log(f"{k_models} x {config.model} in one program ({', '.join(members.swept) or 'seeds'} "
             f"per member) on {ds.name}: {members.train_idx.shape[1]} train, {n_val} validation "
             f"images each; {models.count_params(member_state(state, 0, ()).params):,} parameters "
             f"each; driver {driver} x{steps_per_call}, members {'looped' if loop else 'vmapped'}.")
    for epoch in range(start_epoch + 1, config.epochs + 1):
        start_time = time.perf_counter()
        order = jnp.stack([jnp.asarray(t)[epoch_order(dk, epoch, len(t))]
                           for t, dk in zip(members.train_idx, data_keys)])  # [K, n_train]
        progress = Progress(setup.steps_per_epoch * setup.config.batch_size,
                            f"epoch {epoch}/{config.epochs}", quiet)
        state, acc = drivers.run_epoch(run_chunk, state, drivers.stack([zero_metrics()] * k_models),
                                       pool, order, step_keys, setup, steps_per_call, progress)
        acc = jax.device_get(acc)
        train = [summarise(drivers.take(acc, k)) for k in range(k_models)]
        seconds = time.perf_counter() - start_time
        val_logits = score(state.params, pool, members.val_idx, mean, std) if n_val else None
        for k in range(k_models):
            val = (scoring.metrics_of(val_logits[k], ds.train_labels[members.val_idx[k]])
                   if n_val else None)
            record_member(members, ds, books, k, epoch, state, train[k], val, seconds)
        check_alive(books.diverged)
        runs.log(f"epoch {epoch} | {seconds:.1f}s for {k_models} models | " + " ".join(
            "diverged" if e is not None else
            f"{100 * h[-1].get('val_accuracy', h[-1]['train_accuracy']):.2f}%"
            for h, e in zip(books.histories, books.diverged)))
    n_test = len(ds.test_labels)
    rows = np.broadcast_to(np.arange(n_test, dtype=np.int32), (k_models, n_test))
    return state, score(state.params, test, rows, mean, std)


def record_member(members: Members, ds, books: Books, k: int, epoch: int, state, train: dict,
                  val: dict | None, seconds: float) -> None:
    """Member k's epoch: its divergence check, metrics line and checkpoints."""
    d = books.dirs[k]
    if books.diverged[k] is None and not math.isfinite(train["loss"]):
        books.diverged[k] = epoch
        write_atomic(d / "diverged.json", json.dumps(
            {"epoch": epoch, "train_loss": repr(train["loss"])}) + "\n")
        runs.log(f"{member_name(k)} diverged in epoch {epoch} (training loss {train['loss']}); "
                 f"it is dropped from here on, and its checkpoints up to epoch {epoch - 1} are kept.")
    if books.diverged[k] is not None:
        return
    step = int(state.step[k])
    record = runs.epoch_record(epoch, step, float(books.schedules[k](step - 1)), train, val, seconds)
    history = books.histories[k]
    history.append(record)
    meta = runs.run_meta(members.configs[k], epoch, history, members.setup, ds,
                         float(members.mean[k]), float(members.std[k]))
    score = runs.score(record)
    books.ckpts[k].save(epoch, member_state(state, k, members.swept), meta,
                        is_best=score > books.best[k])
    books.best[k] = max(books.best[k], score)
    books.writers[k].write(record, step)


def write_finals(members: Members, ds, books: Books, state, test_logits) -> list[dict]:
    """Each member's test scores: the last line of its metrics.jsonl and its results.json."""
    finals = []
    for k, (d, writer, e) in enumerate(zip(books.dirs, books.writers, books.diverged)):
        if e is not None:
            finals.append({"diverged_in_epoch": e, "test_loss": None, "test_accuracy": None})
        else:
            finals.append(runs.final_record(members.configs[k].epochs, int(state.step[k]),
                                            scoring.metrics_of(test_logits[k], ds.test_labels)))
            writer.write(finals[-1], finals[-1]["step"])
        write_json(d / "results.json", finals[-1])
    return finals


def summarise_run(workdir, members: Members, ds, books: Books, finals, test_logits) -> dict:
    """The ensemble's test scores and the run's results.json, sweep table and log."""
    alive = [k for k, e in enumerate(books.diverged) if e is None]
    ensemble = scoring.ensemble_metrics(test_logits[alive], ds.test_labels)
    result = {"members": [{"member": member_name(k), **{n: getattr(c, n) for n in
                                                        ("seed", *SWEEPABLE)},
                           "val_accuracy": h[-1].get("val_accuracy") if h and e is None else None,
                           **f}
                          for k, (c, h, f, e) in enumerate(zip(members.configs, books.histories,
                                                               finals, books.diverged))],
              "ensemble": {"members": len(alive), "test_accuracy": ensemble["accuracy"],
                           "test_loss": ensemble["loss"], "test_count": ensemble["count"]}}
    write_json(workdir / "results.json", result)
    from jaxdigits import sweep_report  # Imported here: matplotlib costs every run 0.25 s at start.

    sweep_report.write(workdir, result, members.swept)
    last = members.configs[0].epochs
    for m in result["members"]:
        runs.log(f"{m['member']}: diverged in epoch {m['diverged_in_epoch']}" if m["test_accuracy"]
                 is None else f"{m['member']}: test accuracy {100 * m['test_accuracy']:.2f}% "
                 f"(latest checkpoint, epoch {last} of {last})")
    runs.log(f"Ensemble of {len(alive)} (mean probability of the latest checkpoints): test accuracy "
             f"{100 * ensemble['accuracy']:.2f}% on all {ensemble['count']} test images. Table: "
             f"{workdir / 'sweep.md'}, plot: {workdir / 'sweep.png'}.")
    return result


def check_alive(diverged: list) -> None:
    if all(e is not None for e in diverged):
        raise UserError(f"training diverged for every member (in epochs "
                        f"{', '.join(map(str, diverged))}); the checkpoints of earlier epochs are "
                        "kept. Lower --learning_rate or add --grad_clip.")
