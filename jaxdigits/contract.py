"""The optimizer contract, checked abstractly: `verify(tx, params)` before a run does any work.

An optax optimizer is `init(params) -> state` and `update(grads, state, params) -> (updates,
state)`. Training needs three things of it: both run on the model's parameters, `updates` has the
parameters' tree, shapes and dtypes, and the state keeps its tree, shapes and dtypes from step to
step (or the compiled step is compiled again on every call). `verify` traces init and one update
with `jax.eval_shape`, so it costs a trace and no computation, and turns any breach into one
`UserError` sentence. The conformance kit (`conformance`, `check_optimizer`) shares its helpers.
"""

import jax
import jax.numpy as jnp

from jaxdigits.errors import UserError


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    return (str(e).strip().splitlines() or [""])[0][:200]


def abstract(tree):
    """`tree` with each leaf replaced by its jax.ShapeDtypeStruct (leaves may already be ones)."""
    as_struct = lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(
        jnp.shape(x), jnp.result_type(x))
    return jax.tree.map(as_struct, tree)


def leaf_info(tree) -> dict:
    """{path: (shape, dtype, weak_type)} for each leaf: what jit's cache keys on."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): (tuple(jnp.shape(x)), jnp.dtype(x.dtype) if hasattr(x, "dtype")
                                         else jnp.result_type(x), getattr(x, "weak_type", False))
            for path, x in flat}


def describe(info) -> str:
    shape, dtype, weak = info
    return f"{'weak ' if weak else ''}{jnp.dtype(dtype).name}{list(shape)}"


def differences(before, after, *, weak: bool = True, what: str = "state") -> list[str]:
    """How the tree `after` differs from `before`: structure, or each leaf's shape and dtype (and
    weak type, if `weak`), as phrases like "state['mu'] went from float32[3] to float32[4]"."""
    if jax.tree.structure(before) != jax.tree.structure(after):
        return [f"the {what}'s tree changed from {jax.tree.structure(before)} to {jax.tree.structure(after)}"]
    a, b = leaf_info(before), leaf_info(after)
    strip = (lambda i: i) if weak else (lambda i: i[:2])
    return [f"{what}{k} went from {describe(a[k])} to {describe(b[k])}"
            for k in a if strip(a[k]) != strip(b[k])]


def update_problems(updates, params) -> list[str]:
    """How `updates` differs from `params` (one update per parameter, same shape and dtype)."""
    if jax.tree.structure(updates) != jax.tree.structure(params):
        return [f"the updates' tree {jax.tree.structure(updates)} is not the parameters' "
                f"{jax.tree.structure(params)}"]
    u, p = leaf_info(updates), leaf_info(params)
    return [f"updates{k} is {describe(u[k][:2] + (False,))} but the parameter is "
            f"{describe(p[k][:2] + (False,))}" for k in p if u[k][:2] != p[k][:2]]


def verify(tx, params, name: str = "the optimizer") -> None:
    """Raises UserError, in one sentence naming `name`, if `tx`'s init or update raises on
    `params` (arrays or jax.ShapeDtypeStructs), if its updates differ from the parameters in
    tree, shape or dtype, or if its state changes tree, shape or dtype after one update."""
    params = abstract(params)
    try:
        state = jax.eval_shape(tx.init, params)
    except Exception as e:  # The optimizer's own code.
        raise UserError(f"{name}'s init raised {type(e).__name__}: {first_line(e)}.") from None
    try:
        updates, new_state = jax.eval_shape(tx.update, params, state, params)
    except Exception as e:
        raise UserError(f"{name}'s update raised {type(e).__name__}: {first_line(e)}.") from None
    problems = update_problems(updates, params)
    if problems:
        raise UserError(f"{name}'s update returns updates that do not match the parameters: "
                        f"{problems[0]}; return one update per parameter, of its shape and dtype.")
    problems = differences(state, new_state, weak=False)
    if problems:
        raise UserError(f"{name}'s state changes after one update ({problems[0]}), so every "
                        "training step would compile again; keep the state's tree, shapes and "
                        "dtypes fixed.")
