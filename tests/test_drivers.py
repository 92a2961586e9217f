"""Every step driver gives the per-step driver's parameters (to float rounding) on the speedrun's
net, and the per-backend defaults say what they rest on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdigits import backend, drivers, inputs, step
from jaxdigits.config import Config


def _run(setup, data, driver, steps, steps_per_call):
    state = step.init_state(setup, jax.random.key(0))
    run = drivers.make_chunk_runner(setup, driver)
    perm = jax.random.permutation(jax.random.key(1), data.labels.shape[0]).astype(jnp.int32)
    acc = step.zero_metrics()
    for start in range(0, steps, steps_per_call):
        state, acc = run(state, acc, data, perm, start, jax.random.key(2),
                         num_steps=min(steps_per_call, steps - start))
    return state, acc


@pytest.mark.slow
def test_every_driver_gives_the_per_step_drivers_parameters(mnist):
    """cnn_tiny (oneDNN's gradients where installed, the fast layers), dropout and shifts: 8
    steps by each driver, the last chunk shorter, against one call per step. Momentum SGD keeps
    float rounding at its own size (Adam can blow it up on near-zero gradients)."""
    n = 512
    config = Config(model="cnn_tiny", batch_size=32, epochs=1, dropout=0.1, augment_shift=2,
                    optimizer="momentum", learning_rate=0.05, schedule="constant")
    images, labels = mnist.train_images[:n], mnist.train_labels[:n]
    setup = step.make_setup(config, n, images.shape[1:], 10, *inputs.pixel_stats(images))
    data = inputs.to_device(images, labels)
    reference, ref_acc = _run(setup, data, "step", 8, 1)
    for driver, k in [("unroll", 3), ("scan", 3), ("scan", 8)]:
        state, acc = _run(setup, data, driver, 8, k)
        assert int(state.step) == 8 and int(acc["count"]) == 8 * 32
        assert int(acc["correct"]) == int(ref_acc["correct"])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     state.params, reference.params)


def test_the_cpu_default_rests_on_a_measurement():
    driver, steps = backend.default_driver("cpu")
    assert driver in ("unroll", "scan") and steps > 1
    assert backend.driver_basis("cpu").startswith("measured")
    assert backend.resolve_driver("step", 0) == ("step", 1)
    assert backend.resolve_driver("scan", 16) == ("scan", 16)
    assert backend.default_driver("tpu") == backend.default_driver("gpu")
    assert "not yet measured" in backend.driver_basis("tpu")
