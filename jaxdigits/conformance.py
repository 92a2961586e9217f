"""The items of `check_optimizer`: each returns a one-line reason it passed or raises `Failed`.

Each takes an `optax.GradientTransformation` (or, for the items that vary the learning rate,
`make(learning_rate) -> tx`) and exercises it on a small pytree, {"w": [4, 3], "b": [3]}.
"""

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

QUADRATIC_STEPS = 500
ROSENBROCK_STEPS = 10000
MNIST_EXAMPLES, MNIST_BATCH, MNIST_EPOCHS, MNIST_TEST = 4096, 128, 2, 2000
MNIST_FLOOR = 0.70  # Chance: 0.10; the built-ins reach 0.795-0.84, Lion 0.72 (BUILD_NOTES.md).
EXTRA_KWARG = "jaxdigits_unused_kwarg"


class Failed(Exception):
    """An item's failure, with its reason as the message."""


def _tree(seed: int, dtype=jnp.float32):
    kw, kb = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(kw, (4, 3)).astype(dtype), "b": jax.random.normal(kb, (3,)).astype(dtype)}


def _leaf_info(tree) -> dict:
    """{path: (shape, dtype, weak_type)} for each leaf: what jit's cache keys on."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): (jnp.shape(x), jnp.result_type(x), getattr(x, "weak_type", False))
            for path, x in flat}


def _describe(info) -> str:
    shape, dtype, weak = info
    return f"{'weak ' if weak else ''}{dtype}{list(shape)}"


def _differences(before, after, *, weak: bool = True) -> list[str]:
    if jax.tree.structure(before) != jax.tree.structure(after):
        return [f"the tree structure changed from {jax.tree.structure(before)} to {jax.tree.structure(after)}"]
    a, b = _leaf_info(before), _leaf_info(after)
    strip = (lambda i: i) if weak else (lambda i: i[:2])
    return [f"state{k} went from {_describe(a[k])} to {_describe(b[k])}" for k in a if strip(a[k]) != strip(b[k])]


def _allclose(x, y, rtol=1e-5, atol=1e-6) -> bool:
    return all(np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol, equal_nan=True)
               for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def _steps(update, params, state, n=3):
    """n updates with gradients _tree(1..n); returns the list of updates and the last state."""
    updates_seen = []
    for i in range(1, n + 1):
        updates, state = update(_tree(i, jax.tree.leaves(params)[0].dtype), state, params)
        params = optax.apply_updates(params, updates)
        updates_seen.append(updates)
    return updates_seen, state


def pure(tx) -> str:
    """Same inputs, same outputs; and jit changes nothing (no Python state read or written)."""
    params = _tree(0)
    if not _allclose(tx.init(params), tx.init(params), rtol=0, atol=0):
        raise Failed("init gave two different states for the same params")
    state = tx.init(params)
    first, second = tx.update(_tree(1), state, params), tx.update(_tree(1), state, params)
    if not _allclose(first, second, rtol=0, atol=0):
        raise Failed("update gave different results for the same inputs (state kept in Python?)")
    eager, _ = _steps(tx.update, params, tx.init(params))
    jitted, _ = _steps(jax.jit(tx.update), params, tx.init(params))
    if not _allclose(eager, jitted):
        raise Failed("three jitted steps differ from three eager ones (Python side effects at trace time?)")
    return "same inputs give the same outputs, eager and under jit"


def jits_once(tx) -> str:
    """A jitted update traces once: the state it returns has the avals it was given."""
    traces = []

    def update_fn(updates, state, params):
        traces.append(1)
        return tx.update(updates, state, params)

    step = jax.jit(update_fn)
    params = _tree(0)
    state0 = tx.init(params)
    updates, state1 = step(_tree(1), state0, params)
    step(_tree(2), state1, optax.apply_updates(params, updates))
    if len(traces) > 1:
        why = _differences(state0, state1) or ["the inputs' avals changed"]
        raise Failed(f"the second call compiled again: {'; '.join(why)}")
    return "compiles once; the second call reuses it"


def state_stable(tx) -> str:
    """The state after three steps has the tree structure, shapes and dtypes of the initial one."""
    params = _tree(0)
    state0 = tx.init(params)
    _, state3 = _steps(jax.jit(tx.update), params, state0)
    problems = _differences(state0, state3, weak=False)
    if problems:
        raise Failed("; ".join(problems))
    return f"{len(jax.tree.leaves(state0))} state leaves keep structure, shapes and dtypes"


def dtypes(tx) -> str:
    """float32 and bfloat16 parameters get updates, and stay, in their own dtype."""
    for dtype in (jnp.float32, jnp.bfloat16):
        params = _tree(0, dtype)
        state = tx.init(params)
        for i in range(1, 4):
            updates, state = jax.jit(tx.update)(_tree(i, dtype), state, params)
            for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
                if u.dtype != dtype:
                    raise Failed(f"{jnp.dtype(dtype).name} params got {u.dtype} updates at "
                                 f"{jax.tree_util.keystr(path)}")
            params = optax.apply_updates(params, updates)
        if any(p.dtype != dtype for p in jax.tree.leaves(params)):
            raise Failed(f"{jnp.dtype(dtype).name} params changed dtype")
        if not all(bool(jnp.isfinite(p).all()) for p in jax.tree.leaves(params)):
            raise Failed(f"{jnp.dtype(dtype).name} params became non-finite in three steps")
    return "float32 and bfloat16 params get updates in their dtype"


def extra_kwargs(tx) -> str:
    """update(..., some_unknown_keyword=x) is accepted and changes nothing."""
    params, grads = _tree(0), _tree(1)
    state = tx.init(params)
    plain = tx.update(grads, state, params)
    try:
        extra = tx.update(grads, state, params, **{EXTRA_KWARG: jnp.ones(3)})
    except TypeError as e:
        raise Failed(f"update(..., {EXTRA_KWARG}=...) raised TypeError: {e} (return it through "
                     "optax.chain, or accept **extra_args)") from None
    if not _allclose(plain, tx.update(grads, state, params), rtol=0, atol=0):
        return "accepts an unknown keyword argument (not compared: update is not pure)"
    if not _allclose(plain, extra, rtol=0, atol=0):
        raise Failed("an unknown keyword argument changed the result")
    return "accepts and ignores an unknown keyword argument"


def inject_hyperparams(make) -> str:
    """optax.inject_hyperparams(make)(learning_rate=a) steps like make(a), and follows a new rate."""
    params = _tree(0)
    injected = optax.inject_hyperparams(make)(learning_rate=0.01)
    ours, state = _steps(jax.jit(injected.update), params, injected.init(params))
    reference, _ = _steps(jax.jit(make(0.01).update), params, make(0.01).init(params))
    if not _allclose(ours, reference):
        raise Failed("under inject_hyperparams the updates differ from the plain optimizer's")
    state.hyperparams["learning_rate"] = jnp.asarray(0.05, state.hyperparams["learning_rate"].dtype)
    changed, _ = jax.jit(injected.update)(_tree(9), state, params)
    same, _ = jax.jit(injected.update)(_tree(9), _with_rate(state, 0.01), params)
    if _allclose(changed, same):
        raise Failed("changing the injected learning rate did not change the update")
    return "matches the plain optimizer and follows a changed learning rate"


def _with_rate(state, rate):
    hyperparams = dict(state.hyperparams, learning_rate=jnp.asarray(rate, jnp.float32))
    return state._replace(hyperparams=hyperparams)


def _minimise(tx, loss, x0, steps: int):
    def body(_, carry):
        x, s = carry
        updates, s = tx.update(jax.grad(loss)(x), s, x)
        return optax.apply_updates(x, updates), s

    return jax.lax.fori_loop(0, steps, body, (x0, tx.init(x0)))[0]


class Problem(NamedTuple):
    """A convergence item: `run(tx, data)` -> a jax scalar (traceable), `judge(value)` -> (ok, reason).

    `data` goes into the compiled function as an argument: captured arrays would be folded into
    the program as constants, which compiles slowly.
    """
    run: Callable
    judge: Callable
    data: Any = None


def _quadratic_run(tx, data=None):
    """f(x) = sum_i 0.5 * l_i (x_i - c_i)**2 in 10 dimensions, curvatures l_i from 1 to 10, from
    x0 = 0; the item passes if |x - c| <= 0.01 |x0 - c| after QUADRATIC_STEPS steps."""
    curvature, c = jnp.logspace(0.0, 1.0, 10), jnp.linspace(-1.0, 1.0, 10)
    loss = lambda p: 0.5 * jnp.sum(curvature * (p["x"] - c) ** 2)
    x = _minimise(tx, loss, {"x": jnp.zeros(10)}, QUADRATIC_STEPS)["x"]
    return jnp.linalg.norm(x - c) / jnp.linalg.norm(c)


QUADRATIC = Problem(_quadratic_run, lambda r: (
    r <= 1e-2, f"|x - x*| / |x0 - x*| = {r:.2g} after {QUADRATIC_STEPS} steps (needs <= 0.01)"))


def _rosenbrock_run(tx, data=None):
    """f(x, y) = (1 - x)**2 + 100 (y - x**2)**2 from (-1.2, 1), the curved narrow valley; the
    item passes if within 0.05 of the minimum (1, 1) after ROSENBROCK_STEPS steps."""
    loss = lambda p: (1 - p["xy"][0]) ** 2 + 100 * (p["xy"][1] - p["xy"][0] ** 2) ** 2
    xy = _minimise(tx, loss, {"xy": jnp.array([-1.2, 1.0])}, ROSENBROCK_STEPS)["xy"]
    return jnp.linalg.norm(xy - 1.0)


ROSENBROCK = Problem(_rosenbrock_run, lambda d: (
    d <= 0.05, f"{d:.2g} from the minimum (1, 1) after {ROSENBROCK_STEPS} steps (needs <= 0.05)"))


@functools.lru_cache(maxsize=1)
def _bundled_mnist():
    from jaxdigits import data

    return data.load_dataset("mnist", allow_download=False)


def mnist_problem(ds=None) -> Problem:
    """Softmax regression on the first MNIST_EXAMPLES training images, MNIST_EPOCHS epochs of
    MNIST_BATCH, scored on the first MNIST_TEST test images: passes at MNIST_FLOOR or above."""
    from jaxdigits import losses, models

    ds = ds or _bundled_mnist()
    model = models.make_model("linear")
    prep = lambda x: (x.astype(np.float32) / 255.0 - 0.1307) / 0.3081  # On the host: no compiles.
    # Batch b of epoch e: a fixed shuffle of the subset, the same for every optimizer and rate.
    rng = np.random.default_rng(0)
    batches = np.concatenate([rng.permutation(MNIST_EXAMPLES) for _ in range(MNIST_EPOCHS)])
    data = {"images": prep(ds.train_images[:MNIST_EXAMPLES]),  # [N, 28, 28, 1]
            "labels": ds.train_labels[:MNIST_EXAMPLES],
            "test_images": prep(ds.test_images[:MNIST_TEST]), "test_labels": ds.test_labels[:MNIST_TEST],
            "batches": batches.reshape(-1, MNIST_BATCH).astype(np.int32)}  # [steps, batch]

    def loss_fn(params, x, y):
        return losses.cross_entropy(logits=model.apply(params, x), labels=y).mean()

    def run(tx, data):
        def body(step, carry):
            params, state = carry
            idx = data["batches"][step]  # [batch]
            grads = jax.grad(loss_fn)(params, data["images"][idx], data["labels"][idx])
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        params = model.init(jax.random.key(0), (28, 28, 1))
        params, _ = jax.lax.fori_loop(0, batches.shape[0], body, (params, tx.init(params)))
        logits = model.apply(params, data["test_images"])  # [MNIST_TEST, 10]
        return (logits.argmax(-1) == data["test_labels"]).mean()

    budget = f"{MNIST_EPOCHS} epochs of {MNIST_EXAMPLES} images"
    judge = lambda a: (a >= MNIST_FLOOR, f"test accuracy {100 * a:.1f}% after {budget} "
                                         f"(needs >= {100 * MNIST_FLOOR:.0f}%)")
    return Problem(run, judge, data)


def first_rate(problem: Problem, make, rates) -> str:
    """The first learning rate in `rates` with which `problem` passes; fails with each one's reason.

    All rates run at once, vmapped over a traced learning rate, where `make` accepts one (the
    inject_hyperparams item asks that anyway); otherwise one compiled run per rate.
    """
    rates = tuple(float(r) for r in rates)
    try:
        run_all = jax.vmap(lambda lr, data: problem.run(make(lr), data), in_axes=(0, None))
        values = jax.jit(run_all)(jnp.asarray(rates, jnp.float32), problem.data)
    except Exception:  # The factory needs a Python float: fall back to one run per rate.
        values = [jax.jit(lambda data: problem.run(make(rate), data))(problem.data) for rate in rates]
    reasons = []
    for rate, value in zip(rates, values):
        ok, reason = problem.judge(float(value))
        if ok:
            return f"lr {rate:g}: {reason}"
        reasons.append(f"lr {rate:g}: {reason}")
    raise Failed(reasons[0] if len(reasons) == 1 else f"no learning rate passed ({'; '.join(reasons)})")
