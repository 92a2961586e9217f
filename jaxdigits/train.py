"""Training: `train_and_evaluate` and the `python -m jaxdigits.train` entry point.

    python -m jaxdigits.train --model=cnn          # 99.3-99.4 % test accuracy, see README
    python -m jaxdigits.train --model=mlp --epochs=10 --workdir=runs/mlp
    python -m jaxdigits.train --workdir=runs/mlp                # continues that run
    python -m jaxdigits.train --recipe=speedrun                 # >= 99.0 % fast, see docs/performance.md

Each epoch trains on the device-resident data (`inputs`) with the compiled step (`step`, driven
by `drivers`), scores the validation split (`scoring`), and saves metrics and checkpoints
(`runs`, `checkpoint`); the test set is scored once, at the end. `--num_models` and `--sweep`
train many models at once (`many`).
"""

import pathlib
import time
from typing import NamedTuple

import jax

from jaxdigits import backend, checkpoint, cli, drivers, inputs, many, models, optimizers, parallel
from jaxdigits import runs, scoring, step
from jaxdigits.ahead import Ahead
from jaxdigits.config import Config
from jaxdigits.errors import UserError
from jaxdigits.metrics import MetricWriter, write_atomic, write_json


class Loop(NamedTuple):
    """What the epoch loop of a single run works with."""
    setup: step.Setup
    ds: object
    run_chunk: object
    evaluate: object
    steps_per_call: int
    keys: tuple  # (data_key, step_key)
    data: tuple  # (train, val, test) DeviceData
    quiet: bool


def train_and_evaluate(config: Config, workdir, *, data_dir=None, allow_download=True,
                       quiet=False, resume=False, keep_checkpoints=3, devices=0) -> dict:
    """Trains, validating and checkpointing every epoch, then scores the whole test set.

    Continues from the workdir's latest checkpoint if there is one, replaying the same data
    order and dropout keys, so the result is bit-identical to an uninterrupted run (on CPU).
    Trains data-parallel on `devices` devices (0: all, of every process; see `parallel`).
    Returns the final record (test loss and accuracy among it).
    """
    if config.num_models > 1 or config.sweep:
        return many.train_many(config, workdir, data_dir=data_dir, allow_download=allow_download,
                               quiet=quiet, resume=resume, keep_checkpoints=keep_checkpoints)
    workdir = pathlib.Path(workdir)
    exists = runs.check_run(workdir, config, keep_checkpoints)
    mesh = parallel.make_mesh(devices)
    parallel.check_divisible(config.batch_size, mesh)
    parallel.sync("checked workdir")  # Before process 0 writes into it.
    primary = parallel.is_primary()
    saved = checkpoint.saved_epochs(workdir / "checkpoints")
    if resume and not saved:
        raise UserError(f"--resume was given but {workdir} holds no checkpoint to resume from.")
    ds, (tx, ty), (vx, vy), (test_x, test_y) = inputs.prepare_data(config, data_dir, allow_download)
    setup = step.make_setup(config, len(tx), tx.shape[1:], ds.num_classes, *inputs.pixel_stats(tx))
    runs.verify_optimizer(setup)
    if primary:
        workdir.mkdir(parents=True, exist_ok=True)
    if primary and not exists:
        write_atomic(workdir / "config.json", config.to_json())

    driver, steps_per_call = drivers.resolve_driver(config)
    run_chunk = drivers.make_chunk_runner(setup, driver, mesh)
    evaluate = scoring.make_evaluator(setup, mesh)
    splits = ((tx, ty), (vx, vy), (test_x, test_y))
    early = compile_ahead(setup, run_chunk, evaluate, splits, steps_per_call,
                          on=mesh.size == 1 and max(saved, default=0) < config.epochs)
    init_key, data_key, step_key = step.run_keys(config.seed)
    state, history = restore(workdir, step.init_state(setup, init_key), config.epochs, primary)
    data = tuple(inputs.to_device(x, y) for x, y in splits)
    if mesh.size > 1:
        state, *data = parallel.replicate((state, *data), mesh)
    loop = Loop(setup, ds, run_chunk, evaluate, steps_per_call, (data_key, step_key), tuple(data),
                quiet or not primary)
    log_start(config, ds, splits, state, mesh, (driver, steps_per_call))
    writer = MetricWriter(workdir, history) if primary else parallel.NullWriter()
    ckpt = checkpoint.Checkpointer(workdir, keep_checkpoints)  # Imports orbax as programs compile.
    early.wait()
    try:
        state = train_epochs(loop, state, history, writer, ckpt)
        final = runs.final_record(config.epochs, int(state.step), loop.evaluate(state.params, data[2]))
        writer.write(final, final["step"])
    finally:
        ckpt.close()
        writer.close()
    if primary:
        write_json(workdir / "results.json", final)
    runs.log(f"Test accuracy {100 * final['test_accuracy']:.2f}% ({runs.scored_label(history, config.epochs)}) "
             f"on all {final['test_count']} test images, loss {final['test_loss']:.4f}.")
    runs.log(f"Run saved in {workdir}: config.json, metrics.jsonl, results.json, tensorboard/, "
             f"checkpoints/ (last {keep_checkpoints}), best/ (best by {runs.best_by(len(vy))}).")
    return final


def log_start(config: Config, ds, splits, state, mesh, driven: tuple[str, int]) -> None:
    """The run's first line: model, data, parameters, devices and the (driver, steps per call)."""
    driver, steps_per_call = driven
    guessed = config.driver == "auto" and jax.default_backend() not in backend.MEASURED_DRIVERS
    basis = f" ({backend.driver_basis()})" if guessed else ""
    (tx, _), (vx, _), (test_x, _) = splits
    runs.log(f"{config.model} on {ds.name} from {ds.source}: {len(tx)} train, {len(vx)} validation, "
             f"{len(test_x)} test images; {models.count_params(state.params):,} parameters; "
             f"{parallel.describe(mesh)}, driver {driver} x{steps_per_call}{basis}.")


def compile_ahead(setup: step.Setup, run_chunk, evaluate, splits, steps_per_call: int,
                  on: bool) -> Ahead:
    """The run's programs (the epoch's and the scorer's) compiled on a second thread from the
    shapes of its state and of the (images, labels) `splits`, while this one initialises; if
    `on` (one device, epochs left to train: multi-device programs need their shardings)."""
    shapes = [inputs.DeviceData(jax.ShapeDtypeStruct(x.shape, x.dtype),
                                jax.ShapeDtypeStruct(y.shape, y.dtype)) for x, y in splits]

    def plan(ahead):
        state = step.state_shapes(setup)
        drivers.compile_ahead(ahead, run_chunk, setup, state, shapes[0], steps_per_call)
        evaluate.compile_ahead(ahead, state.params, *(s for s in shapes[1:] if s.labels.shape[0]))

    return Ahead(plan if on else None)


def restore(workdir: pathlib.Path, state, epochs: int, primary: bool):
    """(state, history) from the newest intact checkpoint, or (`state`, []) if there is none.

    A damaged checkpoint is moved to `damaged/` and the one before it tried, saying so; `best/`
    is then made to agree with the history restored (`checkpoint.repair_best`)."""
    folder, restored, history = workdir / "checkpoints", state, []
    for epoch in reversed(checkpoint.saved_epochs(folder)):
        try:
            restored, meta = checkpoint.restore(folder, epoch, state)
        except checkpoint.Damaged as e:
            where = checkpoint.set_aside(folder, epoch, workdir) if primary else folder
            runs.log(f"warning: {e} It is moved to {where}; resuming from the checkpoint before it.")
            continue
        history = meta["history"]
        runs.log(f"Resuming {workdir} from epoch {meta['epoch']}." if meta["epoch"] < epochs
                 else f"{workdir} is complete ({meta['epoch']} epochs); scoring the test set again.")
        break
    if primary:
        checkpoint.repair_best(workdir, history, runs.score, runs.log)
    return restored, history


def train_epochs(loop: Loop, state, history: list, writer, ckpt) -> step.TrainState:
    """The epochs after those in `history`: train, validate, checkpoint, log each one."""
    setup = loop.setup
    config, (train, val, _) = setup.config, loop.data
    # One compiled program: run op by op, the schedule compiled some 20 small ones (1.5 s).
    schedule = jax.jit(optimizers.schedule_for(config, setup.steps_per_epoch))
    best = runs.best_score(history)
    for epoch in range(len(history) + 1, config.epochs + 1):
        start_time = time.perf_counter()
        state, train_metrics = drivers.train_epoch(
            loop.run_chunk, state, train, *loop.keys, epoch, setup, loop.steps_per_call, loop.quiet)
        seconds = time.perf_counter() - start_time
        val_metrics = loop.evaluate(state.params, val) if val.labels.shape[0] else None
        record = runs.epoch_record(epoch, int(state.step), float(schedule(int(state.step) - 1)),
                                   train_metrics, val_metrics, seconds)
        history.append(record)
        meta = runs.run_meta(config, epoch, history, setup, loop.ds, setup.mean, setup.std)
        ckpt.save(epoch, state, meta, is_best=runs.score(record) > best)
        best = max(best, runs.score(record))
        writer.write(record, int(state.step))
        runs.log(runs.format_record(record))
    return state


def main(argv):
    """`python -m jaxdigits.train`: the flags' config (or the workdir's, or a recipe's), trained."""
    flag_values = cli.start(argv)
    parallel.initialize(flag_values.coordinator_address, flag_values.num_processes,
                        flag_values.process_id, auto=flag_values.distributed)
    config, workdir = cli.run_config()
    train_and_evaluate(config, workdir, data_dir=flag_values.data_dir,
                       allow_download=flag_values.download, quiet=flag_values.quiet,
                       resume=flag_values.resume, keep_checkpoints=flag_values.keep_checkpoints,
                       devices=flag_values.devices)


if __name__ == "__main__":
    cli.run(main, cli.define_train_flags)
