"""The convergence items of `check_optimizer`: a quadratic bowl, Rosenbrock's valley, MNIST.

Each is a `Problem` run for several learning rates at once (`first_rate`); an optimizer passes
with the first rate that reaches the item's bar. `make(learning_rate) -> tx` is the optimizer.
"""

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdigits.conformance import Failed

QUADRATIC_STEPS = 500
ROSENBROCK_STEPS = 10000
MNIST_EXAMPLES, MNIST_BATCH, MNIST_EPOCHS, MNIST_TEST = 4096, 128, 2, 2000
MNIST_FLOOR = 0.70  # Chance: 0.10; the built-ins reach 0.795-0.84, Lion 0.72 (BUILD_NOTES.md).


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
