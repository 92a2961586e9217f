"""Many models in one compiled program: seed ensembles and hyperparameter sweeps with `jax.vmap`.

    python -m jaxdigits.train --model=mlp --num_models=4 --workdir=runs/mlp-x4       # seeds 0..3
    python -m jaxdigits.train --model=mlp --sweep=learning_rate=1e-4,3e-4,1e-3,3e-3 --workdir=runs/lr
    python -m jaxdigits.evaluate --workdir=runs/mlp-x4     # every member and the ensemble (ensemble.py)

Member k is exactly the single run of its own config (`member_k/config.json`): `--num_models=K`
gives seeds SEED..SEED+K-1, `--sweep` one member per setting (the grid of all settings, times
K seeds). Each member keeps its own validation split, input normalisation, initialisation,
data order, dropout and augmentation keys, so its numbers equal those of the separate run to
float tolerance (tested). All members share one copy of the data on the device, one compiled
step (`train.make_batch_step` under `jax.vmap`), and one pass of the driver per step.

Swept optimizer hyperparameters live in the optimizer state through `optax.inject_hyperparams`,
one value per member; the others stay compile-time constants. Each member's folder is a normal
run folder (config.json, metrics.jsonl, results.json, checkpoints/, best/), whose checkpoints
hold the plain optimizer state, so `evaluate`, export and resume treat a member as a single run.

A member whose training loss turns non-finite (a learning rate too high for it, in a sweep) is
dropped, not the whole run: its folder gets `diverged.json`, it saves no more checkpoints (the
earlier ones stay), it is left out of the ensemble and of `evaluate`'s members, and its results
say in which epoch it diverged. If every member diverges the run stops, as a single run does.
"""

import dataclasses
import functools
import itertools
import json
import math
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdigits import checkpoint, data, models, optimizers, sweep_report, train
from jaxdigits.config import Config, validate
from jaxdigits.ensemble import ensemble_metrics, metrics_of
from jaxdigits.errors import UserError
from jaxdigits.metrics import MetricWriter, Progress, write_atomic

SWEEPABLE = ("learning_rate", "weight_decay", "momentum", "b1", "b2")


def parse_sweep(text: str) -> dict[str, list[float]]:
    """"learning_rate=1e-4,1e-3;momentum=0.8,0.9" -> {"learning_rate": [...], "momentum": [...]}."""
    grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip()
        if name not in SWEEPABLE:
            raise UserError(f"--sweep can vary {', '.join(SWEEPABLE)}, not {name!r}.")
        try:
            grid[name] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--sweep values for {name} must be numbers, got {values!r}.") from None
        if not grid[name]:
            raise UserError(f"--sweep needs NAME=V1,V2,...; got {part!r}.")
    return grid


def member_configs(config: Config) -> list[Config]:
    """One single-run config per member: every sweep setting, each with seeds SEED..SEED+K-1."""
    grid = parse_sweep(config.sweep)
    settings = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return [validate(dataclasses.replace(config, num_models=1, sweep="", seed=config.seed + k, **s))
            for s in settings or [{}] for k in range(config.num_models)]


def member_name(index: int) -> str:
    return f"member_{index}"


def make_member_tx(config: Config, swept: tuple, steps_per_epoch: int):
    """The optimizer of `config` with the `swept` hyperparameters held in its state."""
    if not swept:
        return optimizers.make_optimizer(config, steps_per_epoch)

    def factory(learning_rate, weight_decay, momentum, b1, b2):
        values = dict(learning_rate=learning_rate, weight_decay=weight_decay, momentum=momentum,
                      b1=b1, b2=b2)
        member = dataclasses.replace(config, **values)
        if "learning_rate" not in swept:
            return optimizers.make_optimizer(member, steps_per_epoch)
        # optax's schedules test their peak value in Python, so a traced peak scales the unit
        # schedule (every schedule here is proportional to its peak).
        unit = optimizers.schedule_for(dataclasses.replace(config, learning_rate=1.0), steps_per_epoch)
        return optimizers.make_optimizer(member, steps_per_epoch,
                                         schedule=lambda n: learning_rate * unit(n))

    static = tuple(n for n in SWEEPABLE if n not in swept)
    return optax.inject_hyperparams(factory, static_args=static)(
        **{n: getattr(config, n) for n in SWEEPABLE})


class Members(NamedTuple):
    """The K members as the compiled program sees them (leading axis K everywhere)."""
    configs: list
    setup: train.Setup  # Shared structure; its `tx` updates every member.
    train_idx: np.ndarray  # int32 [K, n_train], rows of the training pool
    val_idx: np.ndarray  # int32 [K, n_val]
    mean: np.ndarray  # float32 [K]
    std: np.ndarray  # float32 [K]
    swept: tuple


def make_members(config: Config, ds) -> Members:
    configs = member_configs(config)
    n = len(ds.train_labels)
    splits = [data.split_validation(np.arange(n), np.arange(n), c.validation_size, c.seed)[::2]
              for c in configs]
    train_idx = np.stack([t[:c.max_train_examples or None] for (t, _), c in zip(splits, configs)])
    val_idx = np.stack([v for _, v in splits])
    stats = [train.pixel_stats(ds.train_images[t]) for t in train_idx]
    setup = train.make_setup(configs[0], train_idx.shape[1], ds.train_images.shape[1:],
                             ds.num_classes, *stats[0])
    swept = tuple(n for n in SWEEPABLE if len({getattr(c, n) for c in configs}) > 1)
    setup = setup._replace(tx=make_member_tx(configs[0], swept, setup.steps_per_epoch))
    mean, std = (np.asarray(s, np.float32) for s in zip(*stats))
    return Members(configs, setup, train_idx.astype(np.int32), val_idx.astype(np.int32), mean,
                   std, swept)


def init_states(members: Members, keys) -> train.TrainState:
    """Each member initialised on its own (as its single run would be), then stacked."""
    steps = members.setup.steps_per_epoch
    return stack([train.init_state(members.setup, key, make_member_tx(c, members.swept, steps))
                  for c, key in zip(members.configs, keys)])


def stack(trees):
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def take(tree, k: int):
    """Member k of a stacked tree (the inverse of `stack`)."""
    return jax.tree.map(lambda x: x[k], tree)


def member_state(states: train.TrainState, k: int, swept: tuple) -> train.TrainState:
    """Member k's state as its single run holds it (the plain optimizer state)."""
    state = take(states, k)
    return state._replace(opt_state=state.opt_state.inner_state) if swept else state


def full_state(plain: train.TrainState, template: train.TrainState, swept: tuple):
    """Back from `member_state`: the injected hyperparameters come from the member's config."""
    if not swept:
        return plain
    opt = template.opt_state._replace(count=plain.step, inner_state=plain.opt_state)
    return plain._replace(opt_state=opt)


def member_loop(config: Config) -> bool:
    """Whether the step loops over members (True) or vmaps them (False), as `--members` says.

    auto loops for conv nets on CPU: under `vmap` their convolutions become one grouped
    convolution (feature_group_count = K), which YNNPACK (`--cpu_conv=ynnpack`) runs several
    times slower than K ordinary ones; with the default Eigen kernels the two are within a few
    per cent (BUILD_NOTES.md, issue 7). Dense models, and every model on GPU/TPU, keep `vmap`.
    """
    if config.members != "auto":
        return config.members == "loop"
    return jax.default_backend() == "cpu" and config.model.startswith("cnn")


def make_many_runner(setup: train.Setup, driver: str, mean, std, loop: bool = False):
    """Like `train.make_chunk_runner`, for K members: `order` int32 [K, n] and `step_keys` [K].

    `loop`: each step writes the members' steps out one after another (K copies of the single
    run's step in the one program) instead of one `jax.vmap`'d step; the same math either way.
    """
    single = train.make_batch_step(setup)
    batch_step = jax.vmap(single, in_axes=(0, 0, None, 0, 0, 0, 0))
    batch_size = setup.config.batch_size

    def looped_step(state, acc, data, idx, step_keys, mean, std):
        out = [single(*take((state, acc), k), data, idx[k], step_keys[k], mean[k], std[k])
               for k in range(idx.shape[0])]
        return stack([s for s, _ in out]), stack([a for _, a in out])

    def run(state, acc, data, order, start, step_keys, num_steps):
        def body(carry, i):
            idx = jax.lax.dynamic_slice_in_dim(order, (start + i) * batch_size, batch_size, 1)
            step = looped_step if loop else batch_step
            return step(*carry, data, idx, step_keys, mean, std), None  # idx: [K, b]

        return train.run_steps(body, (state, acc), num_steps, driver)

    return jax.jit(run, static_argnames="num_steps", donate_argnums=(0, 1),
                   compiler_options=train.compiler_options(setup))


def make_scorer(setup: train.Setup, loop: bool = False):
    """`score(params, data, idx, mean, std) -> logits` float32 [K, n, classes], padded batches.
    `loop` as in `make_many_runner`."""
    model, batch_size = setup.model, setup.config.eval_batch_size

    @functools.partial(jax.jit, compiler_options=train.compiler_options(setup))
    def logits_batch(params, data, idx, mean, std):  # idx: [K, b]
        one = lambda p, i, m, s: model.apply(p, train.normalise(data.images[i], m, s))
        if loop:
            return jnp.stack([one(take(params, k), idx[k], mean[k], std[k])
                              for k in range(idx.shape[0])])
        return jax.vmap(one)(params, idx, mean, std)  # [K, b, classes]

    def score(params, data, idx, mean, std):
        n = idx.shape[1]
        out = []
        for start in range(0, n, batch_size):
            chunk = idx[:, np.minimum(np.arange(start, start + batch_size), n - 1)]
            out.append(np.asarray(logits_batch(params, data, chunk, mean, std)))
        return np.concatenate(out, axis=1)[:, :n]

    return score



def train_many(config: Config, workdir, *, data_dir=None, allow_download=True, quiet=False,
               resume=False, keep_checkpoints=3) -> dict:
    """`train.train_and_evaluate` for K members at once; each member's files in `member_k/`.

    Writes the top-level config.json, results.json (every member and the ensemble on the test
    set) and sweep.md, sweep.csv and sweep.png (final validation and test accuracy per member).
    """
    workdir = pathlib.Path(workdir)
    if keep_checkpoints < 1:
        raise UserError(f"--keep_checkpoints must be at least 1, got {keep_checkpoints}.")
    if jax.process_count() > 1:
        raise UserError("--num_models and --sweep run in one process (on its first device); "
                        "start them without --coordinator_address.")
    exists = train.check_workdir(workdir, validate(config))
    ds = data.load_dataset(config.dataset, data_dir, allow_download)
    members = make_members(config, ds)
    setup, configs, k_models = members.setup, members.configs, len(members.configs)
    dirs = [workdir / member_name(k) for k in range(k_models)]
    saved = [checkpoint.saved_epochs(d / "checkpoints") for d in dirs]
    diverged = [read_diverged(d) for d in dirs]  # Epoch each member diverged in, or None.
    _check_alive(diverged)
    resumable = all(s for s, e in zip(saved, diverged) if e is None)  # Diverged ones may have none.
    if resume and not resumable:
        raise UserError(f"--resume was given but {workdir} holds no checkpoint to resume from.")
    workdir.mkdir(parents=True, exist_ok=True)
    if not exists:
        write_atomic(workdir / "config.json", config.to_json())
    for c, d in zip(configs, dirs):
        train.check_workdir(d, c)
        d.mkdir(exist_ok=True)
        write_atomic(d / "config.json", c.to_json())

    keys = [jax.random.split(jax.random.key(c.seed), 3) for c in configs]
    init_keys, data_keys, step_keys = (list(k) for k in zip(*keys))
    state = init_states(members, init_keys)
    start_epoch, histories = 0, [[] for _ in configs]
    if resumable:
        start_epoch = min(s[-1] for s, e in zip(saved, diverged) if e is None)
        restored = [checkpoint.restore(d / "checkpoints", min(start_epoch, s[-1]),
                                       member_state(state, k, members.swept)) if s else None
                    for k, (d, s) in enumerate(zip(dirs, saved))]  # None: diverged in epoch 1.
        state = stack([full_state(r[0], member_state(state, k, ()), members.swept) if r else
                       member_state(state, k, ()) for k, r in enumerate(restored)])
        histories = [r[1]["history"][:start_epoch] if r else [] for r in restored]
        _log(f"Resuming {workdir} from epoch {start_epoch}.")

    pool = train.to_device(ds.train_images, ds.train_labels)  # Every member's rows, once.
    test = train.to_device(ds.test_images, ds.test_labels)
    mean, std = jnp.asarray(members.mean), jnp.asarray(members.std)
    driver, steps_per_call = train.resolve_driver(configs[0])
    loop = member_loop(config)
    run_chunk = make_many_runner(setup, driver, mean, std, loop)
    score = make_scorer(setup, loop)
    step_keys = jnp.stack(step_keys)
    writers = [MetricWriter(d, h) for d, h in zip(dirs, histories)]
    ckpts = [checkpoint.Checkpointer(d, keep_checkpoints) for d in dirs]
    schedules = [jax.jit(optimizers.schedule_for(c, setup.steps_per_epoch)) for c in configs]
    best = [max(map(train._score, h), default=-math.inf) for h in histories]
    n_val = members.val_idx.shape[1]
    _log(f"{k_models} x {config.model} in one program ({', '.join(members.swept) or 'seeds'} per "
         f"member) on {ds.name}: {members.train_idx.shape[1]} train, {n_val} validation images "
         f"each; {models.count_params(member_state(state, 0, ()).params):,} parameters each; "
         f"driver {driver} x{steps_per_call}, members {'looped' if loop else 'vmapped'}.")
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            start_time = time.perf_counter()
            order = jnp.stack([jnp.asarray(t)[jax.random.permutation(
                jax.random.fold_in(dk, epoch), len(t)).astype(jnp.int32)]
                for t, dk in zip(members.train_idx, data_keys)])  # [K, n_train]
            state, acc = train_epoch(run_chunk, state, pool, order, step_keys, setup,
                                     steps_per_call, f"epoch {epoch}/{config.epochs}", quiet)
            seconds = time.perf_counter() - start_time
            val_logits = score(state.params, pool, members.val_idx, mean, std) if n_val else None
            for k in range(k_models):
                if diverged[k] is None and not math.isfinite(acc[k]["loss"]):
                    diverged[k] = epoch
                    write_atomic(dirs[k] / "diverged.json", json.dumps(
                        {"epoch": epoch, "train_loss": repr(acc[k]["loss"])}) + "\n")
                    _log(f"{member_name(k)} diverged in epoch {epoch} (training loss "
                         f"{acc[k]['loss']}); it is dropped from here on, and its checkpoints "
                         f"up to epoch {epoch - 1} are kept.")
                if diverged[k] is not None:
                    continue
                record = {"epoch": epoch, "step": int(state.step[k]),
                          "learning_rate": float(schedules[k](int(state.step[k]) - 1)),
                          "train_loss": acc[k]["loss"], "train_accuracy": acc[k]["accuracy"]}
                if n_val:
                    v = metrics_of(val_logits[k], ds.train_labels[members.val_idx[k]])
                    record.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
                record.update(seconds=seconds, images_per_second=acc[k]["count"] / seconds)
                histories[k].append(record)
                meta = member_meta(configs[k], epoch, histories[k], members, k, ds, setup)
                score_k = train._score(record)
                ckpts[k].save(epoch, member_state(state, k, members.swept), meta,
                              is_best=score_k > best[k])
                best[k] = max(best[k], score_k)
                writers[k].write(record, record["step"])
            _check_alive(diverged)
            _log(f"epoch {epoch} | {seconds:.1f}s for {k_models} models | " + " ".join(
                "diverged" if e is not None else
                f"{100 * h[-1].get('val_accuracy', h[-1]['train_accuracy']):.2f}%"
                for h, e in zip(histories, diverged)))
        test_logits = score(state.params, test, np.broadcast_to(
            np.arange(len(ds.test_labels), dtype=np.int32), (k_models, len(ds.test_labels))), mean, std)
        finals = []
        for k, (writer, d) in enumerate(zip(writers, dirs)):
            if diverged[k] is not None:
                finals.append({"diverged_in_epoch": diverged[k], "test_loss": None,
                               "test_accuracy": None})
                write_atomic(d / "results.json", json.dumps(finals[-1], indent=2) + "\n")
                continue
            t = metrics_of(test_logits[k], ds.test_labels)
            final = {"epoch": config.epochs, "step": int(state.step[k]), "test_loss": t["loss"],
                     "test_accuracy": t["accuracy"], "test_count": t["count"]}
            writer.write(final, final["step"])
            write_atomic(d / "results.json", json.dumps(final, indent=2) + "\n")
            finals.append(final)
    finally:
        for c in ckpts:
            c.close()
        for w in writers:
            w.close()
    alive = [k for k, e in enumerate(diverged) if e is None]
    ensemble = ensemble_metrics(test_logits[alive], ds.test_labels)
    result = {"members": [{"member": member_name(k), **{n: getattr(c, n) for n in
                                                        ("seed", *SWEEPABLE)},
                           "val_accuracy": h[-1].get("val_accuracy") if h and e is None else None,
                           **f}
                          for k, (c, h, f, e) in enumerate(zip(configs, histories, finals,
                                                               diverged))],
              "ensemble": {"members": len(alive), "test_accuracy": ensemble["accuracy"],
                           "test_loss": ensemble["loss"], "test_count": ensemble["count"]}}
    write_atomic(workdir / "results.json", json.dumps(result, indent=2) + "\n")
    sweep_report.write(workdir, result, members.swept)
    for m in result["members"]:
        _log(f"{m['member']}: diverged in epoch {m['diverged_in_epoch']}" if m["test_accuracy"]
             is None else f"{m['member']}: test accuracy {100 * m['test_accuracy']:.2f}%")
    _log(f"Ensemble of {len(alive)} (mean probability): test accuracy "
         f"{100 * ensemble['accuracy']:.2f}% on all {ensemble['count']} test images. Table: "
         f"{workdir / 'sweep.md'}, plot: {workdir / 'sweep.png'}.")
    return result


def member_meta(config, epoch, history, members, k, ds, setup) -> dict:
    """What a single run stores with each checkpoint, so a member folder is a run folder."""
    return {"epoch": epoch, "history": history, "config": json.loads(config.to_json()),
            "normalisation": {"mean": float(members.mean[k]), "std": float(members.std[k])},
            "class_names": ds.class_names, "dataset": ds.name,
            "image_shape": list(setup.image_shape), "steps_per_epoch": setup.steps_per_epoch}


def train_epoch(run_chunk, state, pool, order, step_keys, setup, steps_per_call, title, quiet):
    """One epoch for every member; returns (state, per-member train loss/accuracy/count)."""
    acc = stack([train.zero_metrics()] * order.shape[0])
    batch = setup.config.batch_size
    progress = Progress(setup.steps_per_epoch * batch, title, quiet)
    try:
        for start in range(0, setup.steps_per_epoch, steps_per_call):
            num = min(steps_per_call, setup.steps_per_epoch - start)
            state, acc = run_chunk(state, acc, pool, order, start, step_keys, num_steps=num)
            if progress.due():
                progress.update((start + num) * batch)
    finally:
        progress.close()
    acc = jax.device_get(acc)
    counts = np.maximum(acc["count"], 1)
    return state, [{"loss": float(acc["loss"][k]) / counts[k],
                    "accuracy": int(acc["correct"][k]) / counts[k], "count": int(acc["count"][k])}
                   for k in range(order.shape[0])]


def member_paths(path) -> list[pathlib.Path]:
    """The member folders of a many-model run folder that did not diverge, or [] if `path` is
    not a many-model run."""
    path = pathlib.Path(path)
    config = train.read_config(path) if path.is_dir() else None
    if config is None or (config.num_models == 1 and not config.sweep):
        return []
    folders = [path / member_name(k) for k in range(len(member_configs(config)))]
    return [f for f in folders if read_diverged(f) is None]


def read_diverged(folder: pathlib.Path) -> int | None:
    """The epoch in which the member in `folder` diverged (its diverged.json), or None."""
    marker = pathlib.Path(folder) / "diverged.json"
    return json.loads(marker.read_text())["epoch"] if marker.exists() else None


def _check_alive(diverged: list) -> None:
    if all(e is not None for e in diverged):
        raise UserError(f"training diverged for every member (in epochs "
                        f"{', '.join(map(str, diverged))}); the checkpoints of earlier epochs are "
                        "kept. Lower --learning_rate or add --grad_clip.")




def _log(message: str) -> None:
    print(message, flush=True)
