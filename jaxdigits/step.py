"""The train state and the pure train step.

`train_step(state, batch, key) -> (state, metric sums)` runs forward, backward and the optimizer
update in one function; `make_batch_step` wraps it with the batch's gather, augmentation and
normalisation on the device. Metrics are sums and counts kept on the device; `summarise` divides
them on the host once per epoch.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdigits import augment, backend, losses, models, optimizers
from jaxdigits.config import Config, validate
from jaxdigits.errors import UserError
from jaxdigits.inputs import normalise


class TrainState(NamedTuple):
    step: jax.Array  # int32 [], optimizer steps taken
    params: Any  # The model's variables: parameters, and statistics or averages (models.split).
    opt_state: Any  # The optimizer's state for the parameters alone.


class Setup(NamedTuple):
    """Everything a run derives from its config and data, shared by train, evaluate and benchmark."""
    config: Config
    model: models.Model
    tx: optax.GradientTransformation
    image_shape: tuple
    steps_per_epoch: int
    mean: float  # Input normalisation: (pixel / 255 - mean) / std.
    std: float


def make_config_model(config: Config, num_classes: int, gradients: bool = True) -> models.Model:
    """The model a config names, with its --layers choice (auto: fast on CPU, plain elsewhere)
    and its --cpu_conv choice (oneDNN's gradients or XLA's; `gradients=False`, for a model that
    is only scored, never looks for oneDNN: the forward is XLA's either way), in its --dtype."""
    return models.make_model(config.model, num_classes=num_classes, hidden=config.hidden,
                             features=config.features, crop=config.crop,
                             dropout=config.dropout, cpu_layers=backend.cpu_layers(config.layers),
                             onednn_grads=gradients and backend.onednn_grads(
                                 config.model, config.cpu_conv, config.dtype),
                             dtype=config.dtype, batch_norm=config.batch_norm,
                             ema=config.ema_decay > 0)


def make_setup(config: Config, num_train: int, image_shape, num_classes: int, mean, std) -> Setup:
    validate(config)
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"--batch_size={config.batch_size} is larger than the {num_train} "
                        "training examples.")
    if min(image_shape[:2]) - 2 * config.crop < 8:
        raise UserError(f"--crop={config.crop} leaves less than 8x8 of the "
                        f"{image_shape[0]}x{image_shape[1]} images.")
    model = make_config_model(config, num_classes)
    tx = optimizers.make_optimizer(config, steps_per_epoch)
    return Setup(config, model, tx, tuple(image_shape), steps_per_epoch, float(mean), float(std))


def compiler_options(setup: Setup) -> dict:
    """XLA compile options of the programs that train or score `setup`'s model (`--cpu_conv`)."""
    return backend.compiler_options(setup.config.cpu_conv)


@jax.jit
def _run_keys(seed):
    return tuple(jax.random.split(jax.random.key(seed), 3))


def run_keys(seed: int) -> tuple:
    """A run's (init, data, step) keys, `jax.random.split(jax.random.key(seed), 3)`, from one
    compiled program (op by op: four, 0.2 s of start-up). `seed` in [0, 2**32) goes in as uint32,
    which gives the same keys as the Python int (tests/test_train.py)."""
    return _run_keys(np.uint32(seed))


def init_state(setup: Setup, key, tx=None) -> TrainState:
    """Fresh parameters from `key` and the state of `tx` (default `setup.tx`) for them."""
    variables = models.init_params(setup.model, key, setup.image_shape)
    tx = setup.tx if tx is None else tx
    opt_state = jax.jit(tx.init, compiler_options=backend.init_compile_options())(
        models.split(variables)[0])
    # Put, not computed: `jnp.zeros` would compile a program of its own.
    return TrainState(jax.device_put(np.zeros((), np.int32)), variables, opt_state)


def state_shapes(setup: Setup) -> TrainState:
    """`init_state`'s shapes and dtypes (`jax.ShapeDtypeStruct`s), traced, not computed."""
    variables = jax.eval_shape(lambda: setup.model.init(jax.random.key(0), setup.image_shape))
    return TrainState(jax.ShapeDtypeStruct((), jnp.int32), variables,
                      jax.eval_shape(setup.tx.init, models.split(variables)[0]))


def update_ema(rest: dict, params, step, decay: float) -> dict:
    """`rest` with its moving average moved towards `params`. The decay is at most
    (1 + step) / (10 + step), so the average follows the early steps closely (as TensorFlow's
    ExponentialMovingAverage with num_updates); `step` is the steps taken before this one."""
    if "ema" not in rest:
        return rest
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, rest["ema"], params)
    return {**rest, "ema": ema}


def make_train_step(setup: Setup):
    """The pure step: `train_step(state, batch, key) -> (state, metric sums)`."""
    model, tx, config = setup.model, setup.tx, setup.config
    l2, smoothing = config.l2, config.label_smoothing

    def loss_fn(params, rest, images, labels, key):
        logits, rest = model.train_apply(params, rest, images, key)  # [b, classes]
        per_example = losses.cross_entropy(logits=logits, labels=labels)  # [b], reported
        trained = (losses.cross_entropy(logits=logits, labels=labels, smoothing=smoothing)
                   if smoothing else per_example)
        loss = trained.mean() + (l2 * losses.l2_penalty(params) if l2 else 0.0)
        return loss, (per_example, logits, rest)

    def train_step(state: TrainState, batch, key):
        params, rest = models.split(state.params)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (per_example, logits, rest)), grads = grad_fn(params, rest, batch["image"],
                                                          batch["label"], key)
        updates, opt_state = tx.update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        rest = update_ema(rest, params, state.step, config.ema_decay)
        metrics = {"loss": per_example.sum(),
                   "correct": (logits.argmax(-1) == batch["label"]).sum(),
                   "count": jnp.asarray(per_example.shape[0], jnp.int32)}
        return TrainState(state.step + 1, models.join(params, rest), opt_state), metrics

    return train_step


def make_batch_step(setup: Setup):
    """`batch_step(state, acc, data, idx, step_key, mean, std) -> (state, acc)`: one step on
    `data[idx]`, gathered, augmented and normalised on the device (one member's step in `many`)."""
    train_step = make_train_step(setup)
    shift = setup.config.augment_shift
    rotate, scale = setup.config.augment_rotate, setup.config.augment_scale
    elastic, sigma = setup.config.augment_elastic, setup.config.augment_elastic_sigma

    def batch_step(state, acc, data, idx, step_key, mean, std):
        # Per-step keys depend on the step number only, so a resumed run replays them.
        dropout_key, augment_key = jax.random.split(jax.random.fold_in(step_key, state.step))
        images = data.images[idx]  # uint8 [b, H, W, C]
        if setup.config.augment_flip:
            images = augment.random_flip(jax.random.fold_in(augment_key, 3), images)
        if shift:
            images = augment.random_shift(augment_key, images, shift)
        if rotate or scale:
            images = augment.random_rotate_scale(jax.random.fold_in(augment_key, 1), images,
                                                 rotate, scale)  # float32 from here
        if elastic:
            images = augment.random_elastic(jax.random.fold_in(augment_key, 2), images, elastic,
                                            sigma)  # float32
        batch = {"image": normalise(images, mean, std), "label": data.labels[idx]}
        state, metrics = train_step(state, batch, dropout_key)
        return state, jax.tree.map(jnp.add, acc, metrics)

    return batch_step


def zero_metrics():
    return {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.int32),
            "count": jnp.zeros((), jnp.int32)}


def summarise(acc) -> dict:
    """Metric sums (on the host) -> {"loss", "accuracy", "count"}: means over the examples seen."""
    count = max(int(acc["count"]), 1)
    return {"loss": float(acc["loss"]) / count, "accuracy": int(acc["correct"]) / count,
            "count": int(acc["count"])}


def check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise UserError(f"training diverged in epoch {epoch}: the loss is {loss}; the checkpoints "
                        "of earlier epochs are kept. Lower --learning_rate or add --grad_clip.")
