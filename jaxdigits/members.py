"""The members of a K-model run: their configs, optimizers, data rows and states.

Member k is exactly the single run of its own config (`member_k/config.json`): `--num_models=K`
gives seeds SEED..SEED+K-1, `--sweep` one member per setting (the grid of all settings, times K
seeds). Each member keeps its own validation split, input normalisation and keys.

Swept optimizer hyperparameters live in the optimizer state through `optax.inject_hyperparams`,
one value per member; the others stay compile-time constants. Checkpoints hold each member's
plain optimizer state (`member_state`), so a member folder is a normal run folder.
"""

import dataclasses
import itertools
import json
import pathlib
from typing import NamedTuple

import numpy as np
import optax

from jaxdigits import data, optimizers
from jaxdigits.config import Config, validate
from jaxdigits.drivers import stack, take
from jaxdigits.errors import UserError
from jaxdigits.inputs import pixel_stats
from jaxdigits.runs import read_config
from jaxdigits.step import Setup, TrainState, init_state, make_setup

SWEEPABLE = ("learning_rate", "weight_decay", "momentum", "b1", "b2")


def parse_sweep(text: str) -> dict[str, list[float]]:
    """"learning_rate=1e-4,1e-3;momentum=0.8,0.9" -> {"learning_rate": [...], "momentum": [...]}."""
    grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip()
        if name not in SWEEPABLE:
            raise UserError(f"--sweep can vary {', '.join(SWEEPABLE)}, not {name!r}.")
        try:
            grid[name] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--sweep values for {name} must be numbers, got {values!r}.") from None
        if not grid[name]:
            raise UserError(f"--sweep needs NAME=V1,V2,...; got {part!r}.")
    return grid


def member_configs(config: Config) -> list[Config]:
    """One single-run config per member: every sweep setting, each with seeds SEED..SEED+K-1."""
    grid = parse_sweep(config.sweep)
    settings = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return [validate(dataclasses.replace(config, num_models=1, sweep="", seed=config.seed + k, **s))
            for s in settings or [{}] for k in range(config.num_models)]


def member_name(index: int) -> str:
    return f"member_{index}"


def make_member_tx(config: Config, swept: tuple, steps_per_epoch: int):
    """The optimizer of `config` with the `swept` hyperparameters held in its state."""
    if not swept:
        return optimizers.make_optimizer(config, steps_per_epoch)

    def factory(learning_rate, weight_decay, momentum, b1, b2):
        values = dict(learning_rate=learning_rate, weight_decay=weight_decay, momentum=momentum,
                      b1=b1, b2=b2)
        member = dataclasses.replace(config, **values)
        if "learning_rate" not in swept:
            return optimizers.make_optimizer(member, steps_per_epoch)
        # optax's schedules test their peak value in Python, so a traced peak scales the unit
        # schedule (every schedule here is proportional to its peak).
        unit = optimizers.schedule_for(dataclasses.replace(config, learning_rate=1.0), steps_per_epoch)
        return optimizers.make_optimizer(member, steps_per_epoch,
                                         schedule=lambda n: learning_rate * unit(n))

    static = tuple(n for n in SWEEPABLE if n not in swept)
    return optax.inject_hyperparams(factory, static_args=static)(
        **{n: getattr(config, n) for n in SWEEPABLE})


class Members(NamedTuple):
    """The K members as the compiled program sees them (leading axis K everywhere)."""
    configs: list
    setup: Setup  # Shared structure; its `tx` updates every member.
    train_idx: np.ndarray  # int32 [K, n_train], rows of the training pool
    val_idx: np.ndarray  # int32 [K, n_val]
    mean: np.ndarray  # float32 [K]
    std: np.ndarray  # float32 [K]
    swept: tuple


def make_members(config: Config, ds) -> Members:
    configs = member_configs(config)
    n = len(ds.train_labels)
    splits = [data.split_validation(np.arange(n), np.arange(n), c.validation_size, c.seed)[::2]
              for c in configs]
    train_idx = np.stack([t[:c.max_train_examples or None] for (t, _), c in zip(splits, configs)])
    val_idx = np.stack([v for _, v in splits])
    stats = [pixel_stats(ds.train_images[t]) for t in train_idx]
    setup = make_setup(configs[0], train_idx.shape[1], ds.train_images.shape[1:],
                       ds.num_classes, *stats[0])
    swept = tuple(n for n in SWEEPABLE if len({getattr(c, n) for c in configs}) > 1)
    setup = setup._replace(tx=make_member_tx(configs[0], swept, setup.steps_per_epoch))
    mean, std = (np.asarray(s, np.float32) for s in zip(*stats))
    return Members(configs, setup, train_idx.astype(np.int32), val_idx.astype(np.int32), mean,
                   std, swept)


def init_states(members: Members, keys) -> TrainState:
    """Each member initialised on its own (as its single run would be), then stacked."""
    steps = members.setup.steps_per_epoch
    return stack([init_state(members.setup, key, make_member_tx(c, members.swept, steps))
                  for c, key in zip(members.configs, keys)])


def member_state(states: TrainState, k: int, swept: tuple) -> TrainState:
    """Member k's state as its single run holds it (the plain optimizer state)."""
    state = take(states, k)
    return state._replace(opt_state=state.opt_state.inner_state) if swept else state


def full_state(plain: TrainState, template: TrainState, swept: tuple):
    """Back from `member_state`: the injected hyperparameters come from the member's config."""
    if not swept:
        return plain
    opt = template.opt_state._replace(count=plain.step, inner_state=plain.opt_state)
    return plain._replace(opt_state=opt)


def member_paths(path) -> list[pathlib.Path]:
    """The member folders of a many-model run folder that did not diverge, or [] if `path` is
    not a many-model run."""
    path = pathlib.Path(path)
    config = read_config(path) if path.is_dir() else None
    if config is None or (config.num_models == 1 and not config.sweep):
        return []
    folders = [path / member_name(k) for k in range(len(member_configs(config)))]
    return [f for f in folders if read_diverged(f) is None]


def read_diverged(folder: pathlib.Path) -> int | None:
    """The epoch in which the member in `folder` diverged (its diverged.json), or None."""
    marker = pathlib.Path(folder) / "diverged.json"
    if not marker.exists():
        return None
    try:
        return int(json.loads(marker.read_text())["epoch"])
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise UserError(f"{marker} is damaged; delete it to train that member again.") from None
