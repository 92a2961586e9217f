"""Classic full-batch algorithms as pure functions: EMA, Armijo gradient descent, guarded Newton.

The objective `f` maps a pytree `x` (or a flat array) to a scalar; the solvers flatten `x` with
`jax.flatten_util.ravel_pytree`, run a fixed number of iterations under `lax.scan` (so they jit
and vmap), stop moving once the gradient norm is below `tol`, and return the whole history, for
plotting convergence. Nothing here is stochastic: these are the algorithms the stochastic
optimizers in `pure_optim` descend from.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def ema_update(average, value, decay):
    """One step of the exponentially weighted moving average: m <- decay * m + (1 - decay) * v.

    Adam's two moments and RMSProp's second moment are this update applied to g and g**2.
    """
    return (1 - decay) * value + decay * average


def ema(values, decay: float, *, debias: bool = False):
    """The EMA of a sequence: values [T, ...] (a pytree of them) -> averages [T, ...].

        m_0 = 0,  m_t = decay * m_{t-1} + (1 - decay) * v_t,  t = 1..T
        debiased: m_t / (1 - decay**t), the weighted mean of v_1..v_t with weights decay**(t-i)
        (the zero start biases m_t towards 0 by exactly that factor; Adam's bias correction).
    """
    first = jax.tree.map(lambda v: jnp.zeros_like(v[0]), values)

    def step(m, v):
        m = jax.tree.map(lambda a, b: ema_update(a, b, decay), m, v)
        return m, m

    _, averages = jax.lax.scan(step, first, values)  # each leaf [T, ...]
    if not debias:
        return averages
    t = jnp.arange(1, jax.tree.leaves(values)[0].shape[0] + 1)
    correction = lambda a: a / (1 - decay ** t).reshape((-1,) + (1,) * (a.ndim - 1)).astype(a.dtype)
    return jax.tree.map(correction, averages)


class SolverResult(NamedTuple):
    x: Any  # The last iterate, structured like x0.
    values: jax.Array  # [num_steps + 1] f(x_k), k = 0..num_steps (constant once converged)
    grad_norms: jax.Array  # [num_steps + 1] ||grad f(x_k)||
    step_sizes: jax.Array  # [num_steps] the accepted t_k (0 once converged)
    steps_taken: jax.Array  # int32 [], iterations that moved x


def backtracking(f, x, fx, g, d, *, t0: float = 1.0, beta: float = 0.5, c: float = 1e-4,
                 max_backtracks: int = 40):
    """The Armijo step: the largest t = t0 * beta**j (j < max_backtracks) with

        f(x + t d) <= f(x) + c * t * <g, d>        (sufficient decrease; d must descend: <g, d> < 0)

    or 0.0 if none qualifies. `x`, `g`, `d` are flat arrays.
    """
    slope = jnp.vdot(g, d)
    ok = lambda t: f(x + t * d) <= fx + c * t * slope

    def cond(carry):
        t, j = carry
        return (j < max_backtracks) & ~ok(t)

    t, j = jax.lax.while_loop(cond, lambda carry: (carry[0] * beta, carry[1] + 1), (jnp.asarray(t0, x.dtype), 0))
    return jnp.where(ok(t), t, 0.0)


def _solve(direction_fn, f, x0, num_steps, tol, line_search) -> SolverResult:
    flat0, unravel = ravel_pytree(x0)
    flat_f = lambda v: f(unravel(v))
    value_and_grad = jax.value_and_grad(flat_f)

    def step(carry, _):
        x, fx, g, taken = carry
        done = jnp.linalg.norm(g) <= tol
        d = direction_fn(flat_f, x, g)
        t = jnp.where(done, 0.0, line_search(flat_f, x, fx, g, d))
        x = x + t * d
        fx, g = value_and_grad(x)
        taken = taken + (t > 0).astype(jnp.int32)
        return (x, fx, g, taken), (fx, jnp.linalg.norm(g), t)

    fx0, g0 = value_and_grad(flat0)
    (x, _, _, taken), (values, norms, ts) = jax.lax.scan(
        step, (flat0, fx0, g0, jnp.zeros([], jnp.int32)), length=num_steps)
    return SolverResult(unravel(x), jnp.concatenate([fx0[None], values]),
                        jnp.concatenate([jnp.linalg.norm(g0)[None], norms]), ts, taken)


def gradient_descent(f: Callable, x0, *, num_steps: int = 100, tol: float = 1e-6, t0: float = 1.0,
                     beta: float = 0.5, c: float = 1e-4) -> SolverResult:
    """Steepest descent with a backtracking (Armijo) line search:

        d_k = -grad f(x_k);  x_{k+1} = x_k + t_k d_k,  t_k from `backtracking` (t0, beta, c).

    No learning rate to tune: each step halves t from t0 until f decreases enough. Converges
    linearly on smooth functions, slowly when the Hessian is ill-conditioned.
    """
    direction = lambda f_, x, g: -g
    search = lambda f_, x, fx, g, d: backtracking(f_, x, fx, g, d, t0=t0, beta=beta, c=c)
    return _solve(direction, f, x0, num_steps, tol, search)


def newton_direction(hessian, g, min_curvature: float = 1e-6):
    """d = -V diag(1 / max(|l_i|, min_curvature)) V^T g, for H = V diag(l) V^T.

    The guard: where H is singular or not positive definite (a saddle, a maximum, a flat valley),
    the plain step -H^{-1} g is undefined or climbs. Taking |l_i| turns the step around along
    directions of negative curvature (as saddle-free Newton does, Dauphin et al. 2014), and the
    floor bounds it along flat ones; the modified H is positive definite, so d descends
    (<g, d> < 0). Where H is positive definite with l_i >= min_curvature, d is Newton's step.
    If it is still not finite, d falls back to -g.
    """
    eigenvalues, vectors = jnp.linalg.eigh(hessian)  # [n], [n, n]
    d = -vectors @ ((vectors.T @ g) / jnp.maximum(jnp.abs(eigenvalues), min_curvature))  # [n]
    return jnp.where(jnp.all(jnp.isfinite(d)), d, -g)


def newton(f: Callable, x0, *, num_steps: int = 20, tol: float = 1e-8, min_curvature: float = 1e-6,
           line_search: bool = True) -> SolverResult:
    """Newton's method with a curvature guard and (by default) Armijo damping:

        H_k = jax.hessian(f)(x_k);  d_k = -|H_k|^{-1} grad f(x_k)
        (|H|: each eigenvalue l replaced by max(|l|, min_curvature), see `newton_direction`)
        x_{k+1} = x_k + t_k d_k,  t_k from `backtracking` starting at t = 1

    Near a minimum with a positive definite Hessian, |H_k| = H_k and t_k = 1: pure Newton steps, with
    quadratic convergence (a quadratic is solved in one step). The Hessian is n x n: for small n.
    Without `line_search`, t_k = 1 always (the textbook iteration, which may diverge far away).
    """
    direction = lambda f_, x, g: newton_direction(jax.hessian(f_)(x), g, min_curvature)
    if line_search:
        search = lambda f_, x, fx, g, d: backtracking(f_, x, fx, g, d)
    else:
        search = lambda f_, x, fx, g, d: jnp.asarray(1.0, x.dtype)
    return _solve(direction, f, x0, num_steps, tol, search)
