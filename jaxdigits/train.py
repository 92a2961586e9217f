"""Training: the pure train step, the epoch driver, and `train_and_evaluate`.

    python -m jaxdigits.train --model=cnn          # 99.3-99.4 % test accuracy, see README
    python -m jaxdigits.train --model=mlp --epochs=10 --workdir=runs/mlp
    python -m jaxdigits.train --workdir=runs/mlp                # continues that run
    python -m jaxdigits.train --recipe=speedrun                 # >= 99.0 % fast, see BUILD_NOTES

The data sit on the device once, as uint8; each step gathers its batch by index, normalises it
and runs forward, backward and the optimizer update in one compiled function.
"""

import datetime
import functools
import json
import math
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdigits import augment, checkpoint, data, losses, models, optimizers, parallel
from jaxdigits.config import Config, validate
from jaxdigits.errors import UserError
from jaxdigits.metrics import MetricWriter, Progress, write_atomic


class TrainState(NamedTuple):
    step: jax.Array  # int32 [], optimizer steps taken
    params: Any
    opt_state: Any


class DeviceData(NamedTuple):
    images: jax.Array  # uint8 [N, H, W, C], on the device
    labels: jax.Array  # int32 [N]


class Setup(NamedTuple):
    """Everything a run derives from its config and data, shared by train, evaluate and benchmark."""
    config: Config
    model: models.Model
    tx: optax.GradientTransformation
    image_shape: tuple
    steps_per_epoch: int
    mean: float  # Input normalisation: (pixel / 255 - mean) / std.
    std: float


def normalise(images, mean, std):
    """uint8 [b, H, W, C] (or float32 in the same 0-255 units) -> float32, on the device."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def make_config_model(config: Config, num_classes: int, gradients: bool = True) -> models.Model:
    """The model a config names, with its --layers choice (auto: fast on CPU, plain elsewhere)
    and its --cpu_conv choice (oneDNN's gradients or XLA's; `gradients=False`, for a model that
    is only scored, never looks for oneDNN: the forward is XLA's either way)."""
    return models.make_model(config.model, num_classes=num_classes, hidden=config.hidden,
                             dropout=config.dropout,
                             cpu_layers=None if config.layers == "auto"
                             else config.layers == "fast",
                             onednn_grads=gradients
                             and models.onednn_grads(config.model, config.cpu_conv))


def compiler_options(setup: Setup) -> dict:
    """XLA compile options of the programs that train or score `setup`'s model (`--cpu_conv`)."""
    return models.compiler_options(setup.config.cpu_conv)


def make_setup(config: Config, num_train: int, image_shape, num_classes: int, mean, std) -> Setup:
    validate(config)
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"--batch_size={config.batch_size} is larger than the {num_train} "
                        "training examples.")
    model = make_config_model(config, num_classes)
    tx = optimizers.make_optimizer(config, steps_per_epoch)
    return Setup(config, model, tx, tuple(image_shape), steps_per_epoch, float(mean), float(std))


def init_state(setup: Setup, key, tx=None) -> TrainState:
    """Fresh parameters from `key` and the state of `tx` (default `setup.tx`) for them."""
    params = models.init_params(setup.model, key, setup.image_shape)
    tx = setup.tx if tx is None else tx
    return TrainState(jnp.zeros((), jnp.int32), params, jax.jit(tx.init)(params))


def make_train_step(setup: Setup):
    """The pure step: `train_step(state, batch, key) -> (state, metric sums)`."""
    model, tx, l2 = setup.model, setup.tx, setup.config.l2

    def loss_fn(params, images, labels, key):
        logits = model.apply(params, images, train=True, key=key)  # [b, classes]
        per_example = losses.cross_entropy(logits=logits, labels=labels)  # [b]
        loss = per_example.mean() + (l2 * losses.l2_penalty(params) if l2 else 0.0)
        return loss, (per_example, logits)

    def train_step(state: TrainState, batch, key):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (per_example, logits)), grads = grad_fn(state.params, batch["image"], batch["label"], key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": per_example.sum(),
                   "correct": (logits.argmax(-1) == batch["label"]).sum(),
                   "count": jnp.asarray(per_example.shape[0], jnp.int32)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def zero_metrics():
    return {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.int32),
            "count": jnp.zeros((), jnp.int32)}


def default_driver(backend: str) -> tuple[str, int]:
    """(driver, steps per call) for a backend; measured on CPU, see BUILD_NOTES.md."""
    if backend == "cpu":
        return "unroll", 8
    return "scan", 64  # GPU/TPU: fewer host round-trips per step; see BUILD_NOTES.md.


def make_batch_step(setup: Setup):
    """`batch_step(state, acc, data, idx, step_key, mean, std) -> (state, acc)`: one step on
    `data[idx]`, gathered, augmented and normalised on the device (shared with `jaxdigits.many`)."""
    train_step = make_train_step(setup)
    shift = setup.config.augment_shift
    rotate, scale = setup.config.augment_rotate, setup.config.augment_scale

    def batch_step(state, acc, data, idx, step_key, mean, std):
        # Per-step keys depend on the step number only, so a resumed run replays them.
        dropout_key, augment_key = jax.random.split(jax.random.fold_in(step_key, state.step))
        images = data.images[idx]  # uint8 [b, H, W, C]
        if shift:
            images = augment.random_shift(augment_key, images, shift)
        if rotate or scale:
            images = augment.random_rotate_scale(jax.random.fold_in(augment_key, 1), images,
                                                 rotate, scale)  # float32 from here
        batch = {"image": normalise(images, mean, std), "label": data.labels[idx]}
        state, metrics = train_step(state, batch, dropout_key)
        return state, jax.tree.map(jnp.add, acc, metrics)

    return batch_step


def run_steps(body, carry, num_steps: int, driver: str):
    """`num_steps` applications of `body(carry, i) -> (carry, None)`: `lax.scan` for the "scan"
    driver, otherwise written out one after another (unrolled) in the traced program."""
    if driver == "scan":
        return jax.lax.scan(body, carry, jnp.arange(num_steps))[0]
    for i in range(num_steps):
        carry, _ = body(carry, i)
    return carry


def make_chunk_runner(setup: Setup, driver: str, mesh=None):
    """A jitted `run(state, acc, data, perm, start, step_key, num_steps)` doing `num_steps` steps.

    Step i of the chunk trains on `perm[(start + i) * batch : (start + i + 1) * batch]`.
    `driver` "unroll" (and "step", which is unroll with one step per call) writes the steps out in
    one program; "scan" loops with `lax.scan`. The state and accumulator buffers are donated.
    With a `mesh` of several devices each device gathers and trains on its slice of every batch
    and XLA all-reduces the gradients; state and data stay replicated (`jaxdigits.parallel`).
    """
    batch_step = make_batch_step(setup)
    batch_size, mean, std = setup.config.batch_size, setup.mean, setup.std

    def one_step(carry, i, data, perm, start, step_key):
        idx = jax.lax.dynamic_slice(perm, ((start + i) * batch_size,), (batch_size,))  # [b]
        if mesh is not None and mesh.size > 1:
            idx = parallel.shard_batch(idx, mesh)
        return batch_step(*carry, data, idx, step_key, mean, std), None

    def run(state, acc, data, perm, start, step_key, num_steps):
        body = lambda carry, i: one_step(carry, i, data, perm, start, step_key)
        return run_steps(body, (state, acc), num_steps, driver)

    out = {} if mesh is None or mesh.size == 1 else {"out_shardings": parallel.replicated(mesh)}
    return jax.jit(run, static_argnames="num_steps", donate_argnums=(0, 1),
                   compiler_options=compiler_options(setup), **out)


def resolve_driver(config: Config) -> tuple[str, int]:
    driver, steps = default_driver(jax.default_backend())
    if config.driver != "auto":
        driver = config.driver
    if config.driver == "step":
        return "step", 1
    return driver, config.steps_per_call or steps


def make_evaluator(setup: Setup, mesh=None):
    """`evaluate(params, data) -> {"loss", "accuracy", "count"}` over every example in `data`.

    Batches of `eval_batch_size`; the last one is padded and masked, so nothing is dropped.
    With a `mesh` of several devices that divides the batch, each device scores its slice.
    """
    model, batch_size, mean, std = setup.model, setup.config.eval_batch_size, setup.mean, setup.std
    split = mesh is not None and mesh.size > 1 and batch_size % mesh.size == 0

    @functools.partial(jax.jit, compiler_options=compiler_options(setup))
    def eval_batch(params, data, start):
        n = data.labels.shape[0]
        position = start + jnp.arange(batch_size)  # [b]
        mask = position < n
        idx = jnp.minimum(position, n - 1)
        if split:
            idx = parallel.shard_batch(idx, mesh)
        logits = model.apply(params, normalise(data.images[idx], mean, std))
        labels = data.labels[idx]
        per_example = losses.cross_entropy(logits=logits, labels=labels)
        return {"loss": jnp.where(mask, per_example, 0.0).sum(),
                "correct": jnp.where(mask, logits.argmax(-1) == labels, False).sum()}

    def evaluate(params, data: DeviceData):
        n = int(data.labels.shape[0])
        totals = [eval_batch(params, data, start) for start in range(0, n, batch_size)]
        loss = float(sum(t["loss"] for t in totals))
        correct = int(sum(t["correct"] for t in totals))
        return {"loss": loss / n, "accuracy": correct / n, "count": n}

    return evaluate


def to_device(images, labels) -> DeviceData:
    return DeviceData(jax.device_put(np.ascontiguousarray(images)), jax.device_put(labels))


def prepare_data(config: Config, data_dir=None, allow_download=True):
    """Loads the dataset and carves the validation split: (Dataset, train, val, test) as numpy pairs."""
    ds = data.load_dataset(config.dataset, data_dir, allow_download)
    tx, ty, vx, vy = data.split_validation(ds.train_images, ds.train_labels,
                                           config.validation_size, config.seed)
    if config.max_train_examples:
        tx, ty = tx[:config.max_train_examples], ty[:config.max_train_examples]
    return ds, (tx, ty), (vx, vy), (ds.test_images, ds.test_labels)


def pixel_stats(images) -> tuple[float, float]:
    """Mean and standard deviation of pixel / 255 over a uint8 array, in float64.

    From a histogram counted 2^20 pixels at a time: the same counts as one `np.bincount` of the
    whole array, which first copies all of it to int64 (0.15 s against 0.62 s for MNIST's).
    """
    flat, chunk = images.reshape(-1), 1 << 20
    counts = sum((np.bincount(flat[i:i + chunk], minlength=256) for i in range(0, flat.size, chunk)),
                 np.zeros(256, np.int64)).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = math.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    return mean, std or 1.0


def read_config(workdir) -> Config | None:
    """The config saved in `workdir`, or None if it has none."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        return None
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a valid jaxdigits config ({e}).") from None


def check_workdir(workdir: pathlib.Path, config: Config) -> bool:
    """True if `workdir` holds this run already; raises if it holds something else."""
    saved = read_config(workdir)
    if saved is not None:
        if saved != config:
            diff = [f"{k}={getattr(config, k)!r} (saved: {getattr(saved, k)!r})"
                    for k in Config.__dataclass_fields__ if getattr(saved, k) != getattr(config, k)]
            raise UserError(f"{workdir} holds a run with a different config: {', '.join(diff)}; "
                            "pass a new --workdir, or drop those flags to continue that run.")
        return True
    if workdir.exists() and any(workdir.iterdir()):
        raise UserError(f"{workdir} exists and is not a jaxdigits run (no config.json); pass an "
                        "empty or new --workdir.")
    return False


def train_and_evaluate(config: Config, workdir, *, data_dir=None, allow_download=True,
                       quiet=False, resume=False, keep_checkpoints=3, devices=0) -> dict:
    """Trains, validating and checkpointing every epoch, then scores the whole test set.

    Continues from the workdir's latest checkpoint if there is one, replaying the same data
    order and dropout keys, so the result is bit-identical to an uninterrupted run (on CPU).
    Trains data-parallel on `devices` devices (0: all, of every process; see `parallel`).
    Returns the final record (test loss and accuracy among it).
    """
    if config.num_models > 1 or config.sweep:
        from jaxdigits import many

        return many.train_many(config, workdir, data_dir=data_dir, allow_download=allow_download,
                               quiet=quiet, resume=resume, keep_checkpoints=keep_checkpoints)
    workdir = pathlib.Path(workdir)
    if keep_checkpoints < 1:
        raise UserError(f"--keep_checkpoints must be at least 1, got {keep_checkpoints}.")
    exists = check_workdir(workdir, validate(config))
    mesh = parallel.make_mesh(devices)
    parallel.check_divisible(config.batch_size, mesh)
    parallel.sync("checked workdir")  # Before process 0 writes into it.
    primary = parallel.is_primary()
    saved = checkpoint.saved_epochs(workdir / "checkpoints")
    if resume and not saved:
        raise UserError(f"--resume was given but {workdir} holds no checkpoint to resume from.")
    ds, (tx, ty), (vx, vy), (test_x, test_y) = prepare_data(config, data_dir, allow_download)
    mean, std = pixel_stats(tx)
    setup = make_setup(config, len(tx), tx.shape[1:], ds.num_classes, mean, std)
    if primary:
        workdir.mkdir(parents=True, exist_ok=True)
    if primary and not exists:
        write_atomic(workdir / "config.json", config.to_json())

    init_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 3)
    state = init_state(setup, init_key)
    start_epoch, history = 0, []
    if saved:
        state, meta = checkpoint.restore(workdir / "checkpoints", saved[-1], state)
        start_epoch, history = meta["epoch"], meta["history"]
        _log(f"Resuming {workdir} from epoch {start_epoch}." if start_epoch < config.epochs else
             f"{workdir} is complete ({start_epoch} epochs); scoring the test set again.")

    train, val, test = to_device(tx, ty), to_device(vx, vy), to_device(test_x, test_y)
    if mesh.size > 1:
        state, train, val, test = parallel.replicate((state, train, val, test), mesh)
    driver, steps_per_call = resolve_driver(config)
    run_chunk = make_chunk_runner(setup, driver, mesh)
    evaluate = make_evaluator(setup, mesh)
    writer = MetricWriter(workdir, history) if primary else parallel.NullWriter()
    # One compiled program: run op by op, the schedule compiled some 20 small ones (1.5 s).
    schedule = jax.jit(optimizers.schedule_for(config, setup.steps_per_epoch))
    _log(f"{config.model} on {ds.name} from {ds.source}: {len(tx)} train, {len(vx)} validation, "
         f"{len(test_x)} test images; {models.count_params(state.params):,} parameters; "
         f"{jax.default_backend()} ({jax.devices()[0].device_kind}) x{mesh.size}"
         + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else "")
         + f", driver {driver} x{steps_per_call}.")
    best = max(map(_score, history), default=-math.inf)
    ckpt = checkpoint.Checkpointer(workdir, keep_checkpoints)
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            start_time = time.perf_counter()
            state, train_metrics = train_epoch(
                run_chunk, state, train, data_key, step_key, epoch, setup, steps_per_call,
                quiet or not primary)
            seconds = time.perf_counter() - start_time
            record = {"epoch": epoch, "step": int(state.step),
                      "learning_rate": float(schedule(int(state.step) - 1)),
                      "train_loss": train_metrics["loss"], "train_accuracy": train_metrics["accuracy"]}
            if len(vx):
                v = evaluate(state.params, val)
                record.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
            record.update(seconds=seconds, images_per_second=train_metrics["count"] / seconds)
            history.append(record)
            score = _score(record)
            meta = {"epoch": epoch, "history": history, "config": json.loads(config.to_json()),
                    "normalisation": {"mean": mean, "std": std}, "class_names": ds.class_names,
                    "dataset": ds.name, "image_shape": list(setup.image_shape),
                    "steps_per_epoch": setup.steps_per_epoch}
            ckpt.save(epoch, state, meta, is_best=score > best)
            best = max(best, score)
            writer.write(record, int(state.step))
            _log(_format(record))
        test = evaluate(state.params, test)
        final = {"epoch": config.epochs, "step": int(state.step), "test_loss": test["loss"],
                 "test_accuracy": test["accuracy"], "test_count": test["count"]}
        writer.write(final, int(state.step))
    finally:
        ckpt.close()
        writer.close()
    if primary:
        write_atomic(workdir / "results.json", json.dumps(final, indent=2) + "\n")
    _log(f"Test accuracy {100 * test['accuracy']:.2f}% on all {test['count']} test images, "
         f"loss {test['loss']:.4f}.")
    _log(f"Run saved in {workdir}: config.json, metrics.jsonl, results.json, tensorboard/, "
         f"checkpoints/ (last {keep_checkpoints}), best/ (best validation accuracy).")
    return final


def train_epoch(run_chunk, state, train, data_key, step_key, epoch, setup, steps_per_call, quiet):
    """One epoch of `steps_per_epoch` full batches; returns (state, train loss/accuracy/count)."""
    n, batch = int(train.labels.shape[0]), setup.config.batch_size
    perm = epoch_order(data_key, epoch, n)
    acc = zero_metrics()
    progress = Progress(setup.steps_per_epoch * batch, f"epoch {epoch}/{setup.config.epochs}", quiet)
    try:
        for start in range(0, setup.steps_per_epoch, steps_per_call):
            num = min(steps_per_call, setup.steps_per_epoch - start)
            state, acc = run_chunk(state, acc, train, perm, start, step_key, num_steps=num)
            if progress.due():
                loss, acc_ = _summarise(acc)
                _check_finite(loss, epoch)
                progress.update((start + num) * batch, loss=f"{loss:.4f}", acc=f"{acc_:.4f}")
    finally:
        progress.close()
    loss, accuracy = _summarise(acc)
    _check_finite(loss, epoch)
    return state, {"loss": loss, "accuracy": accuracy, "count": int(acc["count"])}


@functools.partial(jax.jit, static_argnums=2)
def epoch_order(data_key, epoch, n: int):
    """The order of the `n` training examples in `epoch`: int32 [n], a function of (seed, epoch)
    only, so a resumed run replays it exactly. One compiled program (op by op: three)."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), n).astype(jnp.int32)


def _score(record: dict) -> float:
    """What "best" means: validation accuracy, or without a validation set, the lowest train loss."""
    return record.get("val_accuracy", -record["train_loss"])


def _summarise(acc) -> tuple[float, float]:
    count = max(int(acc["count"]), 1)
    return float(acc["loss"]) / count, int(acc["correct"]) / count


def _check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise UserError(f"training diverged in epoch {epoch}: the loss is {loss}; the checkpoints "
                        "of earlier epochs are kept. Lower --learning_rate or add --grad_clip.")


def _format(record: dict) -> str:
    parts = [f"epoch {record['epoch']}"]
    for key, label in [("train_loss", "train loss"), ("train_accuracy", "acc"),
                       ("val_loss", "val loss"), ("val_accuracy", "acc")]:
        if key in record:
            value = record[key]
            parts.append(f"{label} {100 * value:.2f}%" if "accuracy" in key else f"{label} {value:.4f}")
    parts.append(f"{record['seconds']:.1f}s, {record['images_per_second']:,.0f} img/s")
    return " | ".join(parts)


def _log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def default_workdir(config: Config) -> pathlib.Path:
    """A new folder under runs/, never one that exists (two runs started in the same second)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = pathlib.Path("runs") / f"{config.dataset.replace(':', '_')}-{config.model}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def main(argv):
    from absl import app, flags, logging

    from jaxdigits import config as config_lib

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
    parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                        auto=FLAGS.distributed)
    # An existing run: its saved config holds; flags given now must agree with it.
    base = read_config(FLAGS.workdir) if FLAGS.workdir else None
    if base is None and FLAGS.recipe:
        from jaxdigits import recipes

        base = recipes.config(FLAGS.recipe)  # Flags given on the command line override it.
    config = config_lib.from_flags(base)
    workdir = FLAGS.workdir or default_workdir(config)
    train_and_evaluate(config, workdir, data_dir=FLAGS.data_dir, allow_download=FLAGS.download,
                       quiet=FLAGS.quiet, resume=FLAGS.resume, keep_checkpoints=FLAGS.keep_checkpoints,
                       devices=FLAGS.devices)


def define_run_flags():
    from absl import flags

    flags.DEFINE_string("workdir", None, "Run folder (default: runs/DATASET-MODEL-TIMESTAMP). "
                        "An existing run there is continued.")
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files (or TFDS data_dir).")
    flags.DEFINE_bool("download", True, "Allow downloading a dataset found nowhere offline.")
    flags.DEFINE_bool("quiet", False, "No progress bar (one line per epoch, for logs).")
    flags.DEFINE_bool("resume", False, "Require an existing checkpoint in --workdir to continue from.")
    flags.DEFINE_integer("keep_checkpoints", 3, "How many of the latest epoch checkpoints to keep.")
    flags.DEFINE_integer("devices", 0, "Train data-parallel on this many devices (0: all visible).")
    flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0 "
                        "(default $JAX_COORDINATOR_ADDRESS).")
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes ($JAX_NUM_PROCESSES).")
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's index ($JAX_PROCESS_ID).")
    flags.DEFINE_bool("distributed", False, "Multi-host: let JAX detect the cluster (TPU pod "
                      "slice, SLURM, Open MPI) and start jax.distributed.")
    flags.DEFINE_string("recipe", None, "Start from a named recipe (jaxdigits/recipes.py): "
                        "speedrun (>= 99.0 % test accuracy in the least time on CPU).")


if __name__ == "__main__":
    from absl import app, flags

    from jaxdigits import config as config_lib
    from jaxdigits.errors import report_user_errors

    config_lib.define_flags()
    flags.adopt_module_key_flags(config_lib)  # So --help lists them.
    define_run_flags()
    app.run(report_user_errors(main))
