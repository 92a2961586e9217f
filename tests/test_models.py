"""Models and losses: parameter counts, shapes, purity, the loss itself."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdigits import losses, models
from jaxdigits.errors import UserError


@pytest.fixture(autouse=True)
def strict_dtypes():
    """As equinox does: any implicit dtype promotion in models and losses is an error. (Not
    global: optax's own Adam promotes an int count, so the train step is not strict-clean.)"""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.mark.parametrize("name, hidden, count", [
    ("linear", (), 784 * 10 + 10),
    ("mlp", (), 784 * 512 + 512 + 512 * 10 + 10),
    ("mlp", (256, 128), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10),
    # conv 5x5x1x32, conv 5x5x32x64, dense 7*7*64 -> 128, dense 128 -> 10, with biases.
    ("cnn", (), (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 128 + 128) + (128 * 10 + 10)),
    # Batch normalisation after each pooling and the dense ReLU: a scale and an offset per channel.
    ("cnn_bn", (), (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 128 + 128) + (128 * 10 + 10)
     + 2 * (32 + 64 + 128)),
    # --features=8,32 --hidden=128 on cnn_tiny: conv 3x3x1x8, conv 3x3x8x32, dense 7*7*32 -> 128.
    ("cnn_tiny_8_32", (128,), (9 * 8 + 8) + (9 * 8 * 32 + 32) + (1568 * 128 + 128) + (128 * 10 + 10)),
    # 32C3-32C3-32C5S2-64C3-64C3-64C5S2-128C4, no biases, BN scale and offset, dense 128 -> 10.
    ("cnn_deep", (), 9 * 32 + 9 * 32 * 32 + 25 * 32 * 32 + 9 * 32 * 64 + 9 * 64 * 64
     + 25 * 64 * 64 + 16 * 64 * 128 + 2 * (3 * 32 + 3 * 64 + 128) + 128 * 10 + 10),
])
def test_parameter_counts_and_shapes(name, hidden, count):
    """Counts and shapes are decided when the functions are traced: jax.eval_shape traces them
    (strict dtypes included) without compiling or running anything. Statistics are not counted."""
    bn, features = name == "cnn_bn", (8, 32) if name == "cnn_tiny_8_32" else ()
    model = models.make_model({"cnn_bn": "cnn", "cnn_tiny_8_32": "cnn_tiny"}.get(name, name),
                              hidden=hidden, features=features, batch_norm=bn)
    params = jax.eval_shape(lambda key: model.init(key, (28, 28, 1)), jax.random.key(0))
    assert models.count_params(params) == count  # The seed CNN's: 454,922.
    logits = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32))
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32


def test_init_is_deterministic_and_apply_is_pure():
    model = models.make_model("cnn")
    a = models.init_params(model, jax.random.key(1), (28, 28, 1))  # One program, compiled once.
    b = models.init_params(model, jax.random.key(1), (28, 28, 1))
    c = models.init_params(model, jax.random.key(2), (28, 28, 1))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a["Dense_0"]["kernel"], c["Dense_0"]["kernel"])
    x = jax.random.normal(jax.random.key(3), (4, 28, 28, 1))
    np.testing.assert_array_equal(jax.jit(model.apply)(a, x), jax.jit(model.apply)(a, x))


def test_dropout_uses_the_key_only_in_training():
    model = models.make_model("mlp", dropout=0.5)
    params = model.init(jax.random.key(0), (28, 28, 1))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((8, 28, 28, 1), np.float32))
    k1, k2 = jax.random.key(2), jax.random.key(3)
    np.testing.assert_array_equal(model.apply(params, x), model.apply(params, x, train=False, key=k1))
    np.testing.assert_array_equal(model.apply(params, x, train=True, key=k1),
                                  model.apply(params, x, train=True, key=k1))
    assert not np.allclose(model.apply(params, x, train=True, key=k1),
                           model.apply(params, x, train=True, key=k2))


def test_other_image_shapes_and_classes():
    model = models.make_model("cnn", num_classes=7)
    params = models.init_params(model, jax.random.key(0), (32, 32, 3))
    assert jax.jit(model.apply)(params, jnp.zeros((2, 32, 32, 3))).shape == (2, 7)


@pytest.mark.parametrize("name", ["mlp", "cnn_tiny"])
def test_a_cropping_model_takes_full_images_and_sees_their_centre(name):
    """--crop=2: parameters of a 24x24 model, applied to 28x28 images as that model to their
    central 24x24 (their border can hold anything)."""
    cropped, plain = models.make_model(name, crop=2), models.make_model(name)
    params = models.init_params(cropped, jax.random.key(0), (28, 28, 1))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, models.init_params(plain, jax.random.key(0), (24, 24, 1)))
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    noisy_border = x.at[:, :2].set(9.0).at[:, :, -2:].set(-9.0)
    centre = plain.apply(params, x[:, 2:-2, 2:-2])
    np.testing.assert_array_equal(cropped.apply(params, x), centre)
    np.testing.assert_array_equal(cropped.apply(params, noisy_border), centre)


def test_unknown_model_lists_choices():
    with pytest.raises(UserError, match="choose one of linear, mlp, cnn"):
        models.make_model("resnet")


def test_cross_entropy_matches_log_softmax():
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((5, 10), np.float32))
    labels = jnp.array([0, 3, 9, 1, 1])
    expected = -jax.nn.log_softmax(logits)[jnp.arange(5), labels]
    np.testing.assert_allclose(losses.cross_entropy(logits=logits, labels=labels), expected, rtol=1e-6)


def test_l2_penalty_counts_weights_not_biases():
    params = {"dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.ones(3)}}
    np.testing.assert_allclose(losses.l2_penalty(params), 0.5 * 6 * 4.0, rtol=1e-6)


def test_loss_is_differentiable_and_falls_under_sgd():
    model = models.make_model("linear")
    params = model.init(jax.random.key(0), (28, 28, 1))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((32, 28, 28, 1), np.float32))
    y = jnp.asarray(rng.integers(0, 10, 32), jnp.int32)
    loss = lambda p: losses.cross_entropy(logits=model.apply(p, x), labels=y).mean()
    tx = optax.sgd(0.1)
    opt_state = tx.init(params)
    first = loss(params)
    grad = jax.jit(jax.grad(loss))  # One program for the 20 steps, not op by op.
    for _ in range(20):
        updates, opt_state = tx.update(grad(params), opt_state)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * first


def test_random_shift_moves_whole_images_within_bounds():
    from jaxdigits import augment

    images = jnp.zeros((64, 28, 28, 1), jnp.uint8).at[:, 10:18, 12:16, :].set(255)
    shifted = augment.random_shift(jax.random.key(0), images, 2)
    assert shifted.shape == images.shape and shifted.dtype == jnp.uint8
    moves = set()
    for original, moved in zip(np.asarray(images[..., 0]), np.asarray(shifted[..., 0])):
        assert moved.sum() == original.sum()  # The block stays whole inside the frame.
        (r0, c0), (r1, c1) = np.argwhere(original)[0], np.argwhere(moved)[0]
        assert abs(r1 - r0) <= 2 and abs(c1 - c0) <= 2
        moves.add((r1 - r0, c1 - c0))
    assert len(moves) > 10  # Many of the 25 possible shifts occur in a batch of 64.
    np.testing.assert_array_equal(augment.random_shift(jax.random.key(0), images, 2), shifted)


@pytest.mark.slow
def test_rotate_scale_is_exact_at_identity_and_quarter_turns_and_random_per_image():
    from jaxdigits import augment

    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)), jnp.uint8)
    ones = jnp.ones(3)
    same = augment.rotate_scale(images, jnp.zeros(3), ones)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(images, np.float32))
    quarter = augment.rotate_scale(images, jnp.full(3, np.pi / 2), ones)  # Counter-clockwise.
    np.testing.assert_allclose(quarter, np.rot90(np.asarray(images, np.float32), 1, axes=(1, 2)),
                               atol=1e-3)
    # Doubling about the centre (13.5, 13.5): output pixel (10, 10) reads the input at
    # (11.75, 11.75), bilinear weights 0.25 / 0.75 on rows and columns 11 / 12.
    doubled = augment.rotate_scale(images, jnp.zeros(3), 2 * ones)
    f = np.asarray(images, np.float64)[..., 0]
    expected = (0.0625 * f[:, 11, 11] + 0.1875 * f[:, 11, 12] + 0.1875 * f[:, 12, 11]
                + 0.5625 * f[:, 12, 12])
    np.testing.assert_allclose(doubled[:, 10, 10, 0], expected, rtol=1e-5)
    out = augment.random_rotate_scale(jax.random.key(0), jnp.tile(images[:1], (8, 1, 1, 1)), 15, 0.1)
    assert out.dtype == jnp.float32 and len({np.asarray(o).tobytes() for o in out}) == 8
    np.testing.assert_array_equal(out, augment.random_rotate_scale(
        jax.random.key(0), jnp.tile(images[:1], (8, 1, 1, 1)), 15, 0.1))


@pytest.mark.parametrize("name", [  # Op by op, every one of a CNN's initialisers compiles.
    pytest.param(name, marks=pytest.mark.slow) if name.startswith("cnn") else name
    for name in [*models.MODELS, "cnn_tiny+batch_norm+ema"]])
def test_init_params_equals_op_by_op_init(name):
    """The one-program init (compiled at XLA's level 1 with its cheaper code generation on CPU)
    gives the very same bits."""
    name, *extras = name.split("+")
    model = models.make_model(name, **{extra: True for extra in extras})
    expected = model.init(jax.random.key(3), (28, 28, 1))
    got = models.init_params(model, jax.random.key(3), (28, 28, 1))
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
