"""Every step driver gives the per-step driver's parameters (to float rounding) on the speedrun's
net, and the per-backend defaults say what they rest on."""

import jax
import numpy as np
import pytest

from conftest import run_driver, setup_on
from jaxdigits import backend
from jaxdigits.config import Config


@pytest.mark.slow
def test_every_driver_gives_the_per_step_drivers_parameters(mnist):
    """cnn_tiny (oneDNN's gradients where installed, the fast layers), dropout and shifts: 8
    steps by each driver, the last chunk shorter, against one call per step. Momentum SGD keeps
    float rounding at its own size (Adam can blow it up on near-zero gradients)."""
    config = Config(model="cnn_tiny", batch_size=32, epochs=1, dropout=0.1, augment_shift=2,
                    optimizer="momentum", learning_rate=0.05, schedule="constant")
    setup, data = setup_on(mnist, config, 512)
    reference, ref_acc = run_driver(setup, data, "step", 8, 1)
    for driver, k in [("unroll", 3), ("scan", 3), ("scan", 8)]:
        state, acc = run_driver(setup, data, driver, 8, k)
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
