"""Turn a drawing into an MNIST-like input, the way MNIST itself was made.

MNIST's digits were size-normalised to fit a 20x20 box keeping their aspect ratio (anti-aliased,
hence the grey edges), then placed in a 28x28 field so that their centre of mass sits at the
centre: in the bundled test set the mean centre of mass is at (row, column) = (13.99, 14.01) with
a spread of 0.29 px, i.e. integer shifts towards (14, 14). A drawing on a 280x280 canvas, unless
it goes through the same steps, looks nothing like that (too big, off-centre, too thin) and is
misread. Everything here is numpy plus Pillow (for PNG decoding and the anti-aliased resize).

A PNG is checked before Pillow decodes it: its size is read from the IHDR header and refused over
`max_pixels` (a 25 KB PNG can hold 2048x2048 pixels, 64 MB once decoded to float), and only the
chunks that make the pixels (IHDR, PLTE, tRNS, IDAT, IEND) are passed on, so compressed text and
other ancillary chunks are never inflated.
"""

import base64
import binascii
import io
import struct

import numpy as np
from PIL import Image

BOX = 20  # MNIST's digits fit a 20x20 box ...
FIELD = 28  # ... centred by mass in a 28x28 field.
CENTRE = 14.0  # Target centre of mass (row, column), measured on MNIST (module docstring).
INK = 0.1  # Pixels darker than this (of 1) are background when finding the bounding box.
MAX_PIXELS = 512 * 512  # Larger PNGs are refused before decoding; the page sends 280x280.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}  # Everything else is dropped unread.
DATA_URL_PREFIX = "data:image/png;base64,"


class InputError(ValueError):
    """A request's image cannot be used; the message is one sentence for the client."""


class TooLarge(InputError):
    """The image has more pixels than allowed (HTTP 413)."""


def decode_data_url(url) -> bytes:
    """The PNG bytes of a `data:image/png;base64,...` URL."""
    if not isinstance(url, str) or not url.startswith(DATA_URL_PREFIX):
        raise InputError(f"'png' must be a string starting with {DATA_URL_PREFIX!r}.")
    try:
        return base64.b64decode(url[len(DATA_URL_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InputError("'png' is not valid base64 after the data URL prefix.") from None


def png_pixel_chunks(data: bytes, max_pixels: int = MAX_PIXELS) -> bytes:
    """The PNG with only its pixel chunks, once its header says it has at most `max_pixels`."""
    if not data.startswith(PNG_SIGNATURE):
        raise InputError("the data is not a PNG image.")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InputError("the PNG cannot be decoded (it has no IHDR header).")
    width, height = struct.unpack(">II", data[16:24])
    if width * height > max_pixels:
        raise TooLarge(f"the PNG is {width}x{height} pixels; at most {max_pixels} pixels are accepted.")
    kept, at = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        end = at + 12 + length  # length, type, data, CRC
        if end > len(data):
            break  # Truncated: Pillow says so below.
        if kind in PIXEL_CHUNKS:
            kept.append(data[at:end])
        at = end
    return b"".join(kept) + data[at:]


def decode_png(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Ink intensity, float32 [H, W] in [0, 1]: light ink on dark, whatever the PNG's polarity.

    Transparency is composited over black (a fresh HTML canvas is transparent black). If the
    border is mostly light the picture is dark ink on light paper, and it is inverted.
    """
    data = png_pixel_chunks(data, max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            # Luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) and alpha, by Pillow in C.
            la = np.asarray(image.convert("RGBA").convert("LA"))  # uint8 [H, W, 2]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"the PNG cannot be decoded ({e}).") from None
    gray = la[..., 0] * (la[..., 1] * np.float32(1 / 255.0**2))  # [H, W]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return 1.0 - gray if np.median(border) > 0.5 else gray


def to_mnist(ink: np.ndarray) -> np.ndarray:
    """float [H, W] ink in [0, 1] -> float32 [28, 28] in [0, 1], MNIST-style (module docstring)."""
    ink = np.asarray(ink, np.float32)
    inked = ink > INK
    rows, cols = np.flatnonzero(inked.any(1)), np.flatnonzero(inked.any(0))
    if not len(rows):
        raise InputError("the image is blank: there is no stroke to read.")
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the bounding box
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


def png_to_mnist(url, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A PNG data URL of a drawing -> float32 [28, 28] model input."""
    return to_mnist(decode_png(decode_data_url(url), max_pixels))


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
