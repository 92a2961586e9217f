"""Models as pure functions: `params = init(key, image_shape)`, `logits = apply(params, images)`.

Layers come from flax linen; the linen module never leaves this file, so the rest of jaxdigits
sees a plain pytree of parameters and two pure functions. Images are float32 [batch, H, W, C],
already normalised.

Mixed precision (`dtype="bfloat16"`): the parameters stay float32 (and so do their gradients and
the optimizer state); `apply` casts them and the images to bfloat16, every layer computes in
bfloat16, and the logits come back as float32, so the softmax and the loss are float32.
"""

from typing import Callable, NamedTuple, Sequence

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdigits import backend, fastconv, onednn
from jaxdigits.errors import UserError


class Linear(nn.Module):
    """Softmax regression: one dense layer on the flattened image."""
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train  # Unused.
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class MLP(nn.Module):
    """Dense layers with ReLU; 784-512-10 by default."""
    hidden: Sequence[int] = (512,)
    num_classes: int = 10
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class ConvReluPool(nn.Module):
    """`nn.Conv` (SAME) - ReLU - 2x2 max pooling as `fastconv.conv_relu_pool`: nn.Conv's
    parameters (names, shapes, initialisers), one fused layer on CPU."""
    features: int
    size: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.size, self.size, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return fastconv.conv_relu_pool(x, kernel, bias)


class CNN(nn.Module):
    """conv 5x5x32 - ReLU - maxpool 2 - conv 5x5x64 - ReLU - maxpool 2 - dense 128 - ReLU - dense."""
    features: Sequence[int] = (32, 64)
    kernels: Sequence[int] = (5, 5)  # Square kernel size of each convolution.
    hidden: int = 128
    num_classes: int = 10
    dropout: float = 0.0
    cpu_layers: bool = False  # jaxdigits.fastconv's formulations: same math, faster on XLA:CPU.
    onednn_grads: bool = False  # Later convolutions' gradients in oneDNN (jaxdigits.onednn; CPU).

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        for i, (width, size) in enumerate(zip(self.features, self.kernels, strict=True)):
            if self.cpu_layers and x.shape[-1] == 1 and size % 2:  # The first layer, grey images.
                x = ConvReluPool(width, size, name=f"Conv_{i}")(x)  # [b, h/2, w/2, width]
                continue
            hook = onednn.conv_general_dilated if self.onednn_grads else None  # None: lax's.
            x = nn.relu(nn.Conv(width, (size, size), padding="SAME", name=f"Conv_{i}",
                                conv_general_dilated=hook)(x))
            if self.cpu_layers:
                x = fastconv.max_pool_2x2(x)  # [b, h/2, w/2, width]
            else:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))  # [b, h/2, w/2, width]
        x = x.reshape(x.shape[0], -1)  # [b, 7 * 7 * 64] for 28x28 inputs
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)  # [b, num_classes]


class Model(NamedTuple):
    """A model as two pure functions over a parameter pytree."""
    init: Callable  # init(key, image_shape) -> params
    apply: Callable  # apply(params, images, *, train=False, key=None) -> logits


def _module(name: str, num_classes: int, hidden: Sequence[int], dropout: float,
            cpu_layers: bool, onednn_grads: bool) -> nn.Module:
    if name == "linear":
        return Linear(num_classes)
    if name == "mlp":
        return MLP(tuple(hidden) or (512,), num_classes, dropout)
    cnn = dict(num_classes=num_classes, dropout=dropout, cpu_layers=cpu_layers,
               onednn_grads=onednn_grads)
    if name == "cnn":
        return CNN(hidden=hidden[0] if hidden else 128, **cnn)
    if name == "cnn_small":  # The seed CNN's layout with a quarter of its work.
        return CNN(features=(16, 32), hidden=hidden[0] if hidden else 128, **cnn)
    if name == "cnn_tiny":  # The speedrun's net (jaxdigits.recipes): 3x3 convolutions, dense 256.
        return CNN(features=(16, 32), kernels=(3, 3), hidden=hidden[0] if hidden else 256, **cnn)
    raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")


MODELS = ("linear", "mlp", "cnn", "cnn_small", "cnn_tiny")


def make_model(name: str, *, num_classes: int = 10, hidden: Sequence[int] = (),
               dropout: float = 0.0, cpu_layers: bool | None = None,
               onednn_grads: bool = False, dtype: str = "float32") -> Model:
    """Builds `name` (one of MODELS). `hidden` sets the MLP's hidden sizes or the CNN's dense width.

    `cpu_layers` (default: `backend.default_cpu_layers()`) picks the CNN's CPU-fast formulations;
    `onednn_grads` (CPU only; see `backend.cpu_conv_choice`) computes the gradients of the CNN's later
    convolutions in oneDNN. The parameters and the math are the same either way. `dtype` is the
    compute dtype (the module docstring); parameters and logits are float32 either way.
    """
    if cpu_layers is None:
        cpu_layers = backend.default_cpu_layers()
    module = _module(name, num_classes, hidden, dropout, cpu_layers, onednn_grads)
    compute = backend.compute_dtype(dtype)

    def init(key, image_shape):
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        return module.init(key, dummy)["params"]

    def apply(params, images, *, train: bool = False, key=None):
        rngs = {"dropout": key} if key is not None else None
        if compute != jnp.float32:  # Cast inside the differentiated function: float32 gradients.
            params = jax.tree.map(lambda p: p.astype(compute), params)
            images = images.astype(compute)
        logits = module.apply({"params": params}, images, train=train, rngs=rngs)
        return logits.astype(jnp.float32)  # [b, classes]

    return Model(init, apply)


def init_params(model: Model, key, image_shape):
    """`model.init(key, image_shape)`, compiled as one program.

    Compiled once per model (K-model runs initialise K members) with
    `backend.init_compile_options()`: on CPU a lower optimisation level, same parameters.
    """
    return _compiled_init(model, tuple(image_shape), jax.ShapeDtypeStruct(key.shape, key.dtype),
                          jax.default_backend())(key)


@functools.lru_cache(maxsize=8)
def _compiled_init(model: Model, image_shape: tuple, key_type, platform: str):
    """`init_params`' program, compiled once per (model, shapes, platform)."""
    del platform  # Unused: part of the cache key only.
    lowered = jax.jit(model.init, static_argnums=1).lower(key_type, image_shape)
    return lowered.compile(backend.init_compile_options())


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
