"""The CPU-fast layers (jaxdigits.fastconv) against the plain ones: values and gradients."""

import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdigits import backend, drivers, fastconv, inputs, models, recipes, step
from jaxdigits.config import Config
from conftest import count_compiles, train_cnn_two_steps


def _plain_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _plain_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def _normals(*shapes):
    """Standard normal float32 arrays of these shapes, seeded (numpy's: drawing them with
    jax.random compiles a program per shape, seconds for nothing under test)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape, np.float32) for shape in shapes]


def _value_and_vjp(f):
    """jit(x..., g -> (f(x...), vjp(g))): the layer as training runs it, one program, not op by
    op (which compiles every slice and pad of conv_relu_pool on its own)."""
    @jax.jit
    def run(*args):
        y, vjp = jax.vjp(f, *args[:-1])
        return y, vjp(args[-1])
    return run


@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 4)])  # Odd sizes drop a row/column.
def test_max_pool_equals_flax_value_and_gradient(shape):
    x, g = _normals(shape, (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
    (y, (dx,)), (y_ref, (dx_ref,)) = (_value_and_vjp(pool)(x, g)
                                      for pool in (fastconv.max_pool_2x2, _plain_pool))
    assert y.shape == y_ref.shape == g.shape
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_max_pool_gradient_on_ties_goes_to_the_first_maximum_like_select_and_scatter():
    # ReLU makes whole windows of zeros; a window may also hold equal positive values.
    x = jnp.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 2.0, 2.0],
                   [3.0, 1.0, 5.0, 5.0], [1.0, 3.0, 5.0, 5.0]]).reshape(1, 4, 4, 1)
    g = jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    fast = jax.vjp(fastconv.max_pool_2x2, x)[1](g)[0]
    np.testing.assert_array_equal(fast, jax.vjp(_plain_pool, x)[1](g)[0])
    np.testing.assert_array_equal(fast[0, :, :, 0], [[1, 0, 2, 0], [0, 0, 0, 0],
                                                     [3, 0, 4, 0], [0, 0, 0, 0]])


def _plain_conv_relu_pool(x, kernel, bias):
    return _plain_pool(jax.nn.relu(_plain_conv(x, kernel) + bias))


@pytest.mark.parametrize("shape, size", [((4, 10, 12, 1), 5), ((3, 28, 28, 1), 3),
                                         ((2, 7, 9, 1), 5), ((2, 8, 6, 3), 3)])
def test_conv_relu_pool_equals_the_plain_layers_value_and_gradients(shape, size):
    x, kernel, bias, g = _normals(shape, (size, size, shape[-1], 6), (6,),
                                  (shape[0], shape[1] // 2, shape[2] // 2, 6))
    kernel, bias = kernel * np.float32(0.3), bias * np.float32(0.3)
    y, grads = _value_and_vjp(fastconv.conv_relu_pool)(x, kernel, bias, g)
    y_ref, grads_ref = _value_and_vjp(_plain_conv_relu_pool)(x, kernel, bias, g)
    assert y.shape == y_ref.shape == (shape[0], shape[1] // 2, shape[2] // 2, 6)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    assert 0 < float((y > 0).mean()) < 1  # Both sides of the ReLU are exercised.
    assert len(grads) == len(grads_ref) == 3
    for a, b in zip(grads, grads_ref):  # Input, kernel and bias gradients.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_conv_relu_pool_ties_and_dead_units_match_the_plain_layers_exactly():
    # A constant image and kernel: every inner window holds four equal sums (ties go to the
    # first), and the second channel's bias keeps it below zero everywhere (no gradient).
    x = jnp.ones((1, 6, 6, 1))
    kernel = jnp.ones((3, 3, 1, 2))
    bias = jnp.array([0.5, -20.0])
    g = jnp.arange(1.0, 19.0).reshape(1, 3, 3, 2)
    y, grads = _value_and_vjp(fastconv.conv_relu_pool)(x, kernel, bias, g)
    y_ref, grads_ref = _value_and_vjp(_plain_conv_relu_pool)(x, kernel, bias, g)
    np.testing.assert_array_equal(y, y_ref)
    assert len(grads) == len(grads_ref) == 3
    for a, b in zip(grads, grads_ref):
        np.testing.assert_array_equal(a, b)
    assert float(grads[2][1]) == 0.0


@pytest.mark.slow
def test_cnn_fast_and_plain_layers_agree_in_logits_and_gradients():
    fast, plain = (models.make_model("cnn", cpu_layers=c) for c in (True, False))
    init = lambda model: jax.jit(model.init, static_argnums=1)(jax.random.key(0), (28, 28, 1))
    params = init(plain)
    jax.tree.map(np.testing.assert_array_equal, params, init(fast))
    (x,) = _normals((8, 28, 28, 1))
    labels = jnp.arange(8) % 10

    def loss(model):
        def fn(p):
            logits = model.apply(p, x)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()
        return jax.jit(jax.value_and_grad(fn))(params)

    (l_fast, g_fast), (l_plain, g_plain) = loss(fast), loss(plain)
    np.testing.assert_allclose(l_fast, l_plain, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_fast, g_plain)


def test_layers_flag_picks_the_formulation_and_auto_follows_the_backend():
    def module_of(layers):
        config = Config(model="cnn", layers=layers, cpu_conv="eigen")  # No oneDNN custom_vjp.
        setup = step.make_setup(config, 256, (28, 28, 1), 10, 0.1, 0.3)
        return setup
    assert backend.default_cpu_layers() == (jax.default_backend() == "cpu")
    # The parameters' shapes are all make_jaxpr needs: nothing is initialised or compiled.
    params = jax.eval_shape(lambda: module_of("plain").model.init(jax.random.key(0), (28, 28, 1)))
    for layers in ("fast", "plain", "auto"):
        jaxpr = str(jax.make_jaxpr(lambda p, x: module_of(layers).model.apply(p, x))(
            params, jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)))
        expect_fast = layers == "fast" or (layers == "auto" and jax.default_backend() == "cpu")
        assert ("custom_vjp_call" in jaxpr) == expect_fast
        assert ("reduce_window_max" in jaxpr) == (not expect_fast)


@pytest.mark.slow
def test_the_speedrun_recipe_is_a_config_and_flags_override_it(tmp_path):
    from conftest import run_cli

    config = recipes.config("speedrun")
    assert (config.model, config.schedule, config.augment_shift) == ("cnn_tiny", "one_cycle", 0)
    proc = run_cli("jaxdigits.train", "--recipe=speedrun", "--epochs=1", "--max_train_examples=512",
                   "--validation_size=256", "--quiet", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {**saved, "epochs": config.epochs, "max_train_examples": 0, "validation_size": 5000} \
        == json.loads(config.to_json())
    assert saved["epochs"] == 1 and "Test accuracy" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn_small", "cnn_tiny"])  # 5x5 and 3x3 kernels.
def test_fast_cnn_step_compiles_once_and_matches_plain_training(mnist, model):
    def run(layers):
        config = Config(model=model, batch_size=32, optimizer="momentum", learning_rate=0.05,
                        schedule="constant", layers=layers)
        images, labels = mnist.train_images[:256], mnist.train_labels[:256]
        setup = step.make_setup(config, 256, images.shape[1:], 10, 0.13, 0.31)
        data = inputs.to_device(images, labels)
        state, acc = step.init_state(setup, jax.random.key(0)), step.zero_metrics()
        run_chunk = drivers.make_chunk_runner(setup, "unroll")
        for start in (0, 2, 4):
            state, acc = run_chunk(state, acc, data, jnp.arange(256, dtype=jnp.int32), start,
                                   jax.random.key(1), num_steps=2)
        return state, run_chunk

    with count_compiles("run") as compiles:
        fast, _ = run("fast")
    assert compiles() == 1
    plain, _ = run("plain")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 fast.params, plain.params)


@pytest.mark.slow
def test_cpu_conv_picks_xla_cpu_kernels_and_keeps_the_math():
    """--cpu_conv=eigen (and auto) takes the convolutions of the training program from YNNPACK;
    ynnpack keeps them; the trained parameters agree to float tolerance (BUILD_NOTES.md, issue 6)."""
    (eigen, eigen_hlo), (ynnpack, ynnpack_hlo) = train_cnn_two_steps("eigen"), \
        train_cnn_two_steps("ynnpack")
    on_cpu = jax.default_backend() == "cpu"
    assert backend.compiler_options("auto") == backend.compiler_options("eigen") \
        == ({"xla_cpu_experimental_ynn_fusion_type":
             "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"} if on_cpu else {})
    assert backend.compiler_options("ynnpack") == {}
    if on_cpu:  # YNNPACK fusions of convolutions ("conv_general_dilated" in their metadata).
        ynn_convs = lambda hlo: re.findall(r"%ynn_fusion[\w.]* = .*conv_general_dilated", hlo)
        assert not ynn_convs(eigen_hlo) and ynn_convs(ynnpack_hlo)
        assert "ynn_fusion" in eigen_hlo  # The dots and reductions stay with YNNPACK.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 eigen.params, ynnpack.params)
