"""Turn a drawing into an MNIST-like input, the way MNIST itself was made.

MNIST's digits were size-normalised to fit a 20x20 box keeping their aspect ratio (anti-aliased,
hence the grey edges), then placed in a 28x28 field so that their centre of mass sits at the
centre: in the bundled test set the mean centre of mass is at (row, column) = (13.99, 14.01) with
a spread of 0.29 px, i.e. integer shifts towards (14, 14). A drawing on a 280x280 canvas, unless
it goes through the same steps, looks nothing like that (too big, off-centre, too thin) and is
misread. Everything here is numpy plus Pillow (for PNG decoding and the anti-aliased resize).
"""

import base64
import binascii
import io

import numpy as np
from PIL import Image

BOX = 20  # MNIST's digits fit a 20x20 box ...
FIELD = 28  # ... centred by mass in a 28x28 field.
CENTRE = 14.0  # Target centre of mass (row, column), measured on MNIST (module docstring).
INK = 0.1  # Pixels darker than this (of 1) are background when finding the bounding box.
MAX_SIDE = 2048  # Larger PNGs are refused before decoding (a decompression bomb guard).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URL_PREFIX = "data:image/png;base64,"


class InputError(ValueError):
    """A request's image cannot be used; the message is one sentence for the client."""


def decode_data_url(url) -> bytes:
    """The PNG bytes of a `data:image/png;base64,...` URL."""
    if not isinstance(url, str) or not url.startswith(DATA_URL_PREFIX):
        raise InputError(f"'png' must be a string starting with {DATA_URL_PREFIX!r}.")
    try:
        return base64.b64decode(url[len(DATA_URL_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InputError("'png' is not valid base64 after the data URL prefix.") from None


def decode_png(data: bytes) -> np.ndarray:
    """Ink intensity, float32 [H, W] in [0, 1]: light ink on dark, whatever the PNG's polarity.

    Transparency is composited over black (a fresh HTML canvas is transparent black). If the
    border is mostly light the picture is dark ink on light paper, and it is inverted.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise InputError("the data is not a PNG image.")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if max(image.size) > MAX_SIDE:
                raise InputError(f"the PNG is {image.size[0]}x{image.size[1]}; at most "
                                 f"{MAX_SIDE}x{MAX_SIDE} pixels are accepted.")
            rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0  # [H, W, 4]
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"the PNG cannot be decoded ({e}).") from None
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)  # [H, W]
    gray = luminance * rgba[..., 3]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return 1.0 - gray if np.median(border) > 0.5 else gray


def to_mnist(ink: np.ndarray) -> np.ndarray:
    """float [H, W] ink in [0, 1] -> float32 [28, 28] in [0, 1], MNIST-style (module docstring)."""
    ink = np.asarray(ink, np.float32)
    rows, cols = np.nonzero(ink > INK)
    if not len(rows):
        raise InputError("the image is blank: there is no stroke to read.")
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # the bounding box
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow's (width, height)
    small = Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)
    small = np.clip(np.asarray(small), 0.0, 1.0)  # [<=20, <=20]; Lanczos rings a little
    if small.sum() <= 0:
        raise InputError("the image is blank: there is no stroke to read.")
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    top = int(np.clip(round(CENTRE - (ys * small).sum() / mass), 0, FIELD - small.shape[0]))
    left = int(np.clip(round(CENTRE - (xs * small).sum() / mass), 0, FIELD - small.shape[1]))
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.round(field * 255.0) / 255.0  # 8-bit levels, like MNIST's own files


def png_to_mnist(url) -> np.ndarray:
    """A PNG data URL of a drawing -> float32 [28, 28] model input."""
    return to_mnist(decode_png(decode_data_url(url)))


def parse_pixels(value, shape=(FIELD, FIELD)) -> np.ndarray:
    """A JSON array of `shape` numbers in [0, 1] (e.g. 28 rows of 28) -> float32 array."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise InputError(f"'image' must be {shape[0]} rows of {shape[1]} numbers; "
                         "its rows have different lengths.") from None
    if array.dtype.kind not in "iuf":
        raise InputError(f"'image' must hold only numbers, {shape[0]} rows of {shape[1]}.")
    if array.shape != tuple(shape):
        raise InputError(f"'image' must have shape {list(shape)}, got {list(array.shape)}.")
    if not np.isfinite(array).all():
        raise InputError("'image' holds NaN or infinite values.")
    if array.min() < 0 or array.max() > 1:
        raise InputError(f"'image' values must lie in [0, 1] (pixel / 255), got "
                         f"{array.min():g} to {array.max():g}.")
    return array.astype(np.float32)
