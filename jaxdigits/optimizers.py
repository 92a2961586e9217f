"""Optimizers and learning-rate schedules by name.

`OPTIMIZERS` maps a name to a factory `(learning_rate, config) -> optax.GradientTransformation`,
where `learning_rate` is a float or an optax schedule. It is an open registry:
`register_optimizer("lion", lambda lr, cfg: optax.lion(lr))` makes `--optimizer=lion` work.
The `scratch_*` entries are this package's own from-scratch implementations (`pure_optim`), the
others optax's. `--optimizer=MODULE:FACTORY` (or `FILE.py:FACTORY`) with `--optimizer_args`
plugs in a user's factory instead (`plugin`). The classic full-batch algorithms are in `classic`.
"""

from typing import Callable

import optax

from jaxdigits import plugin, pure_optim
from jaxdigits.errors import UserError

OptimizerFactory = Callable[..., optax.GradientTransformation]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": lambda lr, cfg: optax.sgd(lr),
    "momentum": lambda lr, cfg: optax.sgd(lr, momentum=cfg.momentum),
    "nesterov": lambda lr, cfg: optax.sgd(lr, momentum=cfg.momentum, nesterov=True),
    "rmsprop": lambda lr, cfg: optax.rmsprop(lr),
    "adam": lambda lr, cfg: optax.adam(lr, b1=cfg.b1, b2=cfg.b2),
    "adamw": lambda lr, cfg: optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
    "nadamw": lambda lr, cfg: optax.nadamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
    "scratch_sgd": lambda lr, cfg: pure_optim.sgd(lr),
    "scratch_momentum": lambda lr, cfg: pure_optim.momentum(lr, cfg.momentum),
    "scratch_heavy_ball": lambda lr, cfg: pure_optim.heavy_ball(lr, cfg.momentum),
    "scratch_nesterov": lambda lr, cfg: pure_optim.nesterov(lr, cfg.momentum),
    "scratch_rmsprop": lambda lr, cfg: pure_optim.rmsprop(lr),
    "scratch_adam": lambda lr, cfg: pure_optim.adam(lr, b1=cfg.b1, b2=cfg.b2),
    "scratch_adamw": lambda lr, cfg: pure_optim.adamw(lr, b1=cfg.b1, b2=cfg.b2,
                                                      weight_decay=cfg.weight_decay),
}

# The entries shipped here, each tested against the optimizer contract (test_check_optimizer).
SHIPPED = dict(OPTIMIZERS)

SCHEDULES = ("constant", "cosine", "warmup_cosine", "one_cycle")


def register_optimizer(name: str, factory: OptimizerFactory) -> None:
    """Adds `factory(learning_rate, config) -> GradientTransformation` under `name`."""
    OPTIMIZERS[name] = factory


def make_schedule(name: str, learning_rate: float, total_steps: int, warmup_steps: int):
    """A learning-rate schedule over `total_steps` optimizer steps."""
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1))
    if name == "one_cycle":
        return optax.cosine_onecycle_schedule(max(total_steps, 1), learning_rate)
    raise UserError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")


def is_shipped(name: str) -> bool:
    """Whether `name` is one of this package's optimizers (not a registration that replaced it)."""
    return name in SHIPPED and OPTIMIZERS.get(name) is SHIPPED[name]


def schedule_for(config, steps_per_epoch: int):
    """The learning-rate schedule of `config` over its whole run."""
    return make_schedule(config.schedule, config.learning_rate, steps_per_epoch * config.epochs,
                         int(config.warmup_epochs * steps_per_epoch))


def make_optimizer(config, steps_per_epoch: int, schedule=None) -> optax.GradientTransformation:
    """The optimizer named by `config.optimizer` (a registered name or a plug-in spec), on
    `config.schedule`, or on `schedule` (a function of the step) when one is given."""
    if schedule is None:
        schedule = schedule_for(config, steps_per_epoch)
    args = getattr(config, "optimizer_args", "")
    if plugin.is_spec(config.optimizer):
        tx = plugin.make_plugin_optimizer(config.optimizer, args, schedule)
    elif config.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {config.optimizer!r}; choose one of "
                        f"{', '.join(OPTIMIZERS)}, or plug in your own as module:factory.")
    elif args:
        raise UserError(f"--optimizer_args is for a plug-in optimizer (module:factory); "
                        f"{config.optimizer} takes its settings from flags such as --b1, --momentum.")
    else:
        tx = OPTIMIZERS[config.optimizer](schedule, config)
    if config.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return tx
