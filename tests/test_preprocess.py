"""The MNIST-style preprocessing of drawings: bounding box, 20x20 fit, centre of mass, PNG input."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxdigits import preprocess
from jaxdigits.preprocess import InputError


def data_url(array) -> str:
    """float [H, W] (or uint8 [H, W, C]) -> a PNG data URL, as a browser canvas would send."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return preprocess.DATA_URL_PREFIX + base64.b64encode(buffer.getvalue()).decode()


def drawn_large(digit, size=200, top=50, left=10, shape=(280, 300)) -> np.ndarray:
    """An MNIST digit (uint8 [28, 28]) blown up to `size` px and put off-centre on a big canvas."""
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR)
    canvas = np.zeros(shape, np.float32)
    canvas[top:top + size, left:left + size] = np.asarray(big, np.float32) / 255.0
    return canvas


def centre_of_mass(image):
    ys, xs = np.indices(image.shape)
    return (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()


def test_mnist_digits_drawn_large_and_off_centre_come_back_as_mnist(mnist):
    digits = mnist.test_images[:100, ..., 0]  # uint8 [100, 28, 28]
    correlations = []
    for digit in digits:
        image = preprocess.to_mnist(drawn_large(digit))
        assert image.shape == (28, 28) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        rows, cols = np.nonzero(image > preprocess.INK)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 == 20  # Fits the 20x20 box, touching it.
        np.testing.assert_allclose(centre_of_mass(image), (14.0, 14.0), atol=0.5)
        correlations.append(np.corrcoef(image.ravel(), digit.ravel() / 255.0)[0, 1])
    assert np.mean(correlations) > 0.93, np.mean(correlations)


def test_aspect_ratio_is_kept():
    ink = np.zeros((300, 300), np.float32)
    ink[100:150, 50:250] = 1.0  # 50 tall, 200 wide
    image = preprocess.to_mnist(ink)
    rows, cols = np.nonzero(image > 0.5)
    assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == (5, 20)


def test_png_of_either_polarity_gives_the_same_input(mnist):
    ink = drawn_large(mnist.test_images[0, ..., 0])
    expected = preprocess.to_mnist(np.round(ink * 255) / 255)
    np.testing.assert_allclose(preprocess.png_to_mnist(data_url(ink)), expected, atol=1e-6)
    np.testing.assert_allclose(preprocess.png_to_mnist(data_url(1.0 - ink)), expected, atol=1e-6)
    # A canvas: white strokes on transparent black, RGBA.
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = np.round(ink * 255)
    np.testing.assert_allclose(preprocess.png_to_mnist(data_url(rgba)), expected, atol=1.5 / 255)


@pytest.mark.parametrize("url, message", [
    ("data:image/jpeg;base64,AAAA", "must be a string starting with"),
    (12, "must be a string starting with"),
    (preprocess.DATA_URL_PREFIX + "not base64!", "not valid base64"),
    (preprocess.DATA_URL_PREFIX + base64.b64encode(b"GIF89a not a png").decode(), "not a PNG"),
    (preprocess.DATA_URL_PREFIX + base64.b64encode(preprocess.PNG_SIGNATURE + b"\0" * 40).decode(),
     "cannot be decoded"),
])
def test_bad_png_inputs(url, message):
    with pytest.raises(InputError, match=message):
        preprocess.png_to_mnist(url)


def test_truncated_blank_and_huge_pngs():
    good = base64.b64decode(data_url(np.eye(50))[len(preprocess.DATA_URL_PREFIX):])
    truncated = preprocess.DATA_URL_PREFIX + base64.b64encode(good[:len(good) // 2]).decode()
    with pytest.raises(InputError, match="cannot be decoded"):
        preprocess.png_to_mnist(truncated)
    with pytest.raises(InputError, match="blank"):
        preprocess.png_to_mnist(data_url(np.zeros((280, 280))))
    wide = data_url(np.zeros((10, 3000)))  # 30,000 pixels
    with pytest.raises(preprocess.TooLarge, match="the PNG is 3000x10 pixels; at most 29999 pixels"):
        preprocess.png_to_mnist(wide, max_pixels=29999)
    with pytest.raises(InputError, match="blank"):
        preprocess.png_to_mnist(wide, max_pixels=30000)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_a_large_png_is_refused_from_its_header_before_decoding(monkeypatch):
    """A 2048x2048 drawing is a 25 KB PNG but 4.2 M pixels: refused without Pillow opening it."""
    canvas = np.zeros((2048, 2048), np.float32)
    canvas[100:1900, 200:300] = 1.0
    url = data_url(canvas)
    assert len(url) < 40_000
    monkeypatch.setattr(preprocess.Image, "open", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(preprocess.TooLarge, match="2048x2048 pixels; at most 262144"):
        preprocess.png_to_mnist(url)


def test_compressed_text_chunks_are_never_inflated(mnist):
    """64 zTXt chunks of 1 MB of zeros each (64 KB compressed) would cost Pillow 64 MB of text."""
    ink = drawn_large(mnist.test_images[0, ..., 0])
    png = base64.b64decode(data_url(ink)[len(preprocess.DATA_URL_PREFIX):])
    bomb = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"\0" * (1 << 20), 9))
    tampered = png[:33] + bomb * 64 + png[33:]  # After IHDR, before IDAT.
    kept = preprocess.png_pixel_chunks(tampered)
    assert kept == png and b"zTXt" not in kept
    url = preprocess.DATA_URL_PREFIX + base64.b64encode(tampered).decode()
    np.testing.assert_array_equal(preprocess.png_to_mnist(url), preprocess.png_to_mnist(data_url(ink)))
    with pytest.raises(InputError, match="no IHDR header"):
        preprocess.png_pixel_chunks(preprocess.PNG_SIGNATURE + png_chunk(b"IDAT", b"x" * 30))


@pytest.mark.parametrize("value, message", [
    ([[0.0] * 28] * 27, r"shape \[28, 28\], got \[27, 28\]"),
    ([0.0] * 784, r"shape \[28, 28\], got \[784\]"),
    ([[0.0] * 28] * 27 + [[0.0] * 27], "rows have different lengths"),
    ([["0"] * 28] * 28, "only numbers"),
    ([[True] * 28] * 28, "only numbers"),
    ([[None] * 28] * 28, "only numbers"),
    ([[float("nan")] * 28] * 28, "NaN or infinite"),
    ([[2.0] * 28] * 28, r"in \[0, 1\]"),
    ([[-0.5] * 28] * 28, r"in \[0, 1\]"),
    ({"a": 1}, "only numbers"),
])
def test_bad_pixel_arrays(value, message):
    with pytest.raises(InputError, match=message):
        preprocess.parse_pixels(value)


def test_pixel_arrays_are_used_as_given(mnist):
    digit = mnist.test_images[0, ..., 0] / 255.0
    np.testing.assert_array_equal(preprocess.parse_pixels(digit.tolist()), digit.astype(np.float32))
