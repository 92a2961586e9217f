"""The classic full-batch algorithms: EMA, Armijo gradient descent, guarded Newton."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdigits import classic


def rosenbrock(p):
    return (1 - p["x"]) ** 2 + 100 * (p["y"] - p["x"] ** 2) ** 2


def test_ema_matches_its_definition_and_debiases():
    values = jnp.array([1.0, 2.0, 4.0, 8.0])
    averages = classic.ema(values, 0.5)
    np.testing.assert_allclose(averages, [0.5, 1.25, 2.625, 5.3125], rtol=1e-6)
    constant = classic.ema({"a": jnp.full((50, 3), 7.0)}, 0.9, debias=True)
    np.testing.assert_allclose(constant["a"], 7.0, rtol=1e-6)  # Debiased: no pull towards 0.
    np.testing.assert_allclose(classic.ema_update(2.0, 4.0, 0.75), 2.5, rtol=1e-6)


def test_gradient_descent_with_armijo_needs_no_learning_rate():
    hessian = jnp.diag(jnp.array([1.0, 10.0, 100.0]))
    target = jnp.array([1.0, -2.0, 3.0])
    f = lambda x: 0.5 * (x - target) @ hessian @ (x - target)
    result = jax.jit(lambda x: classic.gradient_descent(f, x, num_steps=2000, tol=1e-7))(jnp.zeros(3))
    np.testing.assert_allclose(result.x, target, rtol=1e-5, atol=1e-5)
    assert bool(jnp.all(jnp.diff(result.values) <= 0))  # Sufficient decrease: never goes up.
    assert 0 < int(result.steps_taken) < 2000  # Stopped once the gradient was below tol.


def test_armijo_condition_holds_for_the_accepted_step():
    f = lambda x: jnp.sum(x ** 4) + jnp.sum(x ** 2)
    x = jnp.array([2.0, -1.0])
    fx, g = jax.value_and_grad(f)(x)
    t = classic.backtracking(f, x, fx, g, -g)
    assert 0 < float(t) < 1
    assert float(f(x - t * g)) <= float(fx - 1e-4 * t * g @ g)
    assert float(f(x - 2 * t * g)) > float(fx - 1e-4 * 2 * t * g @ g)  # The larger one failed.


def test_newton_solves_a_quadratic_in_one_step_and_rosenbrock_quickly():
    # Each solve is jitted whole: one program each, not dozens of op-by-op compiles.
    a = jnp.asarray(np.random.default_rng(0).standard_normal((5, 5), np.float32))
    hessian, b = a @ a.T + jnp.eye(5), jnp.arange(5.0)
    f = lambda x: 0.5 * x @ hessian @ x - b @ x
    result, exact = jax.jit(lambda x0: (classic.newton(f, x0, num_steps=3, tol=1e-4),  # tol above float32 roundoff.
                                        jnp.linalg.solve(hessian, b)))(jnp.zeros(5))
    np.testing.assert_allclose(result.x, exact, rtol=1e-4, atol=1e-5)
    assert int(result.steps_taken) == 1
    result = jax.jit(lambda x0: classic.newton(rosenbrock, x0, num_steps=40))(
        {"x": jnp.array(-1.2), "y": jnp.array(1.0)})
    np.testing.assert_allclose([result.x["x"], result.x["y"]], [1.0, 1.0], rtol=1e-4)
    assert int(result.steps_taken) < 40  # Armijo gradient descent takes thousands here.


def test_newton_guard_descends_at_a_saddle_and_a_singular_hessian():
    saddle = lambda x: x[0] ** 2 - x[1] ** 2 + 0.25 * x[1] ** 4  # Saddle at 0, minima at y = +-sqrt(2).
    x0 = jnp.array([0.0, 0.1])

    @jax.jit
    def slopes(x):
        """<g, d> for the unguarded Newton step and for the guarded one."""
        hessian, g = jax.hessian(saddle)(x), jax.grad(saddle)(x)
        return g @ -jnp.linalg.solve(hessian, g), g @ classic.newton_direction(hessian, g)

    plain, guarded = slopes(x0)
    assert float(plain) > 0  # The unguarded step climbs towards the saddle.
    assert float(guarded) < 0
    result = jax.jit(lambda x: classic.newton(saddle, x, num_steps=50))(x0)
    np.testing.assert_allclose(jnp.abs(result.x), [0.0, jnp.sqrt(2.0)], atol=1e-4)
    flat = lambda x: (x[0] - 1.0) ** 2  # Hessian [[2, 0], [0, 0]] is singular.
    result = jax.jit(lambda x: classic.newton(flat, x, num_steps=5))(jnp.array([3.0, 5.0]))
    assert bool(jnp.all(jnp.isfinite(result.x))) and abs(float(result.x[0]) - 1.0) < 1e-4
