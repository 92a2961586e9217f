"""How steps are driven: several train steps per compiled call, and the host loop of an epoch.

A driver turns the pure step into one jitted call that runs `num_steps` steps: "unroll" writes
them out one after another in the program, "scan" loops with `lax.scan`, "step" is unroll with one
step per call. Which one a backend gets by default is `backend.default_driver`'s choice.
"""

import jax
import jax.numpy as jnp

from jaxdigits import backend, parallel
from jaxdigits.config import Config
from jaxdigits.inputs import epoch_order, order_program
from jaxdigits.metrics import Progress
from jaxdigits.step import (Setup, check_finite, compiler_options, make_batch_step, summarise,
                            zero_metrics)


def resolve_driver(config: Config) -> tuple[str, int]:
    """(driver, steps per call) of `config` on this backend."""
    return backend.resolve_driver(config.driver, config.steps_per_call)


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
    The state and accumulator buffers are donated. With a `mesh` of several devices each device
    gathers and trains on its slice of every batch and XLA all-reduces the gradients; state and
    data stay replicated (`jaxdigits.parallel`).
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


def compile_ahead(ahead, run_chunk, setup: Setup, state, train, steps_per_call: int) -> None:
    """Compiles with `ahead` (`jaxdigits.ahead`) an epoch's programs for `state` and the `train`
    data (abstract or concrete): the epoch order and `run_chunk`'s first call of the epoch."""
    n = int(train.labels.shape[0])
    key = jax.eval_shape(jax.random.key, 0)
    ahead.compile(order_program(), key, 1, n)
    ahead.compile(run_chunk, state, jax.eval_shape(zero_metrics), train,
                  jax.ShapeDtypeStruct((n,), jnp.int32), 0, key,
                  num_steps=min(steps_per_call, setup.steps_per_epoch))


def stack(trees):
    """Stacks pytrees of the same structure along a new leading (member) axis."""
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def take(tree, k: int):
    """Member k of a stacked tree (the inverse of `stack`)."""
    return jax.tree.map(lambda x: x[k], tree)


def make_many_runner(setup: Setup, driver: str, mean, std, loop: bool = False):
    """`make_chunk_runner` for K members: `order` int32 [K, n], `step_keys` [K], `mean` and `std`
    float32 [K]; every member's step is the single run's (`make_batch_step`).

    `loop`: each step writes the members' steps out one after another (K copies of the single
    run's step in the one program) instead of one `jax.vmap`'d step; the same math either way.
    """
    single = make_batch_step(setup)
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

        return run_steps(body, (state, acc), num_steps, driver)

    return jax.jit(run, static_argnames="num_steps", donate_argnums=(0, 1),
                   compiler_options=compiler_options(setup))


def run_epoch(run_chunk, state, acc, data, order, keys, setup: Setup, steps_per_call: int,
              progress: Progress, show=None):
    """One epoch of `setup.steps_per_epoch` steps, `steps_per_call` per call of `run_chunk`.

    Returns (state, acc). When the progress bar is due, `show(acc)` gives its figures (and may
    raise to stop a diverged run early). The bar is closed at the end.
    """
    batch = setup.config.batch_size
    try:
        for call, start in enumerate(range(0, setup.steps_per_epoch, steps_per_call)):
            num = min(steps_per_call, setup.steps_per_epoch - start)
            state, acc = run_chunk(state, acc, data, order, start, keys, num_steps=num)
            parallel.settle(call, acc)
            if progress.due():
                progress.update((start + num) * batch, **(show(acc) if show else {}))
    finally:
        progress.close()
    return state, acc


def train_epoch(run_chunk, state, train, data_key, step_key, epoch, setup, steps_per_call, quiet):
    """One epoch of a single run; returns (state, train loss/accuracy/count)."""
    perm = epoch_order(data_key, epoch, int(train.labels.shape[0]))

    def show(acc):
        metrics = summarise(acc)
        check_finite(metrics["loss"], epoch)
        return {"loss": f"{metrics['loss']:.4f}", "acc": f"{metrics['accuracy']:.4f}"}

    progress = Progress(setup.steps_per_epoch * setup.config.batch_size,
                        f"epoch {epoch}/{setup.config.epochs}", quiet)
    state, acc = run_epoch(run_chunk, state, zero_metrics(), train, perm, step_key, setup,
                           steps_per_call, progress, show)
    metrics = summarise(acc)
    check_finite(metrics["loss"], epoch)
    return state, metrics
