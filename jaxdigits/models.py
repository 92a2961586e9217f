"""Models as pure functions: `params = init(key, image_shape)`, `logits = apply(params, images)`.

Layers come from flax linen; the linen module never leaves this file, so the rest of jaxdigits
sees a plain pytree of parameters and two pure functions. Images are float32 [batch, H, W, C],
already normalised.
"""

from typing import Callable, NamedTuple, Sequence

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdigits import fastconv, onednn
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


def default_cpu_layers() -> bool:
    """Whether the CNN uses jaxdigits.fastconv's layers: on the CPU backend only, where they were
    measured faster (BUILD_NOTES.md, issue 6); GPU and TPU keep the library's own layers."""
    return jax.default_backend() == "cpu"


def cpu_conv_choice(cpu_conv: str = "auto") -> str:
    """`--cpu_conv` resolved: "onednn", "eigen" or "ynnpack" on the CPU backend, "" elsewhere.

    "auto" is "onednn" where `jaxdigits.onednn` can be used (the `onednn` extra installed and a
    C++ compiler present) and "eigen" otherwise; an explicit "onednn" that cannot be used is a
    UserError saying why.
    """
    if jax.default_backend() != "cpu":
        return ""
    if cpu_conv in ("auto", "onednn"):
        reason = onednn.unavailable()
        if reason is None:
            return "onednn"
        if cpu_conv == "onednn":
            raise UserError(f"--cpu_conv=onednn: {reason}; use --cpu_conv=eigen.")
        return "eigen"
    return cpu_conv


def onednn_grads(model: str, cpu_conv: str = "auto") -> bool:
    """Whether `model`'s convolutions (the CNNs' after the first) get oneDNN's gradients under
    `--cpu_conv` (see `cpu_conv_choice`); other models never look for oneDNN."""
    return model.startswith("cnn") and cpu_conv_choice(cpu_conv) == "onednn"


def compiler_options(cpu_conv: str = "auto") -> dict:
    """XLA compile options for the programs that train and score a model (`--cpu_conv`).

    XLA's CPU backend hands convolutions, dots and reductions to YNNPACK by default. "eigen" and
    "onednn" keep the dots and reductions there but leave convolutions to XLA's own Eigen
    kernels: the seed CNN's train step is 1.9x faster on the Intel Xeon measured, the MLP's and
    cnn_tiny's steps unchanged (BUILD_NOTES.md, issue 6); "onednn" also sends the CNN's later
    convolutions' gradients to oneDNN (`make_model(onednn_grads=True)`). "ynnpack" keeps XLA's
    default. GPU and TPU: no options.
    """
    if jax.default_backend() != "cpu" or cpu_conv == "ynnpack":
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type":
            "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


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
               onednn_grads: bool = False) -> Model:
    """Builds `name` (one of MODELS). `hidden` sets the MLP's hidden sizes or the CNN's dense width.

    `cpu_layers` (default: `default_cpu_layers()`) picks the CNN's CPU-fast formulations;
    `onednn_grads` (CPU only; see `cpu_conv_choice`) computes the gradients of the CNN's later
    convolutions in oneDNN. The parameters and the math are the same either way.
    """
    if cpu_layers is None:
        cpu_layers = default_cpu_layers()
    module = _module(name, num_classes, hidden, dropout, cpu_layers, onednn_grads)

    def init(key, image_shape):
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        return module.init(key, dummy)["params"]

    def apply(params, images, *, train: bool = False, key=None):
        rngs = {"dropout": key} if key is not None else None
        return module.apply({"params": params}, images, train=train, rngs=rngs)

    return Model(init, apply)


def init_params(model: Model, key, image_shape):
    """`model.init(key, image_shape)`, compiled as one program.

    On CPU it is compiled at XLA's optimisation level 1 rather than the default 3: it runs once,
    and the full optimisation cost more than running it (cnn_small: 3.1 s of compiling at the
    default level, 0.9 s at level 1, against about 4.5 s op by op). The parameters are
    bit-identical to the op-by-op `model.init` (tests/test_models.py; level 0 is not: it fuses no
    multiply-adds). BUILD_NOTES.md, issue 6. Other backends: a plain jit.
    """
    return _compiled_init(model, tuple(image_shape), jax.ShapeDtypeStruct(key.shape, key.dtype),
                          jax.default_backend())(key)


@functools.lru_cache(maxsize=8)
def _compiled_init(model: Model, image_shape: tuple, key_type, backend: str):
    """`init_params`' program, compiled once per model (K-model runs initialise K members)."""
    lowered = jax.jit(model.init, static_argnums=1).lower(key_type, image_shape)
    options = {"xla_backend_optimization_level": 1} if backend == "cpu" else {}
    return lowered.compile(options)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
