"""Models as pure functions: `variables = init(key, image_shape)`, `logits = apply(variables,
images)`, and for training `train_apply(params, rest, images, key) -> (logits, rest)`.

Layers come from flax linen; the linen module never leaves this file, so the rest of jaxdigits
sees one pytree and pure functions. The variables are the parameters alone, as flax names them,
or, for a model with batch normalisation or a moving average of its parameters,
`{"params", "batch_stats", "ema"}` (`split` and `join`); only the train step tells them apart.
Images are float32 [batch, H, W, C], already normalised.

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
    """conv 5x5x32 - ReLU - maxpool 2 - conv 5x5x64 - ReLU - maxpool 2 - dense 128 - ReLU - dense;
    with `batch_norm`, batch normalisation after each pooling and after the dense layer's ReLU
    (after the pooling, so that the CPU's fused first layer stays: BUILD_NOTES.md)."""
    features: Sequence[int] = (32, 64)
    kernels: Sequence[int] = (5, 5)  # Square kernel size of each convolution.
    hidden: int = 128
    num_classes: int = 10
    dropout: float = 0.0
    cpu_layers: bool = False  # jaxdigits.fastconv's formulations: same math, faster on XLA:CPU.
    onednn_grads: bool = False  # Later convolutions' gradients in oneDNN (jaxdigits.onednn; CPU).
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        norm = lambda x, name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                            name=name)(x) if self.batch_norm else x
        for i, (width, size) in enumerate(zip(self.features, self.kernels, strict=True)):
            if self.cpu_layers and x.shape[-1] == 1 and size % 2:  # The first layer, grey images.
                x = ConvReluPool(width, size, name=f"Conv_{i}")(x)  # [b, h/2, w/2, width]
                x = norm(x, f"BatchNorm_{i}")
                continue
            hook = onednn.conv_general_dilated if self.onednn_grads else None  # None: lax's.
            x = nn.relu(nn.Conv(width, (size, size), padding="SAME", name=f"Conv_{i}",
                                conv_general_dilated=hook)(x))
            if self.cpu_layers:
                x = fastconv.max_pool_2x2(x)  # [b, h/2, w/2, width]
            else:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))  # [b, h/2, w/2, width]
            x = norm(x, f"BatchNorm_{i}")
        x = x.reshape(x.shape[0], -1)  # [b, 7 * 7 * 64] for 28x28 inputs
        x = norm(nn.relu(nn.Dense(self.hidden)(x)), "BatchNorm_dense")
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)  # [b, num_classes]


class DeepCNN(nn.Module):
    """Seven convolutions, each followed by batch normalisation and ReLU (C. Deotte's MNIST net):
    32C3-32C3-32C5S2 | 64C3-64C3-64C5S2 | 128C4 - dense, dropout after each block ('|')."""
    num_classes: int = 10
    dropout: float = 0.0
    onednn_grads: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        hook = onednn.conv_general_dilated if self.onednn_grads else None
        layers = [(32, 3, 1, "VALID"), (32, 3, 1, "VALID"), (32, 5, 2, "SAME"), "drop",
                  (64, 3, 1, "VALID"), (64, 3, 1, "VALID"), (64, 5, 2, "SAME"), "drop",
                  (128, 4, 1, "VALID")]  # 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4 -> 1 for MNIST
        for i, layer in enumerate(layers):
            if layer == "drop":
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
                continue
            width, size, stride, padding = layer
            x = nn.Conv(width, (size, size), strides=stride, padding=padding, use_bias=False,
                        name=f"Conv_{i}", conv_general_dilated=hook if i else None)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     name=f"BatchNorm_{i}")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)  # [b, num_classes]


class Model(NamedTuple):
    """A model as pure functions over its variables, one pytree (`split` says what is in it)."""
    init: Callable  # init(key, image_shape) -> variables
    apply: Callable  # apply(variables, images, *, train=False, key=None) -> logits
    train_apply: Callable  # train_apply(params, rest, images, key) -> (logits, rest)


def _module(name: str, num_classes: int, hidden: Sequence[int], dropout: float,
            cpu_layers: bool, onednn_grads: bool, batch_norm: bool,
            features: Sequence[int] = ()) -> nn.Module:
    if name == "linear":
        return Linear(num_classes)
    if name == "mlp":
        return MLP(tuple(hidden) or (512,), num_classes, dropout)
    if name == "cnn_deep":
        return DeepCNN(num_classes, dropout, onednn_grads)
    cnn = dict(num_classes=num_classes, dropout=dropout, cpu_layers=cpu_layers,
               onednn_grads=onednn_grads, batch_norm=batch_norm)
    width = lambda default: tuple(features) or default
    if name == "cnn":
        return CNN(features=width((32, 64)), hidden=hidden[0] if hidden else 128, **cnn)
    if name == "cnn_small":  # The seed CNN's layout with a quarter of its work.
        return CNN(features=width((16, 32)), hidden=hidden[0] if hidden else 128, **cnn)
    if name == "cnn_tiny":  # 3x3 convolutions, dense 256.
        return CNN(features=width((16, 32)), kernels=(3, 3), hidden=hidden[0] if hidden else 256,
                   **cnn)
    raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")


MODELS = ("linear", "mlp", "cnn", "cnn_small", "cnn_tiny", "cnn_deep")


def split(variables) -> tuple:
    """(params, rest): the trained parameters, and what else the variables hold, a dict with
    "batch_stats" (batch normalisation's running statistics) and "ema" (the parameters' moving
    average) where the model has them. A model with neither is its parameters alone, as flax
    names them, and its rest is {}."""
    if isinstance(variables, dict) and "params" in variables:
        return variables["params"], {k: v for k, v in variables.items() if k != "params"}
    return variables, {}


def join(params, rest: dict):
    """`split`'s inverse."""
    return {"params": params, **rest} if rest else params


def scoring_variables(variables):
    """What scoring reads: the moving average in place of the parameters where there is one."""
    params, rest = split(variables)
    rest = dict(rest)
    return join(rest.pop("ema", params), rest)


def make_model(name: str, *, num_classes: int = 10, hidden: Sequence[int] = (),
               features: Sequence[int] = (), dropout: float = 0.0, cpu_layers: bool | None = None,
               onednn_grads: bool = False, dtype: str = "float32", batch_norm: bool = False,
               ema: bool = False, crop: int = 0) -> Model:
    """Builds `name` (one of MODELS). `hidden` sets the MLP's hidden sizes or the CNN's dense width,
    `features` the two convolution widths of cnn, cnn_small and cnn_tiny.

    `cpu_layers` (default: `backend.default_cpu_layers()`) picks the CNN's CPU-fast formulations;
    `onednn_grads` (CPU only; see `backend.cpu_conv_choice`) computes the gradients of the CNN's later
    convolutions in oneDNN. The parameters and the math are the same either way. `dtype` is the
    compute dtype (the module docstring); parameters and logits are float32 either way.
    `batch_norm` adds batch normalisation to the cnn family (cnn_deep always has it); `ema`
    keeps a moving average of the parameters in the variables, which `apply` scores. `crop`
    cuts that many pixels off each border of the images before the first layer: the model takes
    full-size images and sees their centre.
    """
    if cpu_layers is None:
        cpu_layers = backend.default_cpu_layers()
    module = _module(name, num_classes, hidden, dropout, cpu_layers, onednn_grads, batch_norm,
                     features)
    compute = backend.compute_dtype(dtype)
    cast = (lambda tree: jax.tree.map(lambda p: p.astype(compute), tree)) \
        if compute != jnp.float32 else (lambda tree: tree)

    def centre(images):  # [b, H, W, C] -> [b, H - 2 crop, W - 2 crop, C]
        return images[:, crop:images.shape[1] - crop, crop:images.shape[2] - crop] if crop else images

    def init(key, image_shape):
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        variables = dict(module.init(key, centre(dummy)))
        if ema:
            variables["ema"] = variables["params"]
        return join(variables.pop("params"), variables)

    def run(params, stats, images, train, key):
        # Cast inside the differentiated function: float32 gradients. Statistics stay float32.
        rngs = {"dropout": key} if key is not None else None
        variables = {"params": cast(params), **({"batch_stats": stats} if stats else {})}
        mutable = ["batch_stats"] if stats and train else False
        out = module.apply(variables, centre(images).astype(compute), train=train, rngs=rngs,
                           mutable=mutable)
        if not mutable:
            return out.astype(jnp.float32), stats  # [b, classes]
        logits, new = out
        return logits.astype(jnp.float32), jax.tree.map(lambda x: x.astype(jnp.float32),
                                                        new["batch_stats"])

    def apply(variables, images, *, train: bool = False, key=None):
        params, rest = split(scoring_variables(variables) if not train else variables)
        return run(params, rest.get("batch_stats"), images, train, key)[0]

    def train_apply(params, rest, images, key):
        logits, stats = run(params, rest.get("batch_stats"), images, True, key)
        return logits, ({**rest, "batch_stats": stats} if "batch_stats" in rest else rest)

    return Model(init, apply, train_apply)


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


def count_params(variables) -> int:
    """The number of trained parameters (statistics and moving averages not counted)."""
    return sum(x.size for x in jax.tree.leaves(split(variables)[0]))
