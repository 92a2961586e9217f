"""Elastic deformation (augment.elastic, random_elastic): exact identities, the smoothing, its
randomness, and that deformed digits keep their labels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdigits import augment, models


@pytest.fixture(autouse=True)
def strict_dtypes():
    """Any implicit dtype promotion in the augmentation is an error (as in test_models)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


def random_images(shape=(4, 28, 28, 1), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def constant_field(images, dy: float, dx: float):
    b, h, w, _ = images.shape
    return jnp.broadcast_to(jnp.array([dy, dx], jnp.float32), (b, h, w, 2))


def test_zero_displacement_is_the_identity():
    images = random_images((3, 28, 28, 2))
    out = jax.jit(augment.elastic)(images, constant_field(images, 0.0, 0.0))
    assert out.dtype == jnp.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out, images.astype(np.float32))


@pytest.mark.parametrize("dy, dx", [(2, -3), (-1, 0), (0, 5), (27, 0)])
def test_whole_pixel_displacement_is_a_shift_with_zero_fill(dy, dx):
    """Output (y, x) reads the input at (y + dy, x + dx): the image moves by (-dy, -dx)."""
    images = random_images()
    expected = np.roll(images, (-dy, -dx), axis=(1, 2)).astype(np.float32)
    ys, xs = np.arange(28)[:, None] + dy, np.arange(28)[None, :] + dx  # Where each pixel reads.
    expected[:, ~((0 <= ys) & (ys < 28) & (0 <= xs) & (xs < 28))] = 0  # The rolled-in pixels.
    out = augment.elastic(images, constant_field(images, dy, dx))
    np.testing.assert_array_equal(out, expected)  # Exact everywhere, borders included.


def test_half_pixel_displacement_averages_neighbours():
    images = random_images()
    out = augment.elastic(images, constant_field(images, 0.5, 0.0))
    pixels = images.astype(np.float32)
    np.testing.assert_allclose(out[:, :-1], (pixels[:, :-1] + pixels[:, 1:]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, -1], pixels[:, -1] / 2, rtol=1e-6)  # Zeros below.


@pytest.mark.parametrize("sigma", [0.0, 0.7, 3.0, 4.0, 6.5])
def test_smoothing_kernel_is_a_normalised_truncated_gaussian(sigma):
    kernel = np.asarray(augment.gaussian_kernel(sigma))
    radius = int(np.ceil(3 * sigma))
    assert kernel.dtype == np.float32 and kernel.shape == (2 * radius + 1,)
    assert abs(kernel.sum() - 1) < 1e-6
    np.testing.assert_array_equal(kernel, kernel[::-1])
    assert kernel.argmax() == radius and np.all(kernel > 0)


def test_smooth_is_a_zero_padded_separable_convolution():
    """Against numpy's full convolution cut to the input's size, along rows then columns, per
    image and channel; the 20 columns are fewer than the kernel's 25 taps."""
    fields = np.random.default_rng(1).uniform(-1, 1, (2, 28, 20, 2)).astype(np.float32)
    kernel = np.asarray(augment.gaussian_kernel(4.0))  # [25]
    conv = lambda v: np.convolve(v, kernel, mode="full")[12:12 + len(v)]
    expected = np.apply_along_axis(conv, 2, np.apply_along_axis(conv, 1, fields))
    out = jax.jit(augment.smooth, static_argnums=1)(fields, 4.0)
    assert out.shape == fields.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.slow
def test_random_elastic_is_deterministic_per_key_and_jits_and_vmaps():
    images = random_images((3, 4, 28, 28, 1))
    keys = jax.random.split(jax.random.key(0), 3)
    warp = jax.jit(augment.random_elastic, static_argnums=(2, 3))
    a, b = warp(keys[0], images[0], 8.0, 4.0), warp(keys[0], images[0], 8.0, 4.0)
    assert a.shape == (4, 28, 28, 1) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    other = warp(keys[1], images[0], 8.0, 4.0)
    assert np.abs(np.asarray(other) - np.asarray(a)).mean() > 1.0  # Pixels are 0..255.
    assert not np.array_equal(a[0], a[1])  # One field per image, not one per batch.
    batched = jax.jit(jax.vmap(lambda k, x: augment.random_elastic(k, x, 8.0, 4.0)))(keys, images)
    loop = np.stack([warp(k, x, 8.0, 4.0) for k, x in zip(keys, images)])
    np.testing.assert_allclose(batched, loop, atol=1e-3)


@pytest.mark.slow
def test_random_elastic_moves_pixels_and_roughly_conserves_ink(mnist):
    """On 1,000 test digits (alpha 8, sigma 4), measured: the total ink 0.99996 of the original,
    each digit's 0.87 to 1.18 (median 0.998); pixels changed by 7.0 grey levels on average
    (of 0..255)."""
    images = mnist.test_images[:1000]
    out = np.asarray(jax.jit(augment.random_elastic, static_argnums=(2, 3))(
        jax.random.key(0), images, 8.0, 4.0))
    pixels = images.astype(np.float32)
    ratio = out.sum((1, 2, 3)) / pixels.sum((1, 2, 3))
    assert abs(out.sum() / pixels.sum() - 1) < 0.02
    assert abs(np.median(ratio) - 1) < 0.05 and np.all(np.abs(ratio - 1) < 0.3)
    assert out.min() >= 0 and out.max() <= 255 + 1e-3  # Bilinear: weighted means of pixels, 0.
    assert np.abs(out - pixels).mean() > 4


def accuracy(model, params, images, labels) -> float:
    logits = jax.jit(model.apply)(params, jnp.asarray(images, jnp.float32) / 255)
    return float(np.mean(np.argmax(logits, -1) == labels))


@pytest.mark.slow
def test_deformed_digits_keep_their_labels(mnist):
    """cnn_tiny trained with Adam for 300 steps of 128 on 10,000 clean images (about 7 s on 2
    busy cores), scored on 1,000 test images clean and elastically deformed. Measured: clean
    0.968; alpha 8, sigma 4: 0.961 with this key (0.961 to 0.965 over three keys); alpha 34,
    sigma 4 (Simard's training setting, far stronger): 0.828 (0.83 to 0.85)."""
    model = models.make_model("cnn_tiny")
    params = models.init_params(model, jax.random.key(0), (28, 28, 1))
    tx = optax.adam(1e-3)

    @jax.jit
    def train_step(params, opt_state, images, labels):
        def loss(p):
            logits = model.apply(p, images.astype(jnp.float32) / 255)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    train_images, train_labels = mnist.train_images[:10000], mnist.train_labels[:10000]
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam promotes its int count.
        opt_state = tx.init(params)
        for i in range(300):
            start = (i * 128) % (10000 - 128)
            params, opt_state = train_step(params, opt_state, train_images[start:start + 128],
                                           train_labels[start:start + 128])

    images, labels = mnist.test_images[:1000], mnist.test_labels[:1000]
    clean = accuracy(model, params, images, labels)
    deformed = lambda alpha: augment.random_elastic(jax.random.key(1), images, alpha, 4.0)
    mild, strong = (accuracy(model, params, deformed(alpha), labels) for alpha in (8.0, 34.0))
    assert clean >= 0.94
    assert mild >= 0.93 and clean - mild <= 0.03, (clean, mild)
    assert strong < mild - 0.03, (strong, mild)
    print("ACC", clean, mild, strong)  # The deformation is real: stronger costs more.
