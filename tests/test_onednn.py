"""oneDNN's convolution gradients (jaxdigits.onednn, --cpu_conv=onednn) against lax's."""

import concurrent.futures
import hashlib
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdigits import backend, models, onednn, step
from jaxdigits.config import Config
from jaxdigits.errors import UserError
from conftest import train_cnn_two_steps

# The `onednn` extra has wheels for Linux x86-64 only; there (CI included) these tests must pass.
needs_onednn = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="oneDNN's PyPI wheels are for Linux x86-64 only")


def _lax_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _normals(seed, *shapes):
    """Seeded standard normal float32 arrays (numpy's: jax.random would compile a program per
    shape, seconds for nothing under test)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, np.float32) for shape in shapes]


def _vjp(conv, x, kernel, dy):
    y, vjp = jax.vjp(conv, x, kernel)
    return (y, *vjp(dy))


@needs_onednn
def test_onednn_is_ready_here():
    assert onednn.unavailable() is None
    assert backend.cpu_conv_choice("auto") == backend.cpu_conv_choice("onednn") == "onednn"


@needs_onednn
@pytest.mark.parametrize("n, h, w, cin, cout, k", [
    (16, 14, 14, 32, 64, 5),  # The seed CNN's second layer, fewer images.
    (3, 7, 9, 5, 7, 3),  # Odd sizes, a 3x3 kernel (cnn_tiny's).
    (2, 6, 5, 1, 4, 7),  # One input channel, a kernel wider than the image.
])
def test_gradients_equal_lax(n, h, w, cin, cout, k):
    x, kernel, dy = _normals(k, (n, h, w, cin), (k, k, cin, cout), (n, h, w, cout))
    kernel *= np.float32(0.1)
    expected = jax.jit(lambda *a: _vjp(_lax_conv, *a))(x, kernel, dy)
    got = jax.jit(lambda *a: _vjp(onednn.conv, *a))(x, kernel, dy)
    np.testing.assert_array_equal(got[0], expected[0])  # The forward is lax's own.
    for g, e in zip(got[1:], expected[1:]):  # dx, dkernel: float32 rounding apart.
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * float(jnp.abs(e).max()))


@needs_onednn
def test_custom_calls_are_in_the_program_repeat_bit_for_bit_even_concurrently_and_vmap():
    x, kernels = _normals(0, (4, 8, 8, 6), (3, 5, 5, 6, 8))  # 3 models' kernels.
    kernels *= np.float32(0.1)
    loss = lambda kernel, x: (onednn.conv(x, kernel) ** 2).sum()
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    hlo = grad.lower(kernels[0], x).compile().as_text()
    assert all(target in hlo for target in onednn.TARGETS)
    digest = lambda tree: hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in tree)).digest()
    first = digest(grad(kernels[0], x))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # Calls at once: still the same bits.
        assert set(pool.map(lambda _: digest(grad(kernels[0], x)), range(24))) == {first}
    per_model = [grad(kernel, x) for kernel in kernels]
    vmapped = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None)))(kernels, x)
    for i, (dk, dx) in enumerate(per_model):  # vmap batches lax's forward: other rounding.
        np.testing.assert_allclose(vmapped[0][i], dk, rtol=1e-5, atol=1e-5 * float(abs(dk).max()))
        np.testing.assert_allclose(vmapped[1][i], dx, rtol=1e-5, atol=1e-5 * float(abs(dx).max()))


@needs_onednn
@pytest.mark.parametrize("strides, padding, groups", [
    ((2, 2), "SAME", 1), ((1, 1), "VALID", 1), ((1, 1), ((1, 1), (2, 2)), 1), ((1, 1), "SAME", 2)])
def test_other_convolutions_stay_with_lax(strides, padding, groups):
    x, kernel = _normals(0, (2, 9, 9, 4), (5, 5, 4 // groups, 6))
    args = (x, kernel, strides, padding)
    kw = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    f = lambda conv: jax.jit(jax.grad(lambda x, k: (conv(x, k, *args[2:], **kw) ** 2).sum()))
    hlo = f(onednn.conv_general_dilated).lower(x, kernel).compile().as_text()
    assert not any(target in hlo for target in onednn.TARGETS)
    np.testing.assert_array_equal(f(onednn.conv_general_dilated)(x, kernel),
                                  f(jax.lax.conv_general_dilated)(x, kernel))


@pytest.mark.slow
@needs_onednn
def test_cnn_trains_the_same_with_onednn_gradients():
    """The seed CNN, two momentum steps, --cpu_conv=onednn against eigen: same parameters to
    float tolerance, one compile, and only conv2's gradients leave XLA."""
    (fast, fast_hlo), (eigen, eigen_hlo) = train_cnn_two_steps("onednn"), \
        train_cnn_two_steps("eigen")
    assert fast_hlo.count(f'custom_call_target="{onednn.TARGETS[0]}"') == 2  # conv2, 2 steps.
    assert not any(target in eigen_hlo for target in onednn.TARGETS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 fast.params, eigen.params)


def test_without_onednn_auto_falls_back_and_onednn_says_why(monkeypatch):
    monkeypatch.setattr(onednn, "unavailable", lambda: "oneDNN gradients unavailable: no g++")
    on_cpu = jax.default_backend() == "cpu"
    assert backend.cpu_conv_choice("auto") == ("eigen" if on_cpu else "")
    assert not backend.onednn_grads("cnn", "auto")
    if on_cpu:
        with pytest.raises(UserError, match=r"^--cpu_conv=onednn: oneDNN gradients unavailable: "
                                            r"no g\+\+; use --cpu_conv=eigen\.$"):
            backend.cpu_conv_choice("onednn")
    assert not backend.onednn_grads("mlp", "auto")  # Never asked for models without convolutions.


def test_a_model_only_scored_never_looks_for_onednn(monkeypatch):
    """evaluate, export and reports build their model with gradients=False: a CNN trained with
    --cpu_conv=onednn loads where oneDNN is missing, and no library is built to score it."""
    def looked():
        raise AssertionError("looked for oneDNN")
    monkeypatch.setattr(onednn, "unavailable", looked)
    model = step.make_config_model(Config(model="cnn", cpu_conv="onednn"), 10, gradients=False)
    params = models.init_params(model, jax.random.key(0), (28, 28, 1))
    assert jax.jit(model.apply)(params, jnp.zeros((2, 28, 28, 1))).shape == (2, 10)


def test_library_build_reports_a_missing_compiler_or_onednn(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    missing = r"no C\+\+ compiler '.*no-such-g\+\+' to build onednn_conv\.cc"
    with pytest.raises(RuntimeError, match=missing):
        onednn._library()
    monkeypatch.setenv("CXX", sys.executable)  # Exists; the oneDNN headers do not, below.
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(RuntimeError, match=r'oneDNN is not installed here \(pip install -e '):
        onednn._library()


@pytest.mark.slow  # Builds the library with g++.
@needs_onednn
def test_library_is_built_atomically_once(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXDIGITS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # A compiler that fails: nothing is left behind.
    with pytest.raises(RuntimeError, match=r"building onednn_conv.cc failed \(no output\)"):
        onednn._library()
    assert list(tmp_path.glob("onednn/*")) == list(tmp_path.glob("onednn/.*")) == []
    monkeypatch.delenv("CXX")
    path = onednn._library()
    assert [p.name for p in (tmp_path / "onednn").iterdir()] == [path.name]
    built = path.stat().st_mtime_ns
    assert onednn._library() == path and path.stat().st_mtime_ns == built  # Cached.
