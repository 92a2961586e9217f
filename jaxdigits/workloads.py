"""The race's workloads, the contenders' search spaces, and how a contender is built.

A workload fixes the data (a validation split carved from train with seed 0, the same for every
optimizer), the model, the batch size, the learning-rate schedule's shape (linear warm-up over 5 %
of the step budget, then cosine to zero, scaled by each trial's learning rate), a validation
target, a budget in steps and in seconds, and how often the validation split is scored (with the
clock paused). Targets were set from the tuned baselines (docs/race.md): a target an optimizer
reaches well inside the budget when tuned, so that the race measures speed, not luck.

A search space is {name: {"min", "max", "scale": "log" | "linear"}} or {name: {"value": v}} per
optimizer; `learning_rate` is required, any other argument of the factory may be searched (for
the built-ins: momentum, b1, b2, weight_decay). `--space=FILE.json` maps optimizer to space.
"""

import dataclasses
import json
import pathlib
from typing import NamedTuple

from jaxdigits import optimizers, plugin
from jaxdigits.config import Config
from jaxdigits.errors import UserError


class Workload(NamedTuple):
    name: str
    dataset: str
    model: str
    hidden: tuple
    batch_size: int
    target: float  # validation accuracy
    max_steps: int
    max_seconds: float  # of training time (steps x the optimizer's measured step time)
    eval_every: int  # steps; a multiple of the driver's steps per call
    validation_size: int = 5000
    max_train_examples: int = 0  # 0: all
    driver: str = "auto"  # How steps are driven (`backend.resolve_driver`).
    members: str = "auto"  # How members share a step (`backend.member_loop`).


WORKLOADS = {
    "mnist_mlp": Workload("mnist_mlp", "mnist", "mlp", (256,), 128, 0.97, 1600, 60.0, 80),
    # One step per call and vmapped members: a program of K conv nets compiles in seconds (K
    # looped copies of 8 unrolled steps took minutes), and runs as fast with XLA's Eigen kernels.
    # 2,000 validation images: scoring 5,000 every 40 steps cost a third of the training.
    "mnist_cnn": Workload("mnist_cnn", "mnist", "cnn_tiny", (), 128, 0.98, 400, 120.0, 40, 2000,
                          driver="step", members="vmap"),
    "fashion_cnn": Workload("fashion_cnn", "fashion_mnist", "cnn_tiny", (), 128, 0.87, 400, 120.0,
                            40, 2000, driver="step", members="vmap"),
    # For tests: seconds, not minutes.
    "tiny": Workload("tiny", "mnist", "mlp", (32,), 64, 0.75, 48, 60.0, 8, 500, 2000, "step"),
}

BASELINES = ("adamw", "nadamw", "nesterov", "momentum", "rmsprop")

_LOG = lambda lo, hi: {"min": lo, "max": hi, "scale": "log"}
_LINEAR = lambda lo, hi: {"min": lo, "max": hi, "scale": "linear"}
SPACES = {
    "adamw": {"learning_rate": _LOG(1e-4, 1e-2), "weight_decay": _LOG(1e-5, 1e-1)},
    "nadamw": {"learning_rate": _LOG(1e-4, 1e-2), "weight_decay": _LOG(1e-5, 1e-1)},
    "nesterov": {"learning_rate": _LOG(1e-3, 1.0), "momentum": _LINEAR(0.8, 0.99)},
    "momentum": {"learning_rate": _LOG(1e-3, 1.0), "momentum": _LINEAR(0.8, 0.99)},
    "rmsprop": {"learning_rate": _LOG(1e-4, 1e-2)},
    "examples/lion.py:lion": {"learning_rate": _LOG(1e-5, 1e-3), "b1": _LINEAR(0.8, 0.95)},
}
DEFAULT_SPACE = {"learning_rate": _LOG(1e-4, 1e-1)}


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise UserError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}.")
    return WORKLOADS[name]


def read_spaces(path) -> dict:
    """The search spaces in a JSON file {optimizer: space}, checked."""
    path = pathlib.Path(path)
    try:
        spaces = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the search spaces in {path}: {e}.") from None
    if not isinstance(spaces, dict):
        raise UserError(f"{path} must hold a JSON object {{optimizer: {{name: range}}}}.")
    for name, space in spaces.items():
        check_space(name, space)
    return spaces


def check_space(optimizer: str, space) -> dict:
    """Raises UserError, in one sentence, for a space no trial can be drawn from."""
    if not isinstance(space, dict) or "learning_rate" not in space:
        raise UserError(f"the search space of {optimizer} must be an object with a learning_rate.")
    for name, spec in space.items():
        if not isinstance(spec, dict) or not ("value" in spec or {"min", "max"} <= set(spec)):
            raise UserError(f"{optimizer}'s {name} needs {{\"min\", \"max\"}} or {{\"value\"}}.")
        if "value" in spec:
            continue
        scale = spec.get("scale", "log")
        lo, hi = spec["min"], spec["max"]
        if scale not in ("log", "linear") or not isinstance(lo, (int, float)) or not \
                isinstance(hi, (int, float)) or lo >= hi or (scale == "log" and lo <= 0):
            raise UserError(f"{optimizer}'s {name} range is not valid: min < max, numbers, "
                            "scale log (min > 0) or linear.")
    return space


def space_for(optimizer: str, spaces: dict) -> tuple[dict, bool]:
    """(the search space of `optimizer`, whether it is the generic default)."""
    if optimizer in spaces:
        return check_space(optimizer, spaces[optimizer]), False
    if optimizer in SPACES:
        return SPACES[optimizer], False
    return DEFAULT_SPACE, True


def contender_maker(optimizer: str, optimizer_args: str = ""):
    """`make(learning_rate, **hyperparameters) -> tx` for a registered name (its hyperparameters
    are the config's fields: momentum, b1, b2, weight_decay) or a 'file.py:factory' plug-in (any
    argument of the factory)."""
    if plugin.is_spec(optimizer):
        return plugin.plugin_maker(optimizer, optimizer_args)
    base = Config(optimizer=optimizer)
    optimizers.make_optimizer(base, 1)  # Unknown names: one sentence.
    fields = {f.name for f in dataclasses.fields(Config)}

    def make(learning_rate, **hp):
        unknown = set(hp) - fields
        if unknown:
            raise UserError(f"{optimizer} has no hyperparameter {', '.join(sorted(unknown))}; "
                            "search learning_rate, momentum, b1, b2 or weight_decay.")
        return optimizers.make_optimizer(dataclasses.replace(base, **hp), 1, schedule=learning_rate)

    return make


def label(optimizer: str) -> str:
    """A short name for tables: 'examples/lion.py:lion' -> 'lion (plug-in)'."""
    return f"{optimizer.rpartition(':')[2]} (plug-in)" if plugin.is_spec(optimizer) else optimizer
