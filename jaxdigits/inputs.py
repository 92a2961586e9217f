"""The data as training sees them: uint8 arrays on the device, input normalisation, the pixel
statistics it uses, the train / validation / test split, and each epoch's order.

The data sit on the device once, as uint8; each step gathers its batch by index and normalises it
on the device (`normalise`), so no float copy of the dataset is ever made.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdigits import data
from jaxdigits.config import Config


class DeviceData(NamedTuple):
    images: jax.Array  # uint8 [N, H, W, C], on the device
    labels: jax.Array  # int32 [N]


def to_device(images, labels) -> DeviceData:
    return DeviceData(jax.device_put(np.ascontiguousarray(images)), jax.device_put(labels))


def normalise(images, mean, std):
    """uint8 [b, H, W, C] (or float32 in the same 0-255 units) -> float32, on the device."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def pixel_stats(images) -> tuple[float, float]:
    """Mean and standard deviation of pixel / 255 over a uint8 array, in float64.

    From a histogram counted 2^20 pixels at a time: the same counts as one `np.bincount` of the
    whole array, which first copies all of it to int64 (0.15 s against 0.62 s for MNIST's).
    """
    flat, chunk = images.reshape(-1), 1 << 20
    counts = sum((np.bincount(flat[i:i + chunk], minlength=256) for i in range(0, flat.size, chunk)),
                 np.zeros(256, np.int64)).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = math.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    return mean, std or 1.0


def prepare_data(config: Config, data_dir=None, allow_download=True):
    """Loads the dataset and carves the validation split: (Dataset, train, val, test) as numpy pairs."""
    ds = data.load_dataset(config.dataset, data_dir, allow_download)
    tx, ty, vx, vy = data.split_validation(ds.train_images, ds.train_labels,
                                           config.validation_size, config.seed)
    if config.max_train_examples:
        tx, ty = tx[:config.max_train_examples], ty[:config.max_train_examples]
    return ds, (tx, ty), (vx, vy), (ds.test_images, ds.test_labels)


def epoch_order(data_key, epoch, n: int):
    """The order of the `n` training examples in `epoch`: int32 [n], a function of (seed, epoch)
    only, so a resumed run replays it exactly. One compiled program (`order_program`)."""
    return order_program()(data_key, epoch, n)


@functools.cache
def order_program():
    """`epoch_order` jitted (op by op: three programs). On CPU at XLA's optimisation level 0
    and with its older loop emitters (`backend.CHEAP_CODEGEN`): integer arithmetic only (the
    key's hash and a sort), so the same order, compiled in 0.22 rather than 0.40 s (BUILD_NOTES.md,
    "Start-up")."""

    def epoch_order(data_key, epoch, n):  # So JAX logs it as jit(epoch_order).
        return jax.random.permutation(jax.random.fold_in(data_key, epoch), n).astype(jnp.int32)

    options = ({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
               if jax.default_backend() == "cpu" else {})
    return jax.jit(epoch_order, static_argnums=2, compiler_options=options)
