"""The contract items of `check_optimizer`: each returns a one-line reason it passed or raises
`Failed`. (The convergence items are in `convergence`.)

Each takes an `optax.GradientTransformation` (or, for the items that vary the learning rate or
other factory arguments, `make(learning_rate, **kwargs) -> tx`) and exercises it on a small
pytree, {"w": [4, 3], "b": [3]}.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdigits.contract import differences, leaf_info, update_problems

EXTRA_KWARG = "jaxdigits_unused_kwarg"


class Failed(Exception):
    """An item's failure, with its reason as the message."""


def _tree(seed: int, dtype=jnp.float32):
    kw, kb = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(kw, (4, 3)).astype(dtype), "b": jax.random.normal(kb, (3,)).astype(dtype)}


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
        why = differences(state0, state1) or ["the inputs' avals changed"]
        raise Failed(f"the second call compiled again: {'; '.join(why)}")
    return "compiles once; the second call reuses it"


def state_stable(tx) -> str:
    """The state after three steps has the tree structure, shapes and dtypes of the initial one."""
    params = _tree(0)
    state0 = tx.init(params)
    _, state3 = _steps(jax.jit(tx.update), params, state0)
    problems = differences(state0, state3, weak=False)
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
    injected = optax.inject_hyperparams(lambda learning_rate: make(learning_rate))(
        learning_rate=0.01)
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




def updates_match(tx) -> str:
    """update returns one update per parameter, with the parameter's shape and dtype."""
    params = _tree(0)
    updates, _ = tx.update(_tree(1), tx.init(params), params)
    problems = update_problems(updates, params)
    if problems:
        raise Failed("; ".join(problems))
    return "one update per parameter, of its shape and dtype"


def multi_steps(tx) -> str:
    """optax.MultiSteps(tx, 2) over gradients g1, g2 emits zeros, then steps as tx does on
    (g1 + g2) / 2; twice, so the inner state carries over."""
    ms, params = optax.MultiSteps(tx, every_k_schedule=2), _tree(0)
    ms_update, ref_update = jax.jit(ms.update), jax.jit(tx.update)
    state, ref_state, ref_params = ms.init(params), tx.init(params), params
    for k in range(2):
        g1, g2 = _tree(2 * k + 1), _tree(2 * k + 2)
        first, state = ms_update(g1, state, params)
        if any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(first)):
            raise Failed("MultiSteps emitted a non-zero update before its second mini-step")
        accumulated, state = ms_update(g2, state, params)
        mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
        reference, ref_state = ref_update(mean, ref_state, ref_params)
        if not _allclose(accumulated, reference):
            raise Failed(f"accumulated step {k + 1} differs from one step on the mean gradient")
        params = optax.apply_updates(params, accumulated)
        ref_params = optax.apply_updates(ref_params, reference)
    return "two steps over 2 accumulated gradients equal two steps on their means"


def state_dtype(make, names) -> str:
    """Each `*_dtype` argument of the factory (`names`), set to bfloat16, makes some state
    leaves bfloat16 for float32 params, and they stay bfloat16 over three steps."""
    if not names:
        return "the factory has no *_dtype argument (nothing declared to keep)"
    params, kept = _tree(0), 0
    for name in names:
        tx = make(0.01, **{name: jnp.bfloat16})
        state0 = tx.init(params)
        declared = [k for k, (_, dtype, _) in leaf_info(state0).items() if dtype == jnp.bfloat16]
        if not declared:
            raise Failed(f"{name}=bfloat16 was ignored: no state leaf is bfloat16")
        _, state3 = _steps(jax.jit(tx.update), params, state0)
        after = leaf_info(state3)
        for k in declared:
            if after[k][1] != jnp.bfloat16:
                raise Failed(f"state{k}, declared bfloat16 by {name}, became "
                             f"{jnp.dtype(after[k][1]).name} within three steps")
        kept += len(declared)
    return f"{', '.join(names)}=bfloat16: {kept} state leaves stay bfloat16 over three steps"
