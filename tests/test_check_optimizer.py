"""The conformance kit: built-ins pass every item; each broken optimizer fails its own item."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import pytest

from conftest import run_cli
from jaxdigits import check_optimizer, optimizers
from jaxdigits.errors import UserError

CONTRACT = ("updates", "pure", "jit", "state", "dtypes", "state_dtype", "extra_kwargs",
            "inject_hyperparams", "multi_steps")
CONVERGENCE = ("quadratic", "rosenbrock", "mnist")


def _sgd_like(step_fn, init_fn=lambda params: optax.EmptyState(), chain=True):
    """A transform whose update is `step_fn(grads, state, params) -> (updates, state)`."""
    tx = optax.GradientTransformation(init_fn, step_fn)
    return optax.chain(tx) if chain else tx


def impure(learning_rate):
    calls = []  # Python state: the step size shrinks with every call, but only eagerly.

    def update(grads, state, params=None):
        calls.append(1)
        return jax.tree.map(lambda g: -learning_rate / len(calls) * g, grads), state
    return _sgd_like(update)


class CountState(NamedTuple):
    count: jax.Array


def recompiles(learning_rate):
    # init makes a weakly typed float32 count, update a strongly typed one: jit compiles twice.
    init = lambda params: CountState(jnp.asarray(0.0))
    update = lambda grads, state, params=None: (
        jax.tree.map(lambda g: -learning_rate * g, grads), CountState(state.count.astype(jnp.float32) + 1))
    return _sgd_like(update, init)


def growing_state(learning_rate):
    init = lambda params: CountState(jnp.zeros((0,)))
    update = lambda grads, state, params=None: (
        jax.tree.map(lambda g: -learning_rate * g, grads), CountState(jnp.append(state.count, 1.0)))
    return _sgd_like(update, init)


def upcasts(learning_rate):
    update = lambda grads, state, params=None: (
        jax.tree.map(lambda g: g * jnp.float32(-learning_rate), grads), state)
    return _sgd_like(update)


def rigid(learning_rate):
    update = lambda grads, state, params=None: (jax.tree.map(lambda g: -learning_rate * g, grads), state)
    return _sgd_like(update, chain=False)  # Bare: update(..., extra=...) is a TypeError.


def python_rate(learning_rate):
    scale = 1.0 if learning_rate < 1 else 0.5  # Python control flow on a traced rate fails.
    return optax.sgd(learning_rate * scale)


def ascent(learning_rate):
    return optax.sgd(-learning_rate)


def frozen_matrices(learning_rate):
    # Trains vectors only: fine on the quadratic and Rosenbrock, useless on MNIST's kernel.
    update = lambda grads, state, params=None: (
        jax.tree.map(lambda g: -learning_rate * g * (g.ndim < 2), grads), state)
    return _sgd_like(update)


FULLY_CHECKED = ["scratch_sgd", "scratch_heavy_ball", "scratch_adam"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FULLY_CHECKED)
def test_built_ins_pass_every_item(name):
    report = check_optimizer.check(name)
    assert report.passed, str(report)
    assert [i.name for i in report.items] == ["builds", *CONTRACT, *CONVERGENCE]


@pytest.mark.slow
def test_every_built_in_keeps_the_contract():
    """The contract items for all of them; the convergence items of each are in BUILD_NOTES.md
    (`python -m jaxdigits.check_optimizer NAME` for every registered name), to keep tests fast.
    FULLY_CHECKED pass every item, the contract's included, in test_built_ins_pass_every_item."""
    assert set(FULLY_CHECKED) <= set(optimizers.OPTIMIZERS)
    for name in set(optimizers.OPTIMIZERS) - set(FULLY_CHECKED):
        report = check_optimizer.check(name, skip=CONVERGENCE)
        assert report.passed, f"{name}:\n{report}"


@pytest.mark.parametrize("make, failing", [
    (impure, {"pure", "multi_steps"}),
    (recompiles, {"jit"}),
    (growing_state, {"state"}),
    (upcasts, {"dtypes"}),
    (rigid, {"extra_kwargs"}),
    (python_rate, {"builds"}),
    pytest.param(ascent, {"quadratic", "rosenbrock", "mnist"}, marks=pytest.mark.slow),
    pytest.param(frozen_matrices, {"mnist"}, marks=pytest.mark.slow),  # Trains on MNIST.
])
def test_broken_optimizers_fail_their_item(make, failing):
    skip = () if failing & {"quadratic", "rosenbrock", "mnist"} else CONVERGENCE
    report = check_optimizer.check(make, skip=skip)
    failed = {i.name for i in report.items if not i.passed}
    # growing_state also recompiles (its shape changes), so "jit" fails with "state" there.
    assert failing <= failed and failed - failing <= ({"jit"} if make is growing_state else set()), str(report)
    assert not report.passed


def test_reasons_name_the_problem():
    items = {i.name: i for i in check_optimizer.check(recompiles, skip=CONVERGENCE).items}
    assert "went from weak float32[] to float32[]" in items["jit"].reason
    items = {i.name: i for i in check_optimizer.check(upcasts, skip=CONVERGENCE).items}
    assert "bfloat16 params got float32 updates" in items["dtypes"].reason
    report = check_optimizer.check(lambda learning_rate: "not an optimizer")
    assert [(i.name, i.passed) for i in report.items] == [("builds", False)]
    with pytest.raises(UserError, match="unknown optimizer 'lbfgs'"):
        check_optimizer.check("lbfgs")


@pytest.mark.slow
def test_cli_exit_codes(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import optax\ndef ascent(learning_rate):\n    return optax.sgd(-learning_rate)\n")
    proc = run_cli("jaxdigits.check_optimizer", f"{path}:ascent", "--skip=rosenbrock,mnist")
    assert proc.returncode == 1, proc.stderr
    assert "PASS  pure" in proc.stdout and "FAIL  quadratic" in proc.stdout
    assert "10/11 items passed." in proc.stdout
    proc = run_cli("jaxdigits.check_optimizer", f"{path}:nothing")
    assert proc.returncode == 2 and "has no function 'nothing'" in proc.stderr


def wrong_tree(learning_rate):
    update = lambda grads, state, params=None: ({"w": -learning_rate * grads["w"]}, state)
    return _sgd_like(update)  # Drops the bias's update.


def mu_dtype_ignored(learning_rate, mu_dtype=None):
    # Declares mu_dtype at init but computes the momentum in float32, so it does not stay.
    init = lambda params: CountState(jax.tree.map(lambda p: jnp.zeros_like(p, mu_dtype), params))
    update = lambda grads, state, params=None: (
        jax.tree.map(lambda g: -learning_rate * g, grads),
        CountState(jax.tree.map(lambda m, g: 0.9 * m.astype(jnp.float32) + g, state.count, grads)))
    return _sgd_like(update, init)


def adam_declared(learning_rate, mu_dtype=None):
    return optax.adam(learning_rate, mu_dtype=mu_dtype)


def _only(*names):
    return tuple(set(check_optimizer.ITEMS) - set(names))


def test_new_items_name_the_problem():
    items = {i.name: i for i in check_optimizer.check(wrong_tree, skip=_only("updates")).items}
    assert "the updates' tree" in items["updates"].reason and "is not the parameters'" in items["updates"].reason
    assert not items["updates"].passed
    items = {i.name: i for i in check_optimizer.check(mu_dtype_ignored, skip=_only("state_dtype")).items}
    assert not items["state_dtype"].passed
    assert "declared bfloat16 by mu_dtype, became float32" in items["state_dtype"].reason
    report = check_optimizer.check(adam_declared, skip=_only("state_dtype", "multi_steps"))
    assert report.passed, str(report)
    assert "mu_dtype=bfloat16: 2 state leaves stay bfloat16" in str(report)
    assert "equal two steps on their means" in str(report)


def test_unknown_skip_names_are_refused():
    with pytest.raises(UserError, match="--skip names no item 'mnsit'; the items are updates, pure"):
        check_optimizer.check("sgd", skip=("mnsit",))
