"""The race's training: many trials or seeds of one optimizer as one compiled program.

Members (trial settings x seeds) train as `drivers.make_many_runner` trains a K-model run: one
program, each member with its own initialisation, data order and dropout keys from its seed, and
its own hyperparameters held in its optimizer state (`HyperState`), so one program serves every
setting. Hyperparameters that are not floats (ints, strings: they may change shapes), or floats
the factory cannot take as traced values, make one program per distinct setting instead; the
result says how many programs ran. Every `eval_every` steps the clock stops and the validation
split is scored; a member hits when its validation accuracy first reaches the target.
"""

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdigits import backend, data, drivers, inputs, models, optimizers, scoring, step
from jaxdigits.config import Config
from jaxdigits.workloads import Workload


class Prepared(NamedTuple):
    """A workload's data on the device and its setup (whose `tx` each program replaces)."""
    workload: Workload
    setup: step.Setup
    train: inputs.DeviceData
    val: inputs.DeviceData
    test: inputs.DeviceData
    val_labels: np.ndarray
    test_labels: np.ndarray
    unit: Any  # The schedule of peak 1: warm-up then cosine over the step budget.


def prepare(workload: Workload, data_dir=None) -> Prepared:
    ds = data.load_dataset(workload.dataset, data_dir, allow_download=False)
    tx, ty, vx, vy = data.split_validation(ds.train_images, ds.train_labels,
                                           workload.validation_size, 0)
    if workload.max_train_examples:
        tx, ty = tx[:workload.max_train_examples], ty[:workload.max_train_examples]
    config = Config(dataset=workload.dataset, model=workload.model, hidden=workload.hidden,
                    batch_size=workload.batch_size, optimizer="sgd", learning_rate=1.0,
                    validation_size=workload.validation_size)
    setup = step.make_setup(config, len(tx), tx.shape[1:], ds.num_classes, *inputs.pixel_stats(tx))
    unit = optimizers.make_schedule("warmup_cosine", 1.0, workload.max_steps,
                                    max(1, workload.max_steps // 20))
    return Prepared(workload, setup, inputs.to_device(tx, ty), inputs.to_device(vx, vy),
                    inputs.to_device(ds.test_images, ds.test_labels), vy, ds.test_labels, unit)


class HyperState(NamedTuple):
    hp: dict  # name -> float32 [], this member's traced hyperparameters
    inner: Any


def hyper_tx(make, unit, static: dict):
    """(tx, inner): `tx` reads its float hyperparameters from its state (`init_state` puts them
    there) and steps as `inner(hp)` does: the learning rate as the peak of the schedule `unit`,
    the rest, with `static`, as the factory's arguments."""
    def inner(hp):
        values = {**static, **hp}
        peak = values.pop("learning_rate")
        return make(lambda count: peak * unit(count), **values)

    def init_fn(params):
        raise NotImplementedError("use init_state: each member's hyperparameters go in its state")

    def update_fn(updates, state, params=None, **extra):
        updates, new_inner = inner(state.hp).update(updates, state.inner, params, **extra)
        return updates, HyperState(state.hp, new_inner)

    return optax.GradientTransformation(init_fn, update_fn), inner


def split_traced(settings: list[dict], traced_ok: bool) -> tuple[list[str], list[dict]]:
    """(names traced per member, one static dict per member). Floats are traced when
    `traced_ok`; everything else is static and groups members into programs."""
    names = sorted(k for k, v in settings[0].items()
                   if traced_ok and isinstance(v, float) and not isinstance(v, bool))
    names = names if "learning_rate" in names else []
    return names, [{k: v for k, v in s.items() if k not in names} for s in settings]


def init_state(prep: Prepared, inner, hp: dict, seeds: list[int]):
    """Stacked TrainState of members with `seeds` and hyperparameters `hp` ({name: [K]})."""
    setup = prep.setup
    keys = [jax.random.split(jax.random.key(s), 3) for s in seeds]
    params = drivers.stack([models.init_params(setup.model, k[0], setup.image_shape)
                            for k in keys])
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
    opt = jax.jit(jax.vmap(lambda p, h: HyperState(h, inner(h).init(models.split(p)[0]))))(params, hp)
    state = step.TrainState(jnp.zeros(len(seeds), jnp.int32), params, opt)
    return state, jnp.stack([k[1] for k in keys]), jnp.stack([k[2] for k in keys])


def order_for(prep: Prepared, data_keys, first: int, count: int):
    """int32 [K, count * batch]: each member's examples for steps first .. first + count - 1,
    epoch after epoch in the order `inputs.epoch_order` gives its data key."""
    batch, spe = prep.setup.config.batch_size, prep.setup.steps_per_epoch
    n = int(prep.train.labels.shape[0])
    epochs = range(first // spe, (first + count - 1) // spe + 1)
    perms = jax.vmap(lambda key, e: inputs.epoch_order(key, e, n)[:spe * batch], in_axes=(0, None))
    stream = jnp.concatenate([perms(data_keys, e + 1) for e in epochs], axis=1)
    offset = (first - epochs[0] * spe) * batch
    return stream[:, offset:offset + count * batch]


def train_group(prep: Prepared, make, settings: list[dict], seeds: list[int], traced: list[str],
                static: dict, *, stop_early: bool, score_test: bool) -> dict:
    """Trains len(seeds) members (member k: `settings[k]` with seed `seeds[k]`) as one program."""
    w, setup = prep.workload, prep.setup
    tx, inner = hyper_tx(make, prep.unit, static)
    setup = setup._replace(tx=tx)
    driver, per_call = backend.resolve_driver(prep.workload.driver)
    loop = backend.member_loop(w.members, w.model)
    k_models = len(seeds)
    mean = jnp.full(k_models, setup.mean, jnp.float32)
    std = jnp.full(k_models, setup.std, jnp.float32)
    state, data_keys, step_keys = init_state(prep, inner, {n: [s[n] for s in settings] for n in traced}, seeds)
    run = drivers.make_many_runner(setup, driver, mean, std, loop)
    score = scoring.make_member_scorer(setup, loop)
    val_rows = np.broadcast_to(np.arange(len(prep.val_labels), dtype=np.int32),
                               (k_models, len(prep.val_labels)))
    hits, curves, chunk_times = [None] * k_models, [[] for _ in seeds], []
    acc = drivers.stack([step.zero_metrics()] * k_models)
    for first in range(0, w.max_steps, w.eval_every):
        count = min(w.eval_every, w.max_steps - first)
        order = order_for(prep, data_keys, first, count)
        jax.block_until_ready(order)
        for start in range(0, count, per_call):
            began = time.perf_counter()
            state, acc = run(state, acc, prep.train, order, start, step_keys,
                             num_steps=min(per_call, count - start))
            jax.block_until_ready(state)
            chunk_times.append(time.perf_counter() - began)
        logits = score(state.params, prep.val, val_rows, mean, std)  # The clock is paused.
        accuracy = (logits.argmax(-1) == prep.val_labels).mean(-1)  # [K]
        for k in range(k_models):
            curves[k].append([first + count, float(accuracy[k])])
            if hits[k] is None and accuracy[k] >= w.target:
                hits[k] = first + count
        if stop_early and all(h is not None for h in hits):
            break
    test = None
    if score_test:
        rows = np.broadcast_to(np.arange(len(prep.test_labels), dtype=np.int32),
                               (k_models, len(prep.test_labels)))
        test = (score(state.params, prep.test, rows, mean, std).argmax(-1) == prep.test_labels).mean(-1)
    typical = float(np.median(chunk_times[1:])) if len(chunk_times) > 1 else 0.0
    return {"members": [{"setting": s, "seed": seed, "hit_step": h, "curve": c,
                         "final_val_accuracy": c[-1][1],
                         "test_accuracy": None if test is None else float(test[k])}
                        for k, (s, seed, h, c) in enumerate(zip(settings, seeds, hits, curves))],
            "compile_seconds": max(0.0, chunk_times[0] - typical),
            "train_seconds": float(sum(chunk_times)), "steps": curves[0][-1][0]}


def train_members(prep: Prepared, make, settings: list[dict], seeds: list[int], *,
                  stop_early: bool = True, score_test: bool = False) -> dict:
    """Member k: `settings[k]` with seed `seeds[k]`; as few programs as the settings allow."""
    traced, statics = split_traced(settings, traced_ok=traceable(prep, make, settings[0]))
    groups = {}
    for k, s in enumerate(statics):
        groups.setdefault(repr(sorted(s.items())), []).append(k)
    out = {"members": [None] * len(seeds), "programs": [], "traced": traced}
    for ks in groups.values():
        result = train_group(prep, make, [settings[k] for k in ks], [seeds[k] for k in ks],
                             traced, statics[ks[0]], stop_early=stop_early, score_test=score_test)
        for k, m in zip(ks, result.pop("members")):
            out["members"][k] = m
        out["programs"].append({"members": len(ks), **result})
    return out


def traceable(prep: Prepared, make, setting: dict) -> bool:
    """Whether `make` builds and steps with its float hyperparameters traced (abstractly)."""
    traced, (static,) = split_traced([setting], True)
    if not traced:
        return False
    _, inner = hyper_tx(make, prep.unit, static)
    params = jax.eval_shape(lambda key: prep.setup.model.init(key, prep.setup.image_shape),
                            jax.random.key(0))
    hp = {n: jax.ShapeDtypeStruct((), jnp.float32) for n in traced}

    def one_step(params, hp):
        tx = inner(hp)
        return tx.update(params, tx.init(params), params)

    try:
        jax.eval_shape(one_step, params, hp)
        return True
    except Exception:  # The factory needs Python numbers: one program per setting instead.
        return False


def step_seconds(prep: Prepared, contenders: dict, rounds: int = 5) -> dict:
    """{name: {"step_seconds", "compile_seconds"}} of one model alone per contender
    ({name: (make, setting)}), with `drivers.make_chunk_runner` as training drives it. The
    contenders are timed in turn, `rounds` times each, and the median kept, so that load from
    elsewhere on the machine falls on all of them alike."""
    driver, per_call = backend.resolve_driver(prep.workload.driver)
    steps = max(per_call, min(48, prep.setup.steps_per_epoch) // per_call * per_call)
    order = inputs.epoch_order(jax.random.key(1), 1, int(prep.train.labels.shape[0]))
    live, compile_seconds = {}, {}
    for name, (make, setting) in contenders.items():
        values = dict(setting)
        peak = values.pop("learning_rate")
        setup = prep.setup._replace(tx=make(lambda count: peak * prep.unit(count), **values))
        run = drivers.make_chunk_runner(setup, driver)
        state, acc = step.init_state(setup, jax.random.key(0)), step.zero_metrics()
        times = []
        for _ in range(2):
            began = time.perf_counter()
            state, acc = run(state, acc, prep.train, order, 0, jax.random.key(2), num_steps=per_call)
            jax.block_until_ready(state)
            times.append(time.perf_counter() - began)
        compile_seconds[name] = max(0.0, times[0] - times[1])
        live[name] = [run, state, acc, []]
    for _ in range(rounds):
        for name, entry in live.items():
            run, state, acc, seconds = entry
            began = time.perf_counter()
            for start in range(0, steps, per_call):
                state, acc = run(state, acc, prep.train, order, start, jax.random.key(2),
                                 num_steps=per_call)
            jax.block_until_ready(state)
            seconds.append((time.perf_counter() - began) / steps)
            entry[1], entry[2] = state, acc
    return {name: {"step_seconds": float(np.median(entry[3])),
                   "compile_seconds": compile_seconds[name]} for name, entry in live.items()}
